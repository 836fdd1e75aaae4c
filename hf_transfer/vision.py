"""Vision modality: timm models or transformers image classifiers under the same Trainer pipeline.

The recipe's `vision.library` picks the backbone library:

- `timm`: `timm.create_model(name, pretrained=..., num_classes=K)` for a Hub id (`timm/resnet50.a1_in1k`),
  a timm model name, or a local folder in timm's format (config.json + model.safetensors). Preprocessing
  comes from the model's pretrained data config (`resolve_data_config` / `create_transform`). The result
  is saved in timm's own format, so `timm.create_model("local-dir:" + folder, pretrained=True)` reloads it.
- `transformers`: `AutoModelForImageClassification` + `AutoImageProcessor`; the result reloads with
  `pipeline("image-classification", model=folder)`.

Images are converted to RGB and transformed lazily (`with_transform`), never rewritten into the
dataset. Augmentation (timm's `create_transform(is_training=True)`, mixup / cutmix through timm's
`Mixup`) applies to the training split only; evaluation is deterministic.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from hf_transfer.data import default_num_workers
from hf_transfer.errors import DataError, RecipeError
from hf_transfer.schema import Recipe, VisionConfig
from hf_transfer.text import _load_error, load_auto_model, load_auto_processor, with_config_overrides


# TrainingArguments defaults for this modality (a recipe value still wins): the image column must
# reach the lazy transform, so Trainer must not drop columns the model's forward does not name;
# images are decoded and augmented every step, in DataLoader workers sized to the machine.
TRAINING_DEFAULTS = {"remove_unused_columns": False, "label_names": ["labels"],
                     "dataloader_num_workers": default_num_workers()}

PIL_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


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


# --------------------------------------------------------------------------- preprocessing


@dataclass
class TimmProcessor:
    """timm's data config (input size, interpolation, mean, std, crop) resolved for this run."""

    data_config: dict[str, Any] = field(default_factory=dict)

    def save_pretrained(self, folder: str | Path) -> None:
        """Trainer saves the processor with each checkpoint; the final model's config.json carries it too."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "timm_data_config.json").write_text(json.dumps(self.data_config, indent=2) + "\n")


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


def _processor_data_config(proc) -> dict[str, Any]:
    """A timm-style data config read from a transformers image processor (for training transforms)."""
    crop = getattr(proc, "crop_size", None) if getattr(proc, "do_center_crop", False) else None
    size = crop or proc.size or {}
    side = size.get("height") or size.get("shortest_edge") or 224
    resample = getattr(proc, "resample", 2)
    return {
        "input_size": (3, int(side), int(size.get("width") or side)),
        "interpolation": PIL_INTERPOLATION.get(int(resample) if resample is not None else 2, "bilinear"),
        "mean": tuple(proc.image_mean) if getattr(proc, "do_normalize", True) else (0.0, 0.0, 0.0),
        "std": tuple(proc.image_std) if getattr(proc, "do_normalize", True) else (1.0, 1.0, 1.0),
    }


def data_config(processor) -> dict[str, Any]:
    return processor.data_config if isinstance(processor, TimmProcessor) else _processor_data_config(processor)


def train_transform(cfg: dict[str, Any], vision: VisionConfig) -> Callable:
    """timm's training transform (random resized crop, flips, RandAugment / TrivialAugment, jitter)."""
    from timm.data import create_transform

    trivial = vision.auto_augment == "trivialaugment"
    crop = {"scale": tuple(vision.scale)} if vision.random_resized_crop else {"scale": (1.0, 1.0), "ratio": (1.0, 1.0)}
    parts = create_transform(
        input_size=cfg["input_size"],
        is_training=True,
        hflip=vision.hflip,
        vflip=vision.vflip,
        color_jitter=vision.color_jitter,
        auto_augment=None if trivial else vision.auto_augment,
        interpolation=cfg.get("interpolation", "bilinear"),
        mean=cfg["mean"],
        std=cfg["std"],
        separate=trivial,
        **crop,
    )
    if not trivial:
        return parts
    from torchvision import transforms

    primary, _, final = parts
    return transforms.Compose([*primary.transforms, transforms.TrivialAugmentWide(), *final.transforms])


def eval_transform(processor) -> Callable[[list], list]:
    """Deterministic preprocessing of a list of RGB images, as the backbone defines it."""
    if isinstance(processor, TimmProcessor):
        from timm.data import create_transform

        tf = create_transform(**processor.data_config, is_training=False)
        return lambda images: [tf(img) for img in images]
    return lambda images: list(processor(images=images, return_tensors="pt")["pixel_values"])


def mixer(recipe: Recipe, train):
    """timm's Mixup (mixup and / or cutmix) for training batches, or None when both are off."""
    v = recipe.vision
    if v.mixup_alpha <= 0 and v.cutmix_alpha <= 0:
        return None
    if recipe.data.problem_type != "single_label_classification":
        raise RecipeError("vision.mixup_alpha: mixup / cutmix need data.problem_type single_label_classification")
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=v.mixup_alpha, cutmix_alpha=v.cutmix_alpha,
        label_smoothing=v.label_smoothing, num_classes=_num_labels(train),
    )


def stochastic_augmentation(recipe: Recipe) -> bool:
    """Whether training images are transformed randomly (then nothing computed from them can be cached)."""
    v = recipe.vision
    return bool(v.random_resized_crop or v.hflip or v.vflip or v.color_jitter or v.auto_augment
                or v.mixup_alpha or v.cutmix_alpha)


def input_columns(recipe: Recipe) -> dict[str, str]:
    """Recipe key -> dataset column that the model reads."""
    return {"vision.image_column": recipe.vision.image_column}


def _rgb(image: Any, column: str):
    from PIL import Image

    if isinstance(image, dict) and ("bytes" in image or "path" in image):  # undecoded datasets Image
        image = _open_image(image, column)
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if hasattr(image, "shape"):  # numpy array (H, W) or (H, W, C)
        import numpy as np

        return Image.fromarray(np.asarray(image)).convert("RGB")
    raise DataError(f"vision.image_column: column {column!r} holds {type(image).__name__}, not images")


def _open_image(value: dict, column: str):
    """Decode one image here, so that a corrupt or unreadable file is named in a one-line error."""
    import io

    from PIL import Image

    where = value.get("path") or "<embedded bytes>"
    try:
        image = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
        image.load()
    except (OSError, ValueError, TypeError, Image.DecompressionBombError) as err:
        raise DataError(f"vision.image_column: cannot read image {where} in column {column!r}: "
                        f"{(str(err).splitlines() or [err.__class__.__name__])[0]}") from None
    return image


def _undecoded(ds, column: str):
    """Image columns stay undecoded in the dataset; `_rgb` decodes each image when it is used."""
    import datasets

    feature = ds.features.get(column)
    return ds.cast_column(column, datasets.Image(decode=False)) if isinstance(feature, datasets.Image) else ds


def preprocess(splits, processor, recipe: Recipe):
    """Attach lazy transforms: augmentation on `train`, the backbone's deterministic one elsewhere."""
    column = recipe.vision.image_column
    evaluate = eval_transform(processor)
    augment = train_transform(data_config(processor), recipe.vision)
    mix = mixer(recipe, splits["train"])

    def train(batch: dict[str, list]) -> dict[str, list]:
        out = {"pixel_values": [augment(_rgb(im, column)) for im in batch[column]], "labels": batch["labels"]}
        if mix is not None:
            out["mixup"] = [mix] * len(out["labels"])
        return out

    def deterministic(batch: dict[str, list]) -> dict[str, list]:
        return {"pixel_values": evaluate([_rgb(im, column) for im in batch[column]]), "labels": batch["labels"]}

    out = {
        role: _undecoded(ds, column).with_transform(train if role == "train" else deterministic)
        for role, ds in splits.items()
    }
    return type(splits)(out)


def _num_labels(ds) -> int:
    """Classes of a single-label `labels` column: its ClassLabel size, else the largest id + 1."""
    names = getattr(ds.features.get("labels"), "names", None)
    return len(names) if names else max(ds["labels"]) + 1


def collator(processor):
    return collate


def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack pixel values and labels; mix training batches when the recipe asks for mixup / cutmix."""
    pixel_values = torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples])
    labels = torch.tensor([e["labels"] for e in examples])
    mix = examples[0].get("mixup")
    if mix is not None:
        if len(examples) % 2 == 0:  # timm's Mixup pairs images within the batch
            pixel_values, labels = mix(pixel_values, labels)
        else:
            from timm.data.mixup import mixup_target

            labels = mixup_target(labels, mix.num_classes, 1.0, mix.label_smoothing)
    return {"pixel_values": pixel_values, "labels": labels}


def loss_function(recipe: Recipe):
    """Trainer's `compute_loss_func` when labels become soft (mixup / cutmix); else the model's own loss."""
    v = recipe.vision
    if v.mixup_alpha <= 0 and v.cutmix_alpha <= 0:
        return None
    problem_type = recipe.data.problem_type

    def compute(outputs, labels, num_items_in_batch=None):
        return classification_loss(outputs["logits"], labels, problem_type)

    return compute


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
