"""The Ray Tune backend of `hf-transfer tune` (`tune.backend: ray`): how trials are proposed and stopped
on a Ray cluster. Everything else (the trial's run, the rows, the outputs) is runs/tune.py's.

`Trainer.hyperparameter_search(backend="ray")` hands the search to `ray.tune.run`: each trial runs in a
Ray worker process (on any machine of the cluster), which gets a pickled copy of the search Trainer and
calls its `train(trial=config)`. Proposing: a seeded random search (`BasicVariantGenerator`) over the
space as Ray search-space objects (`search_space`). Every key is sampled in every trial; a strategy option
(`finetune.r`) that the trial's strategy lacks is sampled and ignored (`trial_params`), so a trial's
recorded parameters are the ones it used. Stopping: `pruner: median` is ASHA with reduction factor 2 (a
trial reaching epoch g, 2g, 4g, ... worse than the median of the trials that reached it before stops; g is
one more than `tune.pruner_warmup`'s epochs);
ASHA only ever stops, where Ray's MedianStoppingRule may pause a trial, which for a function trainable
without checkpoints means training it again from the start. The `timeout` is Ray's time budget.

A worker's rows never reach the driver's `Search`: every report carries the trial's row (JSON), and the
driver, where a Ray callback keeps every trial (`collector`), rebuilds the rows from each trial's last
result (`rows`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from hf_transfer.errors import DependencyError
from hf_transfer.search_space import integer_range

ASHA_MAX_T = 2**16  # above any trial's count of evaluations: ASHA never stops a trial for reaching it


def domain(spec: list | dict[str, Any]) -> tuple[str, tuple]:
    """One `tune.space` entry as (ray.tune sampler name, its arguments), the same points Optuna samples:
    a stepped range becomes the choice of its grid low, low + step, ... <= high (not Ray's rounding to
    multiples of the step, which can leave the range)."""
    if isinstance(spec, list):
        return "choice", (spec,)
    integers = integer_range(spec)
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), bool(spec.get("log"))
    if step is not None and not (integers and step == 1):
        grid = [low + i * step for i in range(int((high - low) // step) + 1)]
        return "choice", ([g if integers else round(g, 12) for g in grid],)
    if integers:
        return ("lograndint" if log else "randint"), (low, high + 1)  # Ray's upper bound is exclusive
    return ("loguniform" if log else "uniform"), (low, high)


def search_space(space: dict[str, Any]) -> dict[str, Any]:
    """`tune.space` as Ray Tune search-space objects, by dotted recipe key."""
    from ray import tune

    return {key: getattr(tune, name)(*args) for key, (name, args) in ((k, domain(v)) for k, v in space.items())}


def start(address: str | None) -> bool:
    """Connect to the cluster at `address`, or start a one-machine Ray; True when this call started it."""
    try:
        import ray
        import ray.tune  # noqa: F401
    except ImportError:
        raise DependencyError("tune.backend: ray needs Ray Tune (pip install 'hf-transfer[ray]')") from None
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=True)
    return True


def run_kwargs(cfg, direction: str, folder: Path, collect, evaluates: bool, warmup: int = 0,
               first: dict[str, Any] | None = None) -> dict[str, Any]:
    """`hyperparameter_search`'s Ray arguments: search algorithm (its first trial with the `first` values,
    the other keys sampled), scheduler (none where the trials do not evaluate during training: nothing to
    stop them on; ASHA's first rung after `warmup` epochs), budget, resources, storage, the trial collector."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    scheduler = FIFOScheduler() if cfg.pruner == "none" or not evaluates else ASHAScheduler(
        time_attr="epoch", metric="objective", mode=direction[:3], max_t=ASHA_MAX_T, grace_period=warmup + 1,
        reduction_factor=2)
    search_alg = BasicVariantGenerator(random_state=cfg.seed, points_to_evaluate=[first] if first else None)
    kwargs = {"search_alg": search_alg, "scheduler": scheduler, "time_budget_s": cfg.timeout,
              "raise_on_failed_trial": False, "verbose": 1, "storage_path": str(folder.resolve()), "name": "ray"}
    kwargs["callbacks"] = [collect]
    if cfg.resources_per_trial:
        kwargs["resources_per_trial"] = dict(cfg.resources_per_trial)
    return kwargs


def run_trial(search, outer, config: dict[str, Any], params: dict[str, Any]) -> None:
    """In a Ray worker: train one trial, reporting its row after each evaluation and at the end."""
    from ray import tune

    os.chdir(search.cwd)  # Ray starts a trial in its own folder; the recipe's paths are the driver's
    number = _number(tune.get_context().get_trial_id())

    def report(value: float, step: int, row: dict[str, Any]) -> bool:
        tune.report({"objective": value, "epoch": step, "row": json.dumps(row)})
        return False  # Ray's scheduler stops the trial's process itself

    row = search.run_trial(number, params, report)
    value = row["value"] if row["state"] == "complete" else math.nan  # failed: no value for the scheduler
    tune.report({"objective": value, "final": True, "row": json.dumps(row)})
    outer.objective = value


def collector():
    """A Ray Tune callback keeping every trial in the driver, whatever hyperparameter_search returns."""
    from ray.tune import Callback

    class Collect(Callback):
        def __init__(self):
            self.trials = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.trials[trial.trial_id] = trial

    return Collect()


def rows(trials, search) -> list[dict[str, Any]]:
    """The trials' rows in trial order, from each one's last result: a trial Ray stopped before its final
    report was pruned (by ASHA or the time budget); one whose process failed has the error Ray kept."""
    out = []
    for trial in sorted(trials, key=lambda t: t.trial_id):
        result = trial.last_result or {}
        row = json.loads(result["row"]) if "row" in result else {
            "number": _number(trial.trial_id), "params": search.trial_params(trial.config), "value": None}
        if not result.get("final"):
            row["state"] = "pruned" if trial.status == "TERMINATED" else "failed"
            if row["state"] == "failed":
                row["error"] = _error(trial)
        out.append(row)
    return out


def _number(trial_id: str) -> int:
    return int(trial_id.rsplit("_", 1)[1])  # Ray's ids: <experiment>_<5-digit index>


def _error(trial) -> str:
    path = trial.error_file
    lines = Path(path).read_text(encoding="utf-8").strip().splitlines() if path and Path(path).is_file() else []
    return lines[-1] if lines else f"Ray trial {trial.status}"
