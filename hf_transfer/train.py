"""The pipeline: recipe -> data -> model -> strategy -> Trainer -> saved Hugging Face folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_transfer import hub, text
from hf_transfer.config import Recipe, dump_recipe, load_recipe
from hf_transfer.data import load_data
from hf_transfer.errors import OutputError
from hf_transfer.metrics import best_metric, compute_metrics_fn
from hf_transfer.strategies import apply_strategy, count_parameters

log = logging.getLogger(__name__)

# recipe `model.modality` -> module with input_columns, load_processor, preprocess, collator, load_model
MODALITIES = {"text": text}

CHECKPOINTS = "checkpoints"
COMPLETE_MARKER = "metrics.json"  # written last: a folder without it is not a finished run


@dataclass
class FinetuneResult:
    metrics: dict[str, Any]
    output_dir: Path
    trainer: Any


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

    metric, greater = best_metric(recipe.data.problem_type)
    args: dict[str, Any] = {
        "eval_strategy": "epoch",
        "logging_strategy": "epoch",
        "report_to": "none",
        "save_total_limit": 2,
        "metric_for_best_model": metric,
        "greater_is_better": greater,
        "use_cpu": not _has_accelerator(),
    }
    args |= recipe.training
    args["output_dir"] = str(out / CHECKPOINTS)
    args.setdefault("save_strategy", args["eval_strategy"])
    args.setdefault("load_best_model_at_end", args["eval_strategy"] != "no")
    try:
        return TrainingArguments(**args)
    except (ValueError, TypeError) as err:
        from hf_transfer.errors import RecipeError

        raise RecipeError(f"training: {str(err).strip().splitlines()[0]}") from None


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _callbacks(recipe: Recipe) -> list:
    from transformers import EarlyStoppingCallback

    if recipe.early_stopping_patience is None:
        return []
    return [EarlyStoppingCallback(early_stopping_patience=recipe.early_stopping_patience)]


def _last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = out / CHECKPOINTS
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def build_trainer(recipe: Recipe, out: Path):
    """Everything up to a ready Trainer; returns (trainer, splits)."""
    from transformers import Trainer, set_seed

    modality = MODALITIES[recipe.model.modality]
    args = training_arguments(recipe, out)
    set_seed(args.seed)
    loaded = load_data(recipe.data, modality.input_columns(recipe), args.seed)
    processor = modality.load_processor(recipe)
    splits = modality.preprocess(loaded.splits, processor, recipe)
    model = modality.load_model(recipe, loaded.label_names)
    model = apply_strategy(model, recipe.finetune)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=processor,
        data_collator=modality.collator(processor),
        compute_metrics=compute_metrics_fn(recipe.data.problem_type),
        callbacks=_callbacks(recipe),
    )
    return trainer, splits


def _save(trainer, recipe: Recipe, out: Path, metrics: dict[str, Any]) -> None:
    trainer.save_model(str(out))  # main process only; PEFT models save their adapter
    if not trainer.is_world_process_zero():
        return
    if getattr(recipe.finetune, "merge", False):
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        trainer.processing_class.save_pretrained(str(out / "merged"))
    if hasattr(trainer.model, "peft_config"):  # labels for AutoPeftModel users and pipeline()
        base = trainer.model.base_model.model
        base.config.architectures = [type(base).__name__]  # the head class (not the backbone's)
        base.config.save_pretrained(str(out))
    (out / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    _write_json_atomic(out / COMPLETE_MARKER, metrics)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> FinetuneResult:
    out = Path(recipe.training.get("output_dir") or default_output_dir(recipe))
    check_output_dir(out, overwrite, resume)
    hub.preflight(recipe)
    trainer, splits = build_trainer(recipe, out)
    checkpoint = _last_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        log.warning("--resume: no checkpoint under %s; starting from the beginning", out / CHECKPOINTS)
    train_out = trainer.train(resume_from_checkpoint=checkpoint)
    trainable, total = count_parameters(trainer.model)
    args = trainer.args
    metrics: dict[str, Any] = {
        "train": train_out.metrics,
        "validation": trainer.evaluate(splits["validation"], metric_key_prefix="eval"),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "effective_batch_size": args.per_device_train_batch_size
        * args.world_size
        * args.gradient_accumulation_steps,
    }
    if "test" in splits:
        metrics["test"] = trainer.evaluate(splits["test"], metric_key_prefix="test")
    _save(trainer, recipe, out, metrics)
    if trainer.is_world_process_zero():
        hub.after_training(recipe, out)  # model card, round-trip check, push (hf_transfer/hub.py)
    return FinetuneResult(metrics=metrics, output_dir=out, trainer=trainer)


def finetune(recipe_or_path, *, overwrite: bool = False, resume: bool = False, **overrides) -> FinetuneResult:
    """Notebook API: `finetune("recipes/x.yaml", **{"training.num_train_epochs": 1})`.

    Override keys are dotted paths; `__` may stand for `.` (`training__learning_rate=1e-4`).
    Returns the metrics, the output folder and the Trainer.
    """
    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    return run(load_recipe(recipe_or_path, dotted), overwrite=overwrite, resume=resume)
