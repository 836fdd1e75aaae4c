"""`hf-transfer tune`: hyper-parameter search over the recipe's `tune.space`, through transformers'
`Trainer.hyperparameter_search` with the Optuna backend (default) or Ray Tune's (`tune.backend: ray`,
runs/raytune.py: trials in parallel on one machine or a cluster).

`hyperparameter_search` drives the study (the sampler seeded by `tune.seed`, `n_trials`, the `timeout`
budget, the pruner, the direction of the validation metric) and calls `train(trial=...)` on the Trainer it
belongs to once per trial. Here that Trainer (`SearchTrainer`) runs each trial as a whole hf-transfer run
of the trial's recipe (`build_trainer`: data, task, strategy, hooks, objectives), because a trial may change
what Trainer's own per-trial setup cannot: the strategy (a LoRA wrapper, staged unfreezing callbacks, the
cached-feature probe), its options and the batch-dependent parts. So the best recipe reproduces its trial
exactly. After every epoch the trial's validation metric goes to the backend, which may stop it. The
backends differ only in how trials are proposed and stopped: the trial's run, its row and the outputs are
the same code.

Written to the output folder (runs/tune_report.py): tune.json and tune.md (every trial: parameters, state,
value, seconds, per-epoch curve), tune.png (the trials) and best.yaml, the best trial's recipe, runnable as
it is (`hf-transfer finetune best.yaml`; `--train-best` runs it right away).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from hf_transfer.errors import DependencyError, RecipeError, TrainingError
from hf_transfer.folder import CHECKPOINTS
from hf_transfer.recipe.schema import Recipe
from hf_transfer.runs import raytune, run
from hf_transfer.runs.tune_report import write
from hf_transfer.strategies import STRATEGIES
from hf_transfer.train import build_trainer, output_dir
from hf_transfer.trainer import training_arguments
from hf_transfer.search_space import in_space, integer_range, tune_variant
from hf_transfer.validate import load_recipe

log = logging.getLogger(__name__)


def _applies(key: str, strategy: str) -> bool:
    """Whether a space key is used by a trial of `strategy` (a strategy option only where it has it)."""
    options = {f.name for f in dataclasses.fields(STRATEGIES[strategy].options)}
    return key != "finetune.strategy" and (not key.startswith("finetune.") or key.removeprefix("finetune.") in options)


def suggest(trial, space: dict[str, Any], base_strategy: str) -> dict[str, Any]:
    """Optuna: the trial's parameters (dotted recipe keys): the strategy first, then only the options it has."""
    params: dict[str, Any] = {}
    if "finetune.strategy" in space:
        params["finetune.strategy"] = trial.suggest_categorical("finetune.strategy", space["finetune.strategy"])
    strategy = params.get("finetune.strategy", base_strategy)
    for key, spec in space.items():
        if not _applies(key, strategy):
            continue
        if isinstance(spec, list):
            params[key] = trial.suggest_categorical(key, spec)
        elif integer_range(spec):
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step") or 1,
                                            log=bool(spec.get("log")))
        else:
            params[key] = trial.suggest_float(key, spec["low"], spec["high"], step=spec.get("step"),
                                              log=bool(spec.get("log")))
    return params


def sampled_params(config: dict[str, Any], base_strategy: str) -> dict[str, Any]:
    """Ray: the parameters a trial uses out of its sampled config (every key is sampled in every trial; a
    strategy option that the trial's strategy lacks is ignored), in the order Optuna's `suggest` gives."""
    strategy = config.get("finetune.strategy", base_strategy)
    head = {"finetune.strategy": strategy} if "finetune.strategy" in config else {}
    return head | {k: v for k, v in config.items() if _applies(k, strategy)}


def _metric(args) -> tuple[str, str]:
    """(eval metric key, direction) from the base recipe's TrainingArguments."""
    name = args.metric_for_best_model or "loss"
    key = name if name.startswith("eval_") else f"eval_{name}"
    greater = args.greater_is_better if args.greater_is_better is not None else not name.endswith("loss")
    return key, "maximize" if greater else "minimize"


class Pruned(Exception):
    """The backend stopped the trial after an evaluation."""


def _reporter(report, key: str, row: dict[str, Any], start: float):
    """A TrainerCallback that updates the trial's row after each evaluation (value, curve, seconds) and
    hands it to the backend's `report(value, step, row)`; True from it stops the trial (Pruned)."""
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and key in metrics:
                row.update(value=float(metrics[key]), curve=_curve(state.log_history, key),
                           seconds=round(time.perf_counter() - start, 1))
                if report(row["value"], int(round(state.epoch or 0)) or state.global_step, row):
                    raise Pruned()

    return Report()


def _curve(log_history: list[dict[str, Any]], key: str) -> list[list[float]]:
    """(epoch, validation metric) per evaluation during training (the final evaluate of the kept checkpoint
    repeats the last epoch: left out)."""
    curve: dict[float, float] = {}
    for e in log_history:
        if key in e and "epoch" in e:
            curve.setdefault(e["epoch"], e[key])
    return [[epoch, value] for epoch, value in curve.items()]


_MISSING = object()


class Search:
    """One search: the base recipe, where trials go, and the rows of the trials so far."""

    def __init__(self, recipe: Recipe, folder: Path):
        self.raw, self.folder, self.cfg = recipe.to_dict(), folder.resolve(), recipe.tune
        self.cwd = str(Path.cwd())  # a Ray trial runs where the recipe's relative paths hold
        self.base_strategy, self.finetune = recipe.finetune.strategy, recipe.finetune
        self.args = training_arguments(recipe, folder)
        self.key, self.direction = _metric(self.args)
        self.evaluates = self.args.eval_strategy != "no"  # trials report during training (pruning can act)
        self.rows: list[dict[str, Any]] = []
        self.first = self.recipe_params() if self.cfg.recipe_first else {}
        """The first trial's values (the recipe's own, `tune.recipe_first`); empty: every trial is sampled."""

    def pruner_warmup(self) -> int:
        """Epochs a trial trains before the pruner may stop it: `tune.pruner_warmup`, or half the fewest
        epochs a trial can train, rounded up (the searched `num_train_epochs`' lowest value, else the
        recipe's as TrainingArguments resolves it)."""
        if self.cfg.pruner_warmup is not None:
            return self.cfg.pruner_warmup
        searched = self.cfg.space.get("training.num_train_epochs")
        choices = [searched["low"]] if isinstance(searched, dict) else [v for v in searched or [] if v is not None]
        fewest = min(choices) if choices else self.args.num_train_epochs
        return math.ceil(float(fewest) / 2)

    def recipe_params(self) -> dict[str, Any]:
        """The recipe's own values of the searched keys that the space holds (the first trial's with
        `tune.recipe_first`): a training key the recipe leaves out has TrainingArguments' value, a strategy
        option its default; a value outside its range or choices is left to the sampler."""
        params: dict[str, Any] = {}
        for key, spec in self.cfg.space.items():
            if not _applies(key, self.base_strategy) and key != "finetune.strategy":
                continue
            section, _, name = key.partition(".")
            value = (self.raw.get(section) or {}).get(name, _MISSING) if "." not in name else _MISSING
            if value is _MISSING:
                value = getattr({"training": self.args, "finetune": self.finetune}.get(section), name, _MISSING)
            if value is not _MISSING and in_space(value, spec):
                params[key] = int(value) if isinstance(spec, dict) and integer_range(spec) else value
        return params

    def trial_params(self, config: dict[str, Any]) -> dict[str, Any]:
        return sampled_params(config, self.base_strategy)

    def trial_recipe(self, params: dict[str, Any], out: Path) -> dict[str, Any]:
        raw = tune_variant(self.raw, params)
        raw["training"]["output_dir"] = str(out)
        return raw

    def run_trial(self, number: int, params: dict[str, Any], report) -> dict[str, Any]:
        """Train the trial's recipe, handing each evaluation to `report` (see `_reporter`); its row, complete
        or failed (e.g. a non-finite loss). Pruned propagates, with the row marked pruned."""
        out = self.folder / "trials" / f"trial-{number}"
        row: dict[str, Any] = {"number": number, "params": params, "state": "running", "value": None}
        self.rows.append(row)
        log.info("tune: trial %d: %s", number, params)
        start, trainer = time.perf_counter(), None
        try:
            trainer, splits = build_trainer(load_recipe(self.trial_recipe(params, out)), out)
            reporter = _reporter(report, self.key, row, start)
            trainer.add_callback(reporter)
            trainer.train()
            trainer.remove_callback(reporter)
            row["value"] = float(trainer.evaluate(splits["validation"])[self.key])  # the kept (best) checkpoint's
            row["state"] = "complete"
        except Pruned:
            row["state"] = "pruned"  # its value: the last one reported
            raise
        except TrainingError as err:  # the trial fails, the search goes on
            row["state"], row["error"] = "failed", str(err)
        finally:
            row["seconds"] = round(time.perf_counter() - start, 1)
            if trainer is not None:
                row["curve"] = _curve(trainer.state.log_history, self.key)
            del trainer
            gc.collect()
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # trials keep no weights
        return row

    def best_recipe(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.trial_recipe(params, self.folder / "best")


def _optuna_trial(search: Search, outer, trial) -> None:
    """One Optuna trial: sample, run, hand the outcome to the study (pruned, failed or its value)."""
    import optuna

    def report(value: float, step: int, row: dict[str, Any]) -> bool:
        trial.report(value, step)
        return trial.should_prune()

    try:
        row = search.run_trial(trial.number, suggest(trial, search.cfg.space, search.base_strategy), report)
    except Pruned:
        raise optuna.TrialPruned() from None
    if row["state"] == "failed":
        raise TrainingError(row["error"])
    outer.objective = row["value"]


def _ray_trial(search: Search, outer, config: dict[str, Any]) -> None:
    raytune.run_trial(search, outer, config, search.trial_params(config))


def _search_trainer(search: Search, run_one):
    """The Trainer hyperparameter_search drives: `train(trial=...)` runs one trial (see the module doc)."""
    from torch import nn
    from transformers import Trainer

    class SearchTrainer(Trainer):
        def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
            run_one(search, self, trial)

        def __reduce__(self):  # Ray ships the search and builds this Trainer again in the worker: the state
            return _search_trainer, (search, run_one)  # of an accelerator that has run may not pickle

    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(search.folder / CHECKPOINTS), report_to="none", use_cpu=search.args.use_cpu)
    trainer = SearchTrainer(model_init=lambda: nn.Linear(1, 1), args=args)  # each trial builds its own model
    # transformers refuses Ray's stopping schedulers for a Trainer that does not evaluate; this one never trains
    # or evaluates itself, its trials do as their recipes say (with no evaluation, runs/raytune.py stops none)
    trainer.args.eval_strategy, trainer.args.do_eval = search.args.eval_strategy, search.args.do_eval
    return trainer


def optuna_pruner(optuna, search: Search):
    """MedianPruner from the third trial on, once a trial has trained `pruner_warmup` epochs: the steps
    reported are epochs (1, 2, ...) and Optuna may prune at any step >= n_warmup_steps, so the first step
    it may stop at is epoch warmup + 1, as Ray's first ASHA rung; NopPruner for `pruner: none`."""
    if search.cfg.pruner != "median":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=search.pruner_warmup() + 1)


def _search_optuna(search: Search) -> None:
    try:
        import optuna
    except ImportError:
        raise DependencyError("tune: needs Optuna (pip install 'hf-transfer[tune]')") from None
    cfg = search.cfg
    pruner = optuna_pruner(optuna, search)
    # hyperparameter_search creates the study; it loads this one, holding the recipe's own trial first
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="hf-transfer-tune", direction=search.direction)
    if search.first:
        study.enqueue_trial(search.first)
    _search_trainer(search, _optuna_trial).hyperparameter_search(
        hp_space=lambda trial: suggest(trial, cfg.space, search.base_strategy),
        compute_objective=lambda metrics: metrics[search.key], n_trials=cfg.n_trials, direction=search.direction,
        backend="optuna", timeout=cfg.timeout, catch=(TrainingError,),
        sampler=optuna.samplers.TPESampler(seed=cfg.seed), pruner=pruner,
        storage=storage, study_name="hf-transfer-tune", load_if_exists=True,
    )


def _search_ray(search: Search) -> None:
    started = raytune.start(search.cfg.ray_address)
    collect = raytune.collector()
    try:
        _search_trainer(search, _ray_trial).hyperparameter_search(
            hp_space=lambda _: raytune.search_space(search.cfg.space),
            compute_objective=lambda metrics: metrics[search.key], n_trials=search.cfg.n_trials,
            direction=search.direction, backend="ray",
            **raytune.run_kwargs(search.cfg, search.direction, search.folder, collect, search.evaluates,
                                 search.pruner_warmup(), search.first),
        )
    finally:
        search.rows[:] = raytune.rows(collect.trials.values(), search)
        if started:
            import ray

            ray.shutdown()


BACKENDS = {"optuna": _search_optuna, "ray": _search_ray}
"""tune.backend -> the function running the search; it leaves one row per trial in `search.rows`."""


def best(rows: list[dict[str, Any]], direction: str) -> dict[str, Any]:
    """The best complete trial (the first of equals, as Optuna picks it)."""
    done = [r for r in rows if r["state"] == "complete"]
    if not done:
        states = ", ".join(f"trial {r['number']} {r['state']}" for r in rows)
        raise TrainingError(f"tune: no trial completed ({states or 'none ran'})")
    pick = max if direction == "maximize" else min
    return pick(done, key=lambda r: r["value"])


def settings(recipe: Recipe, n_trials: int | None = None, timeout: float | None = None,
             out: str | None = None) -> tuple[Recipe, Path]:
    """The recipe with the command line's `tune` values on top, and the output folder."""
    if recipe.tune is None:
        raise RecipeError("tune: the recipe has no tune section (name tune.space: the keys to search)")
    raw = recipe.to_dict()
    raw["tune"] |= {k: v for k, v in (("n_trials", n_trials), ("timeout", timeout), ("output_dir", out)) if v is not None}
    recipe = load_recipe(raw)
    return recipe, Path(recipe.tune.output_dir or f"{output_dir(recipe)}-tune")


def tune(recipe: Recipe, n_trials: int | None = None, timeout: float | None = None, out: str | None = None,
         train_best: bool | None = None) -> dict[str, Any]:
    """Run the search; write tune.json, tune.md, tune.png and best.yaml; optionally train best.yaml."""
    recipe, folder = settings(recipe, n_trials, timeout, out)
    cfg = recipe.tune
    search = Search(recipe, folder)
    start = time.perf_counter()
    try:
        BACKENDS[cfg.backend](search)
    except (ValueError, AttributeError):  # no completed trial for optuna / transformers' Ray path to pick
        if not search.rows or any(r["state"] == "complete" for r in search.rows):
            raise
    for left in (search.folder / "trials").glob(f"*/{CHECKPOINTS}"):  # of trials Ray stopped (on this machine)
        shutil.rmtree(left, ignore_errors=True)
    best_row = best(search.rows, search.direction)
    first = search.first
    recipe_row = next((r for r in sorted(search.rows, key=lambda r: r["number"])
                       if first and first.items() <= r["params"].items()), None)  # Ray adds sampled keys
    best_raw = search.best_recipe(best_row["params"])
    load_recipe(best_raw)  # what is written runs as it is
    report = {"backend": cfg.backend, "metric": search.key, "direction": search.direction, "n_trials": cfg.n_trials,
              "timeout": cfg.timeout, "seed": cfg.seed, "pruner": cfg.pruner,
              "seconds": round(time.perf_counter() - start, 1),
              "best": {"number": best_row["number"], "value": best_row["value"], "params": best_row["params"]},
              "recipe_trial": None if recipe_row is None else recipe_row["number"], "recipe_params": first,
              "best_recipe": str(folder / "best.yaml"), "trials": search.rows}
    write(report, best_raw, folder)
    if cfg.train_best if train_best is None else train_best:
        report["best_run"] = {k: v for k, v in run(load_recipe(best_raw), overwrite=True).metrics.items()
                              if k in ("validation", "test")}
        write(report, best_raw, folder)
    return report
