"""One run: recipe -> data -> task -> model -> strategy -> Trainer -> evaluate -> saved Hugging Face folder.

Everything task-specific comes from the task's record (hf_transfer.tasks), everything strategy-specific
from the strategy's (hf_transfer.strategies); the folder's layout is hf_transfer.folder's. What happens
around a run (k folds, comparison variants, card, round-trip check, push) is hf_transfer.runs's.
"""

from __future__ import annotations

import errno
import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer import objectives
from hf_transfer.anatomy import check_text_model
from hf_transfer.distributed import (
    check_saved_weights, declare_mean_loss, effective_batch_size, is_sharded, log_batch_size, main_decides,
    match_deepspeed_dtype, require_extras,
)
from hf_transfer.errors import RecipeError, TrainingError
from hf_transfer.folder import (
    CHECKPOINTS, RECIPE, check_output_dir, default_output_dir, finish, last_complete_checkpoint, mark_unfinished, put_in_place,
    run_lock, write_error, write_predictions,
)
from hf_transfer.recipe.schema import Recipe
from hf_transfer.validate import dump_recipe
from hf_transfer.recipe.yaml import read_recipe_file
from hf_transfer.strategies import (
    STRATEGIES, apply_strategy, count_parameters, probe, trained_modules, trainer_hooks,
)
from hf_transfer.tasks import resolve
from hf_transfer.tasks.data import load_data
from hf_transfer.tasks.subsets import fold_of, subset_of
from hf_transfer.memory import memory_callbacks
from hf_transfer.trainer import (
    close_logs, early_stopping, fit_checkpointing, fit_eval_batch, install_nan_guard, log_to_run_folder, loss_before,
    trainer_class, training_arguments, whole_run_train_loss,
)

log = logging.getLogger(__name__)

WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)  # the folder cannot be written


@dataclass
class FinetuneResult:
    metrics: dict[str, Any]
    output_dir: Path
    trainer: Any
    report: dict[str, Any] | None = None
    """The transfer report (recipe `compare`), when asked for."""


def output_dir(recipe: Recipe) -> Path:
    return Path(recipe.training.get("output_dir") or default_output_dir(recipe.model.name_or_path,
                                                                        recipe.finetune.strategy))


def load_splits(recipe: Recipe, seed: int):
    """The recipe's data (LoadedData), labelled by the task; a cross-validation fold (`cv.fold`) replaces
    the validation split, a learning-curve point (`curve.fraction`) keeps its share of the training split
    (drawn with `seed`)."""
    task, spec = resolve(recipe)
    return load_data(recipe.data, task.input_columns(spec), seed, labeler=task.labeler(spec),
                     fold=fold_of(recipe.cv), subset=subset_of(recipe.curve, seed))


def build_trainer(recipe: Recipe, out: Path, args=None):
    """Everything up to a ready Trainer; returns (trainer, splits)."""
    from transformers import set_seed

    task, spec = resolve(recipe)
    args = args if args is not None else training_arguments(recipe, out)
    set_seed(args.seed)
    with args.main_process_first(desc="dataset"):  # one process fills the datasets cache, the rest read it
        loaded = load_splits(recipe, args.seed)
        processor = task.load_processor(spec)
        splits = task.preprocess(loaded.splits, processor, spec)
    args = fit_eval_batch(args, splits)
    model = task.load_model(spec, loaded.label_names)
    check_text_model(processor, model, recipe.model.name_or_path, recipe.model.max_length)
    model = apply_strategy(model, recipe.finetune, task.peft_task_type, pretrained=recipe.model.pretrained)
    model = match_deepspeed_dtype(model, args)
    declare_mean_loss(model)  # losses average over processes and accumulation steps
    hooks = trainer_hooks(model, recipe.finetune, args)
    collator, export, features = task.collator(processor), None, None
    cacheable = not objectives.wanted(recipe) and not recipe.data.streaming  # a stream is not cached
    if cacheable and probe.wanted(recipe.finetune, task, task.stochastic(spec), model):
        export = model  # the head trains on cached features (per token for token classification)
        model, splits, features, collator = probe.prepare(model, splits, collator, args, per_token=task.entities)
    loss = task.loss(spec)
    splits, collator, loss = objectives.attach(recipe, task, spec, model, processor, loaded, splits, collator,
                                               hooks, args, loss)  # class weights, distill, domain
    args = fit_checkpointing(args, model)
    trainer = trainer_class(task, model)(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=processor,
        data_collator=collator,
        compute_metrics=task.compute_metrics(spec),
        callbacks=early_stopping(recipe) + memory_callbacks(recipe) + task.callbacks(spec),
        hooks=hooks,
        export_model=export,
        fast_dropout=recipe.model.fast_dropout,
        compute_loss_func=loss,
    )
    log_to_run_folder(trainer, out)
    if loss is not None:
        trainer.loss_is_scaled_for_ga = False  # a per-batch mean: Trainer divides it for accumulation
    trainer.nan_counts = install_nan_guard(model, trainer, recipe.nan_policy)
    trainer.cached_features = features  # None unless the head trained on cached features
    trainer.class_names = loaded.label_names  # the per-class details of metrics.json name them
    trainer.train_examples = _count(loaded.splits["train"])  # labelled training rows (metrics.json)
    return trainer, splits


FRAMEWORKS = ("hf-transfer-learning", "transformers", "peft", "torch", "datasets", "accelerate", "timm")


def framework_versions() -> dict[str, str]:
    """The installed versions of the libraries a run depends on (those installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in FRAMEWORKS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _save(trainer, recipe: Recipe, out: Path, metrics: dict[str, Any], predictions: dict[str, tuple]) -> None:
    task, spec = resolve(recipe)
    if trainer.is_world_process_zero():
        mark_unfinished(out)  # resuming a finished run: its metrics.json goes now that a new one is ready
    saved = task.save(trainer, spec, out)  # e.g. timm's own format
    if not saved:
        # Every process calls save_model: under ZeRO-3 / FSDP it gathers the shards; only the main
        # process writes (PEFT models write their adapter and head).
        trainer.save_model(str(out))
    if not trainer.is_world_process_zero():
        return
    check_saved_weights(out)
    strategy = STRATEGIES[recipe.finetune.strategy]
    if not saved and strategy.finish is not None:
        strategy.finish(trainer, recipe.finetune, out)
    write_predictions(out, predictions)
    finish(out, dump_recipe(recipe), metrics)


def _check_merge(trainer, recipe: Recipe) -> None:
    if getattr(recipe.finetune, "merge", False) and is_sharded(trainer):
        raise RecipeError(
            "finetune.merge: not available under DeepSpeed ZeRO-3 or FSDP (no process holds the full "
            "weights); train without it and merge the saved adapter afterwards: hf-transfer merge OUTPUT_DIR"
        )


def run_one(recipe: Recipe, overwrite: bool = False, resume: bool = False, taken: bool = False) -> FinetuneResult:
    """Train the recipe into its output folder (no comparison, card or push: see hf_transfer.runs).

    Replacing a finished run (--overwrite), the new one is written beside it and takes its place only
    when complete; the folder is locked against a second run meanwhile (hf_transfer.folder). Only the
    main process takes the lock and checks the folder; a refusal stops every process with its line.
    `taken`: the caller holds the folder (folder.staged: locked, checked, fresh) and this run writes into it."""
    require_extras(recipe.training)
    out = output_dir(recipe)
    args = training_arguments(recipe, out)  # under a launcher this joins the process group
    with ExitStack() as held:
        def take_folder() -> Path:  # on the main process only: the lock (held until the end) and the check
            held.enter_context(run_lock(out))
            return check_output_dir(out, overwrite, resume)

        # the other processes (machines) follow the main one's answer
        target = out if taken else main_decides(take_folder, args)
        if target != out:
            args.output_dir = str(target / CHECKPOINTS)
        try:
            result = _train(recipe, target, args, resume)
        except OSError as err:
            where = getattr(err, "filename", None)
            if err.errno not in WRITE_ERRNOS or (where and not str(where).startswith(str(target))):
                raise
            raise write_error(target, err) from None  # a replaced run stays as it was: it is not `target`
        if args.process_index == 0:
            put_in_place(target, out)
        result.trainer.accelerator.wait_for_everyone()  # the folder is in place before anyone goes on
    result.output_dir = out
    return result


# what a checkpoint was trained with and --resume cannot change
RESUME_KEYS = ("model.name_or_path", "model.pretrained", "finetune", "training.per_device_train_batch_size",
               "training.gradient_accumulation_steps")


def _setting(raw: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        raw = (raw or {}).get(part) if isinstance(raw, dict) else None
    return raw


def _check_resume(recipe: Recipe, out: Path) -> None:
    """--resume with settings its checkpoints cannot honour is refused, naming the key."""
    saved_path = out / RECIPE
    if not saved_path.is_file():
        return
    saved, now = read_recipe_file(saved_path), recipe.to_dict()
    for key in RESUME_KEYS:
        old, new = _setting(saved, key), _setting(now, key)
        if key.startswith("training.") and old is None and new is None:
            continue
        if old != new:
            raise RecipeError(
                f"{key}: the run in {out} was trained with {old!r}, now {new!r}; --resume continues only "
                "with the same settings (start again with --overwrite)"
            )


# split evaluated after training -> its metric key prefix (target: domain adaptation's labelled target split)
FINAL_EVALUATIONS = {"validation": "eval", "test": "test", "target": "target"}


def _final_evaluation(trainer, split, prefix: str, task, spec) -> tuple[dict[str, float], dict | None, tuple]:
    """One pass over a split after training: Trainer's metrics (logged as `evaluate()` logs them), the
    task's details of the same predictions (classification: per-class scores, confusion matrix) and the
    predictions with their labels (predictions.npz)."""
    from transformers import EvalPrediction

    out = trainer.predict(split, metric_key_prefix=prefix)
    trainer.log(out.metrics)
    found = task.details(spec, EvalPrediction(out.predictions, out.label_ids), trainer.class_names)
    order = _prediction_order(trainer, split)
    return out.metrics, found, (_in_dataset_order(out.predictions, order), _in_dataset_order(out.label_ids, order))


def _prediction_order(trainer, split) -> np.ndarray | None:
    """The order trainer.predict visited `split` in, when it is not the split's own: Trainer's evaluation
    sampler follows `train_sampling_strategy`, and group_by_length orders evaluation by length with a
    generator seeded by training.seed. predictions.npz keeps the split's order, so that runs trained at
    another seed or on other inputs (a baseline) line up example by example."""
    from torch.utils.data import SequentialSampler

    sampler = trainer._get_eval_sampler(split)
    if sampler is None or isinstance(sampler, SequentialSampler):
        return None
    return np.fromiter(iter(sampler), dtype=np.int64)


def _in_dataset_order(value, order: np.ndarray | None):
    if order is None or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return tuple(_in_dataset_order(v, order) for v in value)
    if len(value) != len(order):  # not one row per example: left as predicted (pairing then refuses it)
        return value
    out = np.empty_like(value)
    out[order] = value
    return out


def _count(split) -> int | None:
    """Rows of a split; None for a stream (no length)."""
    try:
        return len(split)
    except TypeError:
        return None


def _train(recipe: Recipe, out: Path, args, resume: bool) -> FinetuneResult:
    if resume:
        _check_resume(recipe, out)
    trainer, splits = build_trainer(recipe, out, args)
    _check_merge(trainer, recipe)
    if trainer.is_world_process_zero():  # what the checkpoints are trained with (--resume checks it)
        out.mkdir(parents=True, exist_ok=True)
        (out / RECIPE).write_text(dump_recipe(recipe), encoding="utf-8")
    log_batch_size(args)
    checkpoint = last_complete_checkpoint(out / CHECKPOINTS) if resume else None
    if resume and checkpoint is None:
        log.warning("--resume: no checkpoint under %s; starting from the beginning", out / CHECKPOINTS)
    elif checkpoint:
        log.info("--resume: continuing from %s", checkpoint)
    try:
        train_out = trainer.train(resume_from_checkpoint=checkpoint)
    except KeyError as err:  # a metric the task reports, but not for this run (e.g. mse without regression)
        if "metric_for_best_model" not in str(err):
            raise
        raise TrainingError(f"training.metric_for_best_model: {err.args[0]}") from None
    train_metrics = dict(train_out.metrics)
    if "train_loss" in train_metrics:  # after --resume: the mean over the whole run, not the resumed part
        train_metrics["train_loss"] = whole_run_train_loss(train_metrics["train_loss"], trainer.state.global_step,
                                                           loss_before(checkpoint))
    trainable, total = count_parameters(trainer.export_model or trainer.model)
    args = trainer.args
    task, spec = resolve(recipe)
    evaluated = {role: _final_evaluation(trainer, splits[role], prefix, task, spec)
                 for role, prefix in FINAL_EVALUATIONS.items() if role in splits}
    close_logs(trainer)
    metrics: dict[str, Any] = {
        "train": train_metrics,
        **{role: scores for role, (scores, _, _) in evaluated.items()},
        "train_examples": trainer.train_examples,
        **trainer.hooks.metrics,  # e.g. unlabelled_examples (distill.unlabelled)
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trained_modules": trained_modules(trainer.export_model or trainer.model),
        "effective_batch_size": effective_batch_size(args),
        "processes": args.world_size,
        **trainer.nan_counts,
        "log_history": trainer.state.log_history,  # per-epoch losses and evaluations: report.html's curves
        "versions": framework_versions(),  # the model card's framework versions, as trained
    }
    if trainer.cached_features is not None:
        metrics["cached_features"] = trainer.cached_features
    per_class = {role: found for role, (_, found, _) in evaluated.items() if found is not None}
    if per_class:
        metrics["per_class"] = per_class
    collapse = task.diagnose(metrics)
    if collapse is not None:  # also in the card and the transfer report
        metrics["collapse"] = collapse
        log.warning("collapsed predictions (%s): %s", ", ".join(f"{role} {share:.0%} one class"
                                                                for role, share in collapse["splits"].items()),
                    collapse["hint"])
    _save(trainer, recipe, out, metrics, {role: predicted for role, (_, _, predicted) in evaluated.items()})
    return FinetuneResult(metrics=metrics, output_dir=out, trainer=trainer)
