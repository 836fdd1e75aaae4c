"""Images in, tensors out: the data side of image-classification (`image_classification.py`).

Preprocessing comes from the backbone's data config: timm's pretrained config (`resolve_data_config` /
`create_transform`) or one read from a transformers image processor. Images are converted to RGB and
transformed lazily (`with_transform`), never rewritten into the dataset. Augmentation (timm's
`create_transform(is_training=True)`, mixup / cutmix through timm's `Mixup`) applies to the training
split only; evaluation is deterministic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hf_transfer.errors import DataError, RecipeError
from hf_transfer.tasks.base import TaskSpec

PIL_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


# --------------------------------------------------------------------------- backbone data config


@dataclass
class TimmProcessor:
    """timm's data config (input size, interpolation, mean, std, crop) resolved for this run."""

    data_config: dict[str, Any] = field(default_factory=dict)

    def save_pretrained(self, folder: str | Path) -> None:
        """Trainer saves the processor with each checkpoint; the final model's config.json carries it too."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "timm_data_config.json").write_text(json.dumps(self.data_config, indent=2) + "\n")


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


# --------------------------------------------------------------------------- transforms, augmentation


def train_transform(cfg: dict[str, Any], vision) -> Callable:
    """timm's training transform (random resized crop, flips, RandAugment / TrivialAugment, jitter) as
    the recipe's `vision:` section (VisionConfig) asks."""
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


def mixer(spec: TaskSpec, splits):
    """timm's Mixup (mixup and / or cutmix) for the `train` split's batches, or None when both are off or
    there is no training split (splits prepared for evaluation only)."""
    v = spec.options
    if (v.mixup_alpha <= 0 and v.cutmix_alpha <= 0) or "train" not in splits:
        return None
    if spec.data.problem_type != "single_label_classification":
        raise RecipeError("vision.mixup_alpha: mixup / cutmix need data.problem_type single_label_classification")
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=v.mixup_alpha, cutmix_alpha=v.cutmix_alpha,
        label_smoothing=v.label_smoothing, num_classes=_num_labels(splits["train"]),
    )


def stochastic_augmentation(spec: TaskSpec) -> bool:
    """Whether training images are transformed randomly (then nothing computed from them can be cached)."""
    v = spec.options
    return bool(v.random_resized_crop or v.hflip or v.vflip or v.color_jitter or v.auto_augment
                or v.mixup_alpha or v.cutmix_alpha)


# --------------------------------------------------------------------------- datasets, batches


def rgb_image(image: Any, column: str):
    from PIL import Image

    if isinstance(image, dict) and ("bytes" in image or "path" in image):  # undecoded datasets Image
        image = _open_image(image, column)
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit grey: scaled, not clipped
            image = Image.fromarray(_pixels(np.asarray(image), column))
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, list):  # nested lists of numbers (an array column read back from parquet or JSON)
        try:
            image = np.asarray(image)
        except ValueError:
            raise DataError(f"vision.image_column: column {column!r} holds ragged lists, not images") from None
        if image.dtype.kind not in "biuf":
            raise DataError(f"vision.image_column: column {column!r} holds lists of {image.dtype}, not of pixel values")
    if hasattr(image, "shape"):  # a numpy array (or tensor): H x W, H x W x C or C x H x W
        return Image.fromarray(_pixels(np.asarray(image), column)).convert("RGB")
    raise DataError(f"vision.image_column: column {column!r} holds {type(image).__name__}, not images")


def _pixels(array: np.ndarray, column: str) -> np.ndarray:
    """An array image as uint8 H x W or H x W x 3 / 4 (channels-first and single-channel arrays turned so)."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # channels first, as torch keeps them
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise DataError(f"vision.image_column: column {column!r} holds an array of shape {tuple(array.shape)}, not an "
                        "image (height x width, with 3 or 4 channels first or last, or none)")
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    return _to_8bit(array, column)


def _to_8bit(array: np.ndarray, column: str) -> np.ndarray:
    """Pixels of another depth as uint8, scaled, never clipped (convert("RGB") clips every value above 255 to
    white): 16-bit integers by 1/257 (65535 -> 255); floats in [0, 1] by 255; values in [0, 255] as they are;
    larger ones by the image's own maximum. Negative values are no pixels (a normalised tensor): refused."""
    values = array.astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not np.isfinite(low) or not np.isfinite(high) or low < 0:
        raise DataError(f"vision.image_column: an image in column {column!r} holds values from {low:.4g} to "
                        f"{high:.4g}, not pixels: store images as 0-255 (or floats in 0-1), before any normalisation")
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # 16-bit, either byte order (PNG's I;16B)
        top = 65535.0
    elif array.dtype.kind == "f" and high <= 1.0:
        top = 1.0
    else:
        top = 255.0 if high <= 255 else high
    return np.rint(values / top * 255.0).astype(np.uint8)


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
    """Image columns stay undecoded in the dataset; `rgb_image` decodes each image when it is used."""
    import datasets

    feature = ds.features.get(column)
    return ds.cast_column(column, datasets.Image(decode=False)) if isinstance(feature, datasets.Image) else ds


def preprocess(splits, processor, spec: TaskSpec):
    """Attach lazy transforms: augmentation on `train`, the backbone's deterministic one elsewhere."""
    column = spec.options.image_column
    evaluate = eval_transform(processor)
    augment = train_transform(data_config(processor), spec.options)
    mix = mixer(spec, splits)

    def train(batch: dict[str, list]) -> dict[str, list]:
        out = {"pixel_values": [augment(rgb_image(im, column)) for im in batch[column]], "labels": batch["labels"]}
        if mix is not None:
            out["mixup"] = [mix] * len(out["labels"])
        return out

    def deterministic(batch: dict[str, list]) -> dict[str, list]:
        return {"pixel_values": evaluate([rgb_image(im, column) for im in batch[column]]), "labels": batch["labels"]}

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
