"""The pipeline: recipe -> data -> model -> strategy -> Trainer -> saved Hugging Face folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_transfer import cv, hub, multitask, objectives, probe, speech, text, vision
from hf_transfer.config import dump_recipe, load_recipe
from hf_transfer.data import load_data
from hf_transfer.distributed import (
    check_saved_weights, declare_mean_loss, effective_batch_size, is_sharded, log_batch_size,
    match_deepspeed_dtype, require_extras,
)
from hf_transfer.errors import OutputError, RecipeError
from hf_transfer.guards import install_nan_guard, last_complete_checkpoint
from hf_transfer.hooks import TransferTrainer, trainer_hooks
from hf_transfer.metrics import best_metric, compute_metrics_fn
from hf_transfer.schema import Recipe
from hf_transfer.strategies import apply_strategy, count_parameters

log = logging.getLogger(__name__)

# recipe `model.modality` -> module with input_columns, load_processor, preprocess, collator, load_model
# Optional: TRAINING_DEFAULTS (dict), loss_function(recipe), save_model(trainer, recipe, out) -> bool.
MODALITIES = {"text": text, "speech": speech, "vision": vision}

CHECKPOINTS = "checkpoints"
COMPLETE_MARKER = "metrics.json"  # written last: a folder without it is not a finished run


@dataclass
class FinetuneResult:
    metrics: dict[str, Any]
    output_dir: Path
    trainer: Any
    report: dict[str, Any] | None = None
    """The transfer report (recipe `compare`), when asked for."""


def default_output_dir(recipe: Recipe) -> str:
    name = Path(recipe.model.name_or_path.rstrip("/")).name
    return f"outputs/{name}-{recipe.finetune.strategy}"


def check_output_dir(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to touch an existing non-empty output folder unless told to."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"training.output_dir: {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()) or resume:
        return
    if not overwrite:
        raise OutputError(
            f"training.output_dir: {out} is not empty; pass --overwrite to replace it "
            "or --resume to continue from its last checkpoint"
        )
    shutil.rmtree(out)


def training_arguments(recipe: Recipe, out: Path):
    from transformers import TrainingArguments

    metric, greater = multitask.best_metric(recipe) if recipe.tasks else best_metric(recipe.data.problem_type)
    args: dict[str, Any] = {
        "eval_strategy": "epoch",
        "logging_strategy": "epoch",
        "report_to": "none",
        "save_total_limit": 2,
        "metric_for_best_model": metric,
        "greater_is_better": greater,
        "use_cpu": not _has_accelerator(),
    }
    args |= getattr(MODALITIES[recipe.model.modality], "TRAINING_DEFAULTS", {})
    args |= launcher_precision(recipe.training)
    args |= recipe.training
    args["output_dir"] = str(out / CHECKPOINTS)
    args.setdefault("save_strategy", args["eval_strategy"])
    # AdaLoRA: a checkpoint's pruned ranks do not load back into the live model (PEFT), so the last one stays.
    reload_best = args["eval_strategy"] != "no" and recipe.finetune.strategy != "adalora"
    args.setdefault("load_best_model_at_end", reload_best)
    try:
        return TrainingArguments(**args)
    except (ValueError, TypeError) as err:
        from hf_transfer.errors import RecipeError

        raise RecipeError(f"training: {str(err).strip().splitlines()[0]}") from None


def launcher_precision(training: dict[str, Any]) -> dict[str, bool]:
    """The launcher's mixed precision (`accelerate launch` / its config) unless the recipe sets its own:
    DeepSpeed takes bf16/fp16 from the launcher, and Trainer refuses a TrainingArguments that disagrees."""
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher in ("bf16", "fp16") and not {"bf16", "fp16"} & training.keys():
        return {launcher: True}
    return {}


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _callbacks(recipe: Recipe) -> list:
    from transformers import EarlyStoppingCallback

    if recipe.early_stopping_patience is None:
        return []
    return [EarlyStoppingCallback(early_stopping_patience=recipe.early_stopping_patience)]


def load_splits(recipe: Recipe, seed: int):
    """The recipe's data (LoadedData): multi-task labels (`tasks`) and a cross-validation fold (`cv.fold`)
    replace the single label column and the validation split."""
    modality = MODALITIES[recipe.model.modality]
    return load_data(recipe.data, modality.input_columns(recipe), seed,
                     labeler=multitask.labeler(recipe), fold=cv.fold_of(recipe))


def build_trainer(recipe: Recipe, out: Path, args=None):
    """Everything up to a ready Trainer; returns (trainer, splits)."""
    from transformers import default_data_collator, set_seed

    modality = MODALITIES[recipe.model.modality]
    args = args if args is not None else training_arguments(recipe, out)
    set_seed(args.seed)
    with args.main_process_first(desc="dataset"):  # one process fills the datasets cache, the rest read it
        loaded = load_splits(recipe, args.seed)
        processor = modality.load_processor(recipe)
        splits = modality.preprocess(loaded.splits, processor, recipe)
    model = (multitask.load_model if recipe.tasks else modality.load_model)(recipe, loaded.label_names)
    model = match_deepspeed_dtype(apply_strategy(model, recipe.finetune), args)
    declare_mean_loss(model)  # losses average over processes and accumulation steps
    hooks = trainer_hooks(model, recipe.finetune, args)
    collator, export, features = modality.collator(processor), None, None
    if not objectives.wanted(recipe) and probe.wanted(recipe, modality, model):  # head on cached features
        export, (model, splits, features) = model, probe.prepare(model, splits, collator, args)
        collator = default_data_collator
    loss = getattr(modality, "loss_function", lambda _: None)(recipe)
    splits, collator, loss = objectives.attach(recipe, modality, model, processor, loaded, splits, collator,
                                               hooks, args, loss)  # class weights, distill, domain
    trainer = TransferTrainer(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=processor,
        data_collator=collator,
        compute_metrics=(multitask.compute_metrics_fn(recipe.tasks) if recipe.tasks
                         else compute_metrics_fn(recipe.data.problem_type)),
        callbacks=_callbacks(recipe),
        hooks=hooks,
        export_model=export,
        compute_loss_func=loss,
    )
    if loss is not None:
        trainer.loss_is_scaled_for_ga = False  # a per-batch mean: Trainer divides it for accumulation
    trainer.nan_counts = install_nan_guard(model, trainer, recipe.nan_policy)
    trainer.cached_features = features  # None unless the head trained on cached features
    return trainer, splits


def _save(trainer, recipe: Recipe, out: Path, metrics: dict[str, Any]) -> None:
    custom = multitask.save_model if recipe.tasks else getattr(MODALITIES[recipe.model.modality], "save_model", None)
    saved = custom is not None and custom(trainer, recipe, out)  # e.g. timm's own format
    if not saved:
        # Every process calls save_model: under ZeRO-3 / FSDP it gathers the shards; only the main
        # process writes (PEFT models write their adapter and head).
        trainer.save_model(str(out))
    if not trainer.is_world_process_zero():
        return
    check_saved_weights(out)
    if not saved and getattr(recipe.finetune, "merge", False):
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        trainer.processing_class.save_pretrained(str(out / "merged"))
    if not saved and hasattr(trainer.model, "peft_config"):  # labels for AutoPeftModel users and pipeline()
        base = trainer.model.base_model.model
        base.config.architectures = [type(base).__name__]  # the head class (not the backbone's)
        base.config.save_pretrained(str(out))
    (out / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    _write_json_atomic(out / COMPLETE_MARKER, metrics)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _check_merge(trainer, recipe: Recipe) -> None:
    if getattr(recipe.finetune, "merge", False) and is_sharded(trainer):
        raise RecipeError(
            "finetune.merge: not available under DeepSpeed ZeRO-3 or FSDP (no process holds the full "
            "weights); train without it and merge the saved adapter afterwards (see README)"
        )


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> FinetuneResult:
    if recipe.cv is not None and recipe.cv.fold is None:  # k folds, each through this function
        return cv.run_cv(recipe, overwrite=overwrite, resume=resume)
    require_extras(recipe.training)
    out = Path(recipe.training.get("output_dir") or default_output_dir(recipe))
    args = training_arguments(recipe, out)  # under a launcher this joins the process group
    with args.main_process_first(local=False, desc="output folder"):  # the main process cleans first
        check_output_dir(out, overwrite, resume)
        if args.process_index == 0:
            (out / COMPLETE_MARKER).unlink(missing_ok=True)  # resuming: unfinished until saved again
    hub.preflight(recipe)  # a push that cannot start fails before training
    trainer, splits = build_trainer(recipe, out, args)
    _check_merge(trainer, recipe)
    log_batch_size(args)
    checkpoint = last_complete_checkpoint(out / CHECKPOINTS) if resume else None
    if resume and checkpoint is None:
        log.warning("--resume: no checkpoint under %s; starting from the beginning", out / CHECKPOINTS)
    elif checkpoint:
        log.info("--resume: continuing from %s", checkpoint)
    train_out = trainer.train(resume_from_checkpoint=checkpoint)
    trainable, total = count_parameters(trainer.export_model or trainer.model)
    args = trainer.args
    metrics: dict[str, Any] = {
        "train": train_out.metrics,
        "validation": trainer.evaluate(splits["validation"], metric_key_prefix="eval"),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "effective_batch_size": effective_batch_size(args),
        "processes": args.world_size,
        **trainer.nan_counts,
    }
    if trainer.cached_features is not None:
        metrics["cached_features"] = trainer.cached_features
    if "test" in splits:
        metrics["test"] = trainer.evaluate(splits["test"], metric_key_prefix="test")
    if "target" in splits:  # domain adaptation: the target split, when it has labels
        metrics["target"] = trainer.evaluate(splits["target"], metric_key_prefix="target")
    _save(trainer, recipe, out, metrics)
    result = FinetuneResult(metrics=metrics, output_dir=out, trainer=trainer)
    if recipe.compare:  # every process trains the variants (DDP); the main one writes the report
        from hf_transfer.report import write_report

        result.report = write_report(recipe, result, overwrite=overwrite)
    if trainer.is_world_process_zero() and not recipe.tasks:  # multi-task: the task folders are plain models
        hub.after_training(recipe, out)  # model card, round-trip check, push (hf_transfer/hub.py)
    return result


def finetune(recipe_or_path, *, overwrite: bool = False, resume: bool = False, **overrides) -> FinetuneResult:
    """Notebook API: `finetune("recipes/x.yaml", **{"training.num_train_epochs": 1})`.

    Override keys are dotted paths; `__` may stand for `.` (`training__learning_rate=1e-4`).
    Returns the metrics, the output folder and the Trainer.
    """
    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    return run(load_recipe(recipe_or_path, dotted), overwrite=overwrite, resume=resume)
