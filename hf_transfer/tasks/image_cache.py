"""The vision fast path (`vision.image_cache`): images decoded and resized once into a uint8 cache, then
augmented and normalised a batch at a time as tensors.

- **The cache** is datasets' own: `Dataset.map` writes each image once, as the raw bytes of a fixed-shape
  (3, H, W) uint8 array, into an Arrow file beside the data's, under a fingerprint of the split's
  fingerprint and of everything that shapes the bytes (size, interpolation, crop, role). Other data or
  another size make a new cache; a second run with the same ones reads the first's (`Dataset.map`
  logs "Loading cached processed dataset").
- **Evaluation splits** hold what timm's evaluation transform (the saved folder's, so pipeline()'s)
  makes of each image before tensor conversion (resize, centre crop: `create_transform(...,
  use_prefetcher=True)`); `x / 255`, normalised, is then bit for bit the tensor that transform gives.
- **The training split** holds each whole image resized to the input size (squashed to it when not of
  its shape), with the image's original width and height. `augment` transforms a batch in one
  `grid_sample` call: per image a random-resized-crop box drawn as timm's
  `RandomResizedCropAndInterpolation` draws it (area `vision.scale`, log-uniform aspect 3/4..4/3,
  10 tries then the centre crop, on the original size), flips `vision.hflip` / `vision.vflip`.

Differences from the per-image path (`images.py`, `vision.image_cache: false`): a crop is cut from the
cached image rather than the original, so a small crop of an image much larger than the input size is
blurrier (the original's detail beyond the input size is gone); PyTorch's bicubic kernel (a = -0.75)
against PIL's (a = -0.5), in float without rounding to uint8 between crop and normalisation. Colour
jitter and auto-augment policies (PIL operations) are not batch-wise here: with them, or a transformers
image processor, `vision.image_cache: null` uses the per-image path.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hf_transfer.errors import RecipeError
from hf_transfer.tasks.base import TaskSpec
from hf_transfer.tasks.images import TimmProcessor, _undecoded, mixer, rgb_image

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # raise when the bytes written for the same inputs change
RATIO = (3 / 4, 4 / 3)  # timm's and torchvision's random-resized-crop aspect range
MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}  # timm name -> grid_sample mode
PIL_FILTERS = {"bilinear": 2, "bicubic": 3, "nearest": 0}


# --------------------------------------------------------------------------- when it applies


def unsupported(spec: TaskSpec, processor) -> str | None:
    """Why the fast path cannot run this recipe, or None when it can."""
    v = spec.options
    if not isinstance(processor, TimmProcessor):
        return "vision.library transformers (its image processor is not timm's transform)"
    if v.auto_augment or v.color_jitter:
        return "vision.auto_augment / vision.color_jitter (per-image PIL operations)"
    if processor.data_config.get("interpolation", "bilinear") not in MODES:
        return f"interpolation {processor.data_config.get('interpolation')!r}"
    return None


def wanted(spec: TaskSpec, processor) -> bool:
    """`vision.image_cache` true / null where it applies; true where it does not is a RecipeError."""
    switch = spec.options.image_cache
    if switch is False:
        return False
    why = unsupported(spec, processor)
    if why and switch:
        raise RecipeError(f"vision.image_cache: true does not apply with {why}; set it to null or false")
    if why:
        log.info("vision.image_cache: per-image transforms (not cached) with %s", why)
    return why is None


# --------------------------------------------------------------------------- the cache


def _fingerprint(ds, *params: Any) -> str:
    from datasets.fingerprint import Hasher

    return Hasher.hash([ds._fingerprint, CACHE_VERSION, *params])


def _eval_bytes(cfg: dict[str, Any]):
    """Image -> (C, H, W) uint8 bytes as timm's evaluation transform makes it before tensor conversion."""
    from timm.data import create_transform

    tf = create_transform(**cfg, is_training=False, use_prefetcher=True)
    return lambda image: np.ascontiguousarray(np.asarray(tf(image), dtype=np.uint8)).tobytes()


def _train_bytes(cfg: dict[str, Any]):
    """Image -> the whole image resized to the input size, (C, H, W) uint8 bytes."""
    _, height, width = cfg["input_size"]
    resample = PIL_FILTERS[cfg.get("interpolation", "bilinear")]
    return lambda image: np.asarray(image.resize((width, height), resample), dtype=np.uint8).transpose(2, 0, 1).tobytes()


def cache_split(ds, column: str, cfg: dict[str, Any], train: bool):
    """`ds` with column `pixels` (uint8 bytes) and, for training, `size` (original width, height) in place of
    its images; `labels` kept; stored once in datasets' cache under a fingerprint of data and sizes."""
    ds = _undecoded(ds, column)
    encode = (_train_bytes if train else _eval_bytes)(cfg)
    keys = ("input_size", "interpolation", "crop_pct", "crop_mode")

    def cache(batch: dict[str, list]) -> dict[str, list]:
        images = [rgb_image(im, column) for im in batch[column]]
        out = {"pixels": [encode(im) for im in images]}
        return out | ({"size": [list(im.size) for im in images]} if train else {})

    params = ["train" if train else "eval", column, {k: cfg.get(k) for k in keys}]
    return ds.map(cache, batched=True, batch_size=64, remove_columns=[c for c in ds.column_names if c != "labels"],
                  new_fingerprint=_fingerprint(ds, *params), desc=f"cache {'training' if train else 'evaluation'} images")


def pixels(batch: dict[str, list], shape: tuple[int, int, int]) -> torch.Tensor:
    """A batch's cached bytes as one (B, C, H, W) uint8 tensor."""
    return torch.from_numpy(np.stack([np.frombuffer(b, dtype=np.uint8).reshape(shape) for b in batch["pixels"]]))


# --------------------------------------------------------------------------- batch-wise transforms


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (or 0..255 float) -> float / 255, normalised: the same operations as ToTensor + Normalize."""
    x = x.float().div(255) if x.dtype == torch.uint8 else x.div(255)
    mean = torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return x.sub_(mean).div_(std)


def crop_boxes(sizes: torch.Tensor, scale, ratio=RATIO, tries: int = 10) -> torch.Tensor:
    """Per image a random-resized-crop box as fractions (x0, y0, x1, y1) of its width and height, drawn on
    its original (width, height) as timm's RandomResizedCropAndInterpolation.get_params draws it."""
    n = len(sizes)
    w_img, h_img = sizes[:, 0:1].double(), sizes[:, 1:2].double()
    area = w_img * h_img * torch.empty(n, tries, dtype=torch.float64).uniform_(*scale)
    aspect = torch.exp(torch.empty(n, tries, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    ok = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = ok.int().argmax(1, keepdim=True)  # the first try that fits
    w, h = w.gather(1, first), h.gather(1, first)
    top = torch.floor(torch.rand(n, 1, dtype=torch.float64) * (h_img - h + 1))
    left = torch.floor(torch.rand(n, 1, dtype=torch.float64) * (w_img - w + 1))
    # no try fits: the whole image, its aspect clamped to the range, centred
    in_ratio = w_img / h_img
    fw = torch.where(in_ratio < ratio[0], w_img, torch.where(in_ratio > ratio[1], torch.round(h_img * ratio[1]), w_img))
    fh = torch.where(in_ratio < ratio[0], torch.round(w_img / ratio[0]), h_img)
    fits = ok.any(1, keepdim=True)
    w, h = torch.where(fits, w, fw), torch.where(fits, h, fh)
    top = torch.where(fits, top, torch.div(h_img - h, 2, rounding_mode="floor"))
    left = torch.where(fits, left, torch.div(w_img - w, 2, rounding_mode="floor"))
    return torch.cat([left / w_img, top / h_img, (left + w) / w_img, (top + h) / h_img], 1).float()


def augment(x: torch.Tensor, sizes: torch.Tensor | None, vision, mode: str) -> torch.Tensor:
    """A uint8 (B, C, H, W) training batch -> float 0..255, each image randomly crop-resized (when
    `vision.random_resized_crop`) and flipped, in one grid_sample call."""
    n = len(x)
    flip_x = torch.rand(n) < vision.hflip
    flip_y = torch.rand(n) < vision.vflip
    if not vision.random_resized_crop:
        x = torch.where(flip_x.view(-1, 1, 1, 1), x.flip(-1), x)
        return torch.where(flip_y.view(-1, 1, 1, 1), x.flip(-2), x).float()
    x0, y0, x1, y1 = crop_boxes(sizes, vision.scale).unbind(1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = (x1 - x0) * torch.where(flip_x, -1.0, 1.0)
    theta[:, 0, 2] = x0 + x1 - 1
    theta[:, 1, 1] = (y1 - y0) * torch.where(flip_y, -1.0, 1.0)
    theta[:, 1, 2] = y0 + y1 - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode=mode, padding_mode="border", align_corners=False)
    return out.clamp_(0, 255) if mode == "bicubic" else out


# --------------------------------------------------------------------------- datasets, batches


def preprocess(splits, processor: TimmProcessor, spec: TaskSpec):
    """Cache every split's images once; attach batch-wise transforms: augmentation on `train`, timm's
    evaluation preprocessing elsewhere."""
    cfg, vision = processor.data_config, spec.options
    shape = tuple(cfg["input_size"])
    mode = MODES[cfg.get("interpolation", "bilinear")]
    mix = mixer(spec, splits)

    def train(batch: dict[str, list]) -> dict[str, Any]:
        sizes = torch.tensor(batch["size"]) if vision.random_resized_crop else None
        x = normalize(augment(pixels(batch, shape), sizes, vision, mode), cfg["mean"], cfg["std"])
        out = {"pixel_values": x, "labels": batch["labels"]}
        return out | ({"mixup": [mix] * len(x)} if mix is not None else {})

    def deterministic(batch: dict[str, list]) -> dict[str, Any]:
        return {"pixel_values": normalize(pixels(batch, shape), cfg["mean"], cfg["std"]), "labels": batch["labels"]}

    out = {}
    for role, ds in splits.items():
        cached = cache_split(ds, vision.image_column, cfg, train=role == "train")
        out[role] = cached.with_transform(train if role == "train" else deterministic)
    log.info("vision.image_cache: images cached as uint8 %s, augmented and normalised per batch", "x".join(map(str, shape)))
    return type(splits)(out)
