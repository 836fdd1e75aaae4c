"""Vision modality: timm models or transformers image classifiers under the same Trainer pipeline.

The recipe's `vision.library` picks the backbone library:

- `timm`: `timm.create_model(name, pretrained=..., num_classes=K)` for a Hub id (`timm/resnet50.a1_in1k`),
  a timm model name, or a local folder in timm's format (config.json + model.safetensors). Preprocessing
  comes from the model's pretrained data config (`resolve_data_config` / `create_transform`). The result
  is saved in timm's own format, so `timm.create_model("local-dir:" + folder, pretrained=True)` reloads it.
- `transformers`: `AutoModelForImageClassification` + `AutoImageProcessor`; the result reloads with
  `pipeline("image-classification", model=folder)`.

This module holds the model side (backbone, processor, loss, saving); images, transforms and batches
are in `vision_data.py`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hf_transfer.data import default_num_workers
from hf_transfer.schema import Recipe
from hf_transfer.text import _load_error, load_auto_model, load_auto_processor, with_config_overrides
from hf_transfer.vision_data import TimmProcessor, collator, data_config, preprocess, stochastic_augmentation

# The modality interface train.MODALITIES reads from this module (preprocess, collator and
# stochastic_augmentation are the data side's, from vision_data).
__all__ = ["TRAINING_DEFAULTS", "input_columns", "load_processor", "preprocess", "collator", "load_model",
           "loss_function", "save_model", "stochastic_augmentation"]


# TrainingArguments defaults for this modality (a recipe value still wins): the image column must
# reach the lazy transform, so Trainer must not drop columns the model's forward does not name;
# images are decoded and augmented every step, in DataLoader workers sized to the machine.
TRAINING_DEFAULTS = {"remove_unused_columns": False, "label_names": ["labels"],
                     "dataloader_num_workers": default_num_workers()}


def input_columns(recipe: Recipe) -> dict[str, str]:
    """Recipe key -> dataset column that the model reads."""
    return {"vision.image_column": recipe.vision.image_column}


# --------------------------------------------------------------------------- model


class TimmClassifier(nn.Module):
    """A timm model under Trainer's calling convention: `forward(pixel_values, labels)` -> loss, logits."""

    main_input_name = "pixel_values"

    def __init__(self, model: nn.Module, label_names: list[str] | None, problem_type: str):
        super().__init__()
        self.model = model
        self.label_names = label_names
        self.problem_type = problem_type

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import ImageClassifierOutput

        logits = self.model(pixel_values)
        loss = None if labels is None else classification_loss(logits, labels, self.problem_type)
        return ImageClassifierOutput(loss=loss, logits=logits)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Cross-entropy on class ids or on soft targets (mixup / cutmix); BCE multi-label; MSE regression."""
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    if labels.dim() == logits.dim():  # soft targets, one row per image
        return torch.sum(-labels * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, labels)


def timm_source(name_or_path: str) -> str:
    """A local folder -> `local-dir:PATH`; a Hub id (`org/name`) -> `hf-hub:org/name`; else a timm name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return "local-dir:" + str(path.resolve())
    if name_or_path.startswith(("hf-hub:", "local-dir:")) or "/" not in name_or_path:
        return name_or_path
    return "hf-hub:" + name_or_path


def _timm_create(recipe: Recipe, pretrained: bool, **kwargs) -> nn.Module:
    import timm

    try:
        return timm.create_model(timm_source(recipe.model.name_or_path), pretrained=pretrained, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise _load_error(recipe, "a timm model", err) from None


def _timm_pretrained_cfg(recipe: Recipe) -> dict[str, Any]:
    """The model's pretrained config (data config, input size) without building its weights."""
    with torch.device("meta"):
        return dict(_timm_create(recipe, pretrained=False).pretrained_cfg)


def load_model(recipe: Recipe, label_names: list[str] | None):
    num_labels = len(label_names) if label_names else 1
    if recipe.vision.library == "timm":
        kwargs: dict[str, Any] = {"num_classes": num_labels}
        size, source_cfg = recipe.vision.image_size, _timm_pretrained_cfg(recipe)
        if size and source_cfg.get("fixed_input_size"):
            kwargs["img_size"] = size  # e.g. ViT: position embeddings are resampled to the new grid
        model = _timm_create(recipe, recipe.model.pretrained, **with_config_overrides(recipe, kwargs))
        if not recipe.model.pretrained or source_cfg.get("num_classes") != num_labels:
            _zero_classifier(model)
        return TimmClassifier(model, label_names, recipe.data.problem_type)
    return _load_transformers_model(recipe, label_names, num_labels)


def _zero_classifier(model: nn.Module) -> None:
    """A new head starts at zero (uniform predictions), as in BiT: some timm inits (EfficientNet's)
    give a new head logits large enough to swamp the pretrained features' first updates."""
    for p in model.get_classifier().parameters():
        nn.init.zeros_(p)


def _load_transformers_model(recipe: Recipe, label_names: list[str] | None, num_labels: int):
    from transformers import AutoModelForImageClassification

    kwargs: dict[str, Any] = {"num_labels": num_labels, "problem_type": recipe.data.problem_type}
    if label_names:
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    # a new head: the pretrained one (e.g. 1000 ImageNet classes) is dropped
    return load_auto_model(AutoModelForImageClassification, recipe, "an image-classification model",
                           pretrained_kwargs={"ignore_mismatched_sizes": True}, **kwargs)


def loss_function(recipe: Recipe):
    """Trainer's `compute_loss_func` when labels become soft (mixup / cutmix); else the model's own loss."""
    v = recipe.vision
    if v.mixup_alpha <= 0 and v.cutmix_alpha <= 0:
        return None
    problem_type = recipe.data.problem_type

    def compute(outputs, labels, num_items_in_batch=None):
        return classification_loss(outputs["logits"], labels, problem_type)

    return compute


# --------------------------------------------------------------------------- processor


def load_processor(recipe: Recipe):
    vision = recipe.vision
    if vision.library == "timm":
        from timm.data import resolve_data_config

        args: dict[str, Any] = {}
        if vision.image_size:
            args["input_size"] = (3, vision.image_size, vision.image_size)
        if vision.crop_pct:
            args["crop_pct"] = vision.crop_pct
        return TimmProcessor(resolve_data_config(args, pretrained_cfg=_timm_pretrained_cfg(recipe)))
    from transformers import AutoImageProcessor

    proc = load_auto_processor(AutoImageProcessor, recipe, "an image processor")
    if vision.image_size:
        _resize_processor(proc, vision.image_size)
    return proc


def _resize_processor(proc, size: int) -> None:
    """Point a transformers image processor at `size` pixels, keeping its own size convention."""
    if "height" in (proc.size or {}):
        proc.size = {"height": size, "width": size}
    else:
        proc.size = {"shortest_edge": size}
    if getattr(proc, "crop_size", None):
        proc.crop_size = {"height": size, "width": size}


# --------------------------------------------------------------------------- saving


def save_model(trainer, recipe: Recipe, out: Path) -> bool:
    """timm models: write timm's own folder (LoRA merged in). False: let the default save run."""
    if recipe.vision.library != "timm":
        return False
    if not trainer.is_world_process_zero():
        return True
    from timm.models import save_for_hf

    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "peft_config"):  # merge a copy: the trained model stays usable in memory
        model = copy.deepcopy(model).merge_and_unload()
    label_names = model.label_names
    save_for_hf(
        model.model,
        str(out),
        model_config={"label_names": label_names} if label_names else None,
        safe_serialization=True,
        data_config=data_config(trainer.processing_class),
    )
    return True
