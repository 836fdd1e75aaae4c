"""Task `image-classification`: timm models or transformers image classifiers under the same Trainer pipeline.

The recipe's `vision:` section (VisionConfig) holds its options; `vision.library` picks the backbone library:

- `timm`: `timm.create_model(name, pretrained=..., num_classes=K)` for a Hub id (`timm/resnet50.a1_in1k`),
  a timm model name, or a local folder in timm's format (config.json + model.safetensors). Preprocessing
  comes from the model's pretrained data config (`resolve_data_config` / `create_transform`). The result
  is saved as timm saves Hub models (`save_for_hf`: timm's state_dict keys, the data config) with a
  config.json that is also transformers' `TimmWrapperConfig` (`model_type: timm_wrapper`, `architectures`,
  the labels, `problem_type`), so both `timm.create_model("local-dir:" + folder, pretrained=True)` and
  `pipeline("image-classification", model=folder)` (TimmWrapperForImageClassification) reload it.
- `transformers`: `AutoModelForImageClassification` + `AutoImageProcessor`; the result reloads with
  `pipeline("image-classification", model=folder)`.

This module holds the model side (backbone, processor, loss, saving) and the task's record; images,
transforms and batches are in `images.py`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from hf_transfer.errors import RecipeError, first_line
from hf_transfer.recipe.typed import INT32_MAX, check_range
from hf_transfer.tasks import classification, image_cache, images, progressive
from hf_transfer.tasks.base import TaskSpec, save_pretrained
from hf_transfer.tasks.classification import classification_loss
from hf_transfer.tasks.data import default_num_workers
from hf_transfer.tasks.images import TimmProcessor, collator, data_config, stochastic_augmentation
from hf_transfer.tasks.inputs import image_inputs
from hf_transfer.tasks.loaders import (
    load_auto_processor, load_error, load_head_model, reorder_head, with_config_overrides,
)


@dataclass
class VisionConfig:
    """The `vision:` section (model.modality: vision). Augmentation applies to training only."""

    library: Literal["timm", "transformers"] = "timm"
    """timm: timm.create_model (Hub id timm/..., a timm name, or a folder with config.json);
    transformers: AutoModelForImageClassification + AutoImageProcessor."""
    image_column: str = "image"
    image_size: int | None = None
    """Square input size in pixels; default: the backbone's own (timm data config / image processor)."""
    train_image_size: int | None = None
    """timm: progressive resizing (fast.ai, FFCV, EfficientNetV2): training batches are resized to this size
    for the first `train_image_size_until` of the training steps, then trained at image_size. A smaller size
    trains faster; evaluation, the saved data config and pipeline() keep image_size. Not for models with a
    fixed input size (ViT)."""
    train_image_size_until: float = 1.0
    """Share of the training steps at train_image_size, in (0, 1]; 1.0: the whole run (timm's `input_size`
    against `test_input_size`)."""
    crop_pct: float | None = None
    """Evaluation centre crop (timm): resize to image_size / crop_pct, then crop; 1.0 keeps the whole image."""
    random_resized_crop: bool = True
    """False: training images are resized whole (no random crop)."""
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    """Area range of the random resized crop."""
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: float | None = None
    auto_augment: str | None = None
    """timm policy (`rand-m9-mstd0.5` = RandAugment, `augmix-m5-w4-d2`, `original`) or `trivialaugment`."""
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.0
    """With mixup / cutmix (timm's Mixup); otherwise use training.label_smoothing_factor."""
    channels_last: bool = True
    """timm models: training batches in channels-last memory format (the convolutions then run channels-last,
    faster on CPU); evaluation batches and the weights keep their layout, so evaluation stays
    bit-identical to pipeline()'s."""
    image_cache: bool | None = None
    """Decode and resize each image once into a uint8 cache (datasets' cache), augment and normalise a batch
    at a time as tensors (image_cache.py); false: decode and transform every image every step with timm's
    PIL transforms; null: the cache wherever it applies (a timm backbone, no color_jitter / auto_augment)."""

    def __post_init__(self) -> None:
        check_range(self.image_size, "vision.image_size", low=1, high=INT32_MAX)
        check_range(self.train_image_size, "vision.train_image_size", low=1, high=INT32_MAX)
        check_range(self.train_image_size_until, "vision.train_image_size_until", low=0, low_open=True, high=1)
        if self.train_image_size and self.library != "timm":
            raise RecipeError("vision.train_image_size needs vision.library timm (a transformers image model "
                              "may not take another size)")
        if self.image_cache and self.library != "timm":
            raise RecipeError("vision.image_cache: true needs vision.library timm (set it to null or false)")
        if self.image_cache and (self.auto_augment or self.color_jitter):
            raise RecipeError("vision.image_cache: true does not apply with vision.auto_augment / vision.color_jitter "
                              "(per-image PIL operations); set it to null or false")


def training_defaults() -> dict[str, Any]:
    """TrainingArguments defaults (a recipe value still wins): the image column must reach the lazy
    transform, so Trainer must not drop columns the model's forward does not name; images are decoded
    and augmented every step, in DataLoader workers sized to the machine."""
    return {"remove_unused_columns": False, "label_names": ["labels"], "dataloader_num_workers": default_num_workers()}


def preprocess(splits, processor, spec: TaskSpec):
    """The uint8 image cache with batch-wise transforms (`vision.image_cache`) where it applies, else
    per-image transforms."""
    if image_cache.wanted(spec, processor):
        return image_cache.preprocess(splits, processor, spec)
    return images.preprocess(splits, processor, spec)


def input_columns(spec: TaskSpec) -> dict[str, str]:
    """Recipe key -> dataset column that the model reads."""
    return {"vision.image_column": spec.options.image_column}


# --------------------------------------------------------------------------- model


class TimmClassifier(nn.Module):
    """A timm model under Trainer's calling convention: `forward(pixel_values, labels)` -> loss, logits."""

    main_input_name = "pixel_values"

    def __init__(self, model: nn.Module, label_names: list[str] | None, problem_type: str,
                 channels_last: bool = False):
        super().__init__()
        self.model = model
        self.label_names = label_names
        self.problem_type = problem_type
        self.channels_last = channels_last
        self.supports_gradient_checkpointing = _timm_checkpointing(model, True)
        if self.supports_gradient_checkpointing:
            _timm_checkpointing(model, False)  # asked, not switched on: Trainer does that when training wants it
        self.is_activation_checkpointing = False
        self.train_crop: int | None = None  # set by progressive resizing's callback while batches are resized

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, every_n_layers=1, offload=False):
        """Trainer's `training.activation_checkpointing`: timm's own checkpointing of the blocks
        (non-reentrant unless TIMM_REENTRANT_CKPT says otherwise, so frozen inputs need no gradient)."""
        self.is_activation_checkpointing = _timm_checkpointing(self.model, True)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import ImageClassifierOutput

        if self.training and self.train_crop and self.train_crop != pixel_values.shape[-1]:
            pixel_values = nn.functional.interpolate(pixel_values, size=(self.train_crop, self.train_crop),
                                                     mode="bilinear", antialias=True)  # vision.train_image_size
        if self.training and self.channels_last:  # vision.channels_last: training batches only
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        logits = self.model(pixel_values)
        loss = None if labels is None else classification_loss(logits, labels, self.problem_type)
        return ImageClassifierOutput(loss=loss, logits=logits)


def callbacks(spec: TaskSpec) -> list:
    """Progressive resizing's schedule (progressive.py) when the recipe sets vision.train_image_size."""
    v = spec.options
    return [progressive.callback(v.train_image_size, v.train_image_size_until)] if v.train_image_size else []


def _timm_checkpointing(model: nn.Module, enable: bool) -> bool:
    """timm's `set_grad_checkpointing(enable)`; False where the architecture has none (e.g. VGG, Inception
    assert it off)."""
    try:
        model.set_grad_checkpointing(enable)
    except (AssertionError, AttributeError, NotImplementedError):
        return False
    return True


def timm_source(name_or_path: str) -> str:
    """A local folder -> `local-dir:PATH`; a Hub id (`org/name`) -> `hf-hub:org/name`; else a timm name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return "local-dir:" + str(path.resolve())
    if name_or_path.startswith(("hf-hub:", "local-dir:")) or "/" not in name_or_path:
        return name_or_path
    return "hf-hub:" + name_or_path


def _timm_create(spec: TaskSpec, pretrained: bool, **kwargs) -> nn.Module:
    import timm

    try:
        return timm.create_model(timm_source(spec.model.name_or_path), pretrained=pretrained, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise load_error(spec.model, "a timm model", err) from None


def _timm_pretrained_cfg(spec: TaskSpec) -> dict[str, Any]:
    """The model's pretrained config (data config, input size) without building its weights."""
    with torch.device("meta"):
        return dict(_timm_create(spec, pretrained=False).pretrained_cfg)


def load_model(spec: TaskSpec, label_names: list[str] | None):
    num_labels = len(label_names) if label_names else 1
    if spec.options.library == "timm":
        kwargs: dict[str, Any] = {"num_classes": num_labels}
        size, source_cfg = spec.options.image_size, _timm_pretrained_cfg(spec)
        if size and source_cfg.get("fixed_input_size"):
            kwargs["img_size"] = size  # e.g. ViT: position embeddings are resampled to the new grid
        model = _timm_create(spec, spec.model.pretrained, **with_config_overrides(spec.model, kwargs))
        if not spec.model.pretrained or source_cfg.get("num_classes") != num_labels:
            _zero_classifier(model)
        elif label_names:  # a classifier of as many classes (a timm run folder): its rows follow label_names
            reorder_head(model, source_cfg.get("label_names"), label_names, spec.model)
        return TimmClassifier(model, label_names, spec.data.problem_type, spec.options.channels_last)
    return _load_transformers_model(spec, label_names, num_labels)


def _zero_classifier(model: nn.Module) -> None:
    """A new head starts at zero (uniform predictions), as in BiT: some timm inits (EfficientNet's)
    give a new head logits large enough to swamp the pretrained features' first updates."""
    for p in model.get_classifier().parameters():
        nn.init.zeros_(p)


def _load_transformers_model(spec: TaskSpec, label_names: list[str] | None, num_labels: int):
    from transformers import AutoModelForImageClassification

    kwargs = classification.head_config(spec, label_names)
    # a new head where the pretrained one predicts other labels (e.g. 1000 ImageNet classes)
    model = load_head_model(AutoModelForImageClassification, spec.model, "an image-classification model",
                            label_names, **kwargs)
    if spec.options.image_size:
        _check_input_size(model, spec)
    return model


def _check_input_size(model, spec: TaskSpec) -> None:
    """Some transformers image models take one input size only (ViT and kin: their position embeddings are
    fixed, and pipeline() passes no interpolate_pos_encoding). One forward of a blank image of
    vision.image_size says so before training, not at the first batch."""
    size, training = spec.options.image_size, model.training
    blank = torch.zeros(1, getattr(model.config, "num_channels", 3), size, size)
    try:
        with torch.no_grad():
            model.eval()(pixel_values=blank)
    except (ValueError, RuntimeError) as err:
        raise RecipeError(f"vision.image_size: {spec.model.name_or_path!r} does not take {size} px images "
                          f"({first_line(err).rstrip('.')}); "
                          "remove vision.image_size to use the model's own size") from None
    finally:
        model.train(training)


def loss(spec: TaskSpec):
    """Trainer's `compute_loss_func` when labels become soft (mixup / cutmix); else the model's own loss."""
    v = spec.options
    if v.mixup_alpha <= 0 and v.cutmix_alpha <= 0:
        return None
    problem_type = spec.data.problem_type

    def compute(outputs, labels, num_items_in_batch=None):
        return classification_loss(outputs["logits"], labels, problem_type)

    return compute


# --------------------------------------------------------------------------- processor


def load_processor(spec: TaskSpec):
    vision = spec.options
    if vision.library == "timm":
        from timm.data import resolve_data_config

        args: dict[str, Any] = {}
        source_cfg = _timm_pretrained_cfg(spec)
        if vision.train_image_size and source_cfg.get("fixed_input_size"):  # checked before any image is read
            raise RecipeError(f"vision.train_image_size: {spec.model.name_or_path} takes one fixed input size; "
                              "remove train_image_size (or set it to image_size)")
        if vision.image_size:
            args["input_size"] = (3, vision.image_size, vision.image_size)
        if vision.crop_pct:
            args["crop_pct"] = vision.crop_pct
        return TimmProcessor(resolve_data_config(args, pretrained_cfg=source_cfg))
    from transformers import AutoImageProcessor

    proc = load_auto_processor(AutoImageProcessor, spec.model, "an image processor")
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


def save(trainer, spec: TaskSpec, out: Path) -> bool:
    """timm models: write timm's Hub folder (save_folder) on the main process. False: let the default
    save run."""
    if spec.options.library != "timm":
        return False
    if trainer.is_world_process_zero():  # a probe on cached features trains the head; the model is export_model
        model = getattr(trainer, "export_model", None) or trainer.accelerator.unwrap_model(trainer.model)
        save_folder(model, trainer.processing_class, spec, out)
    return True


def save_folder(model, processor, spec: TaskSpec, out: Path) -> None:
    """One trained model's folder: timm's Hub format (LoRA merged in) that transformers loads too, or
    (transformers models) the model's and processor's save_pretrained."""
    if spec.options.library != "timm":
        save_pretrained(model, processor, spec, out)
        return
    from timm.models import save_for_hf

    if hasattr(model, "peft_config"):  # merge a copy: the trained model stays usable in memory
        model = copy.deepcopy(model).merge_and_unload()
    label_names = model.label_names
    # the head's class count: a multi-task backbone holds each task's classifier in turn (tasks/multitask.py)
    model.model.num_classes = len(label_names) if label_names else 1
    save_for_hf(
        model.model,
        str(out),
        model_config={"label_names": label_names} if label_names else None,
        safe_serialization=True,
        data_config=data_config(processor),
    )
    write_timm_wrapper_config(out, spec.data.problem_type)


def write_timm_wrapper_config(folder: Path, problem_type: str) -> None:
    """Rewrite timm's config.json through transformers' TimmWrapperConfig, which keeps timm's keys
    (architecture, num_classes, label_names, pretrained_cfg) and adds what transformers needs: model_type,
    the head class in `architectures` and `problem_type` (the pipeline's sigmoid or softmax). timm's
    `model_args.num_classes` goes: TimmWrapperForImageClassification passes the label count itself."""
    from transformers import TimmWrapperConfig

    path = Path(folder) / "config.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw.get("model_args", {}).pop("num_classes", None)
    config = TimmWrapperConfig.from_dict(raw, problem_type=problem_type,
                                         architectures=["TimmWrapperForImageClassification"])
    config.save_pretrained(folder)


def verify_inputs(spec: TaskSpec, split, processor=None):
    """The split's images as the pipeline takes them, in column `inputs`: an image column as it is, arrays (or
    nested lists) as the RGB images training made of them (the pipeline takes no arrays)."""
    import datasets

    column = spec.options.image_column
    inputs = split.select_columns([column]).rename_column(column, "inputs")
    if isinstance(inputs.features["inputs"], datasets.Image):
        return inputs
    return inputs.map(lambda batch: {"inputs": [images.rgb_image(v, column) for v in batch["inputs"]]}, batched=True,
                      features=datasets.Features({"inputs": datasets.Image()}))


TASK = classification.task(
    name="image-classification",
    modality="vision",
    section="vision",
    options=VisionConfig,
    problem_types=classification.PROBLEM_TYPES,
    input_columns=input_columns,
    load_processor=load_processor,
    preprocess=preprocess,
    collator=collator,
    stochastic=stochastic_augmentation,
    training_defaults=training_defaults,
    load_model=load_model,
    loss=loss,
    callbacks=callbacks,
    save=save,
    save_folder=save_folder,
    pipeline_task="image-classification",
    auto_class="AutoModelForImageClassification",
    processor_arg="image_processor",
    read_inputs=image_inputs,
    verify_inputs=verify_inputs,
)
