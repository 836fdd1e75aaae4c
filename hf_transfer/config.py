"""Recipe schema, YAML loading and `a.b.c=value` overrides.

A recipe is YAML with the sections `model`, `data`, `finetune`, `training` and `hub`.
Every section except `training` is a dataclass below; `training` is handed to
`transformers.TrainingArguments` and checked against that class's own fields, so it is not
re-modelled here. Every error names the key path and fits on one line.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hf_transfer.errors import RecipeError


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """Safe loader that reads scalars the YAML 1.2 way: `2e-5` is a float, `no`/`on` are strings."""


_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_12, list("tTfF"))


def parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"{where}: invalid YAML{at}: {problem}") from None


# --------------------------------------------------------------------------- schema


@dataclass
class ModelConfig:
    name_or_path: str
    """Hub id (e.g. google-bert/bert-base-uncased) or a local model folder."""
    modality: str = "text"
    """One of MODALITIES (text, ...); a modality with options reads them from its own section."""
    pretrained: bool = True
    """False: same architecture from random initialisation (the transfer baseline)."""
    revision: str | None = None
    trust_remote_code: bool = False
    """Run Python code shipped with a Hub model. Only for models you trust."""
    allow_pickle: bool = False
    """Accept pickled (.bin) weights when no safetensors exist; loaded with weights_only=True."""
    max_length: int = 128
    """Tokenizer truncation length (text)."""
    config_overrides: dict[str, Any] | None = None
    """Extra keyword arguments for the model's config / constructor, e.g. {num_hidden_layers: 2} to cut a
    pretrained 6-layer model to its first 2 layers (a distillation student); timm: create_model kwargs."""


@dataclass
class DataConfig:
    path: str
    """Hub dataset id, or a loader name (csv, json, parquet) used with `data_files`."""
    name: str | None = None
    """Hub dataset configuration (e.g. `sst2` of nyu-mll/glue)."""
    data_files: dict[str, str] | None = None
    """Split name -> local file, for csv/json/parquet."""
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str | list[str] = "label"
    """One column; or, for multi_label, a list of 0/1 columns (one per label)."""
    problem_type: Literal[
        "single_label_classification", "multi_label_classification", "regression"
    ] = "single_label_classification"
    label_names: list[str] | None = None
    """Ordered label names; default: the dataset's ClassLabel names or the sorted values."""
    train_split: str = "train"
    validation_split: str | None = "validation"
    """Absent from the dataset (or null): carved out of the training split."""
    test_split: str | None = "test"
    validation_size: float = 0.1
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    class_weights: Literal["auto"] | list[float] | None = None
    """Class-weighted cross-entropy (single-label): `auto` = inverse class frequency of the training split,
    normalised to mean 1; or one weight per label, in label order."""

    def __post_init__(self) -> None:
        weights = self.class_weights
        if weights is not None and self.problem_type != "single_label_classification":
            raise RecipeError(
                f"data.class_weights: needs problem_type single_label_classification, got {self.problem_type!r}"
            )
        if isinstance(weights, list) and (not weights or min(weights) < 0 or not sum(weights) > 0):
            raise RecipeError(f"data.class_weights: expected `auto` or non-negative weights, got {weights!r}")
        if isinstance(weights, list) and self.label_names and len(weights) != len(self.label_names):
            raise RecipeError(
                f"data.class_weights: {len(weights)} weights for {len(self.label_names)} labels {self.label_names}"
            )


@dataclass
class FullConfig:
    strategy: Literal["full"] = "full"
    layer_decay: float | None = None
    """Layer-wise LR decay: LR = learning_rate × layer_decay^(depth from the top); head at learning_rate."""
    l2sp: float = 0.0
    """L2-SP: add l2sp/2 · ||w − w_pretrained||² over the backbone's weights to the loss."""


@dataclass
class PartialConfig:
    strategy: Literal["partial"] = "partial"
    freeze: Literal["backbone"] | int = "backbone"
    """`backbone`: only the head trains (linear probe); N: embeddings + the first N blocks freeze."""
    cache_features: bool | None = None
    """Linear probe on cached backbone features (computed once, on disk). null: whenever possible."""
    l2sp: float = 0.0
    """L2-SP (see full); only the unfrozen backbone weights are pulled back."""


@dataclass
class LoraConfig:
    strategy: Literal["lora"] = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] | str | None = None
    """None: PEFT's default for the architecture, else every linear layer of the backbone."""
    merge: bool = False
    """Also save the adapter merged into a plain model under `merged/`."""
    use_dora: bool = False
    """DoRA: weight-decomposed LoRA (PEFT's `use_dora`)."""


@dataclass
class StagedConfig:
    strategy: Literal["staged"] = "staged"
    head_epochs: int = 1
    """Epochs with only the head training (the backbone frozen)."""
    unfreeze: Literal["all"] | int = "all"
    """What unfreezes after head_epochs: `all`, or the top k blocks (plus the layers above them)."""
    milestones: dict[str, Literal["all"] | int] | None = None
    """Later stages: {epoch: blocks unfrozen from that epoch on}, e.g. {3: 4, 5: all}."""
    unfreeze_lr: float | None = None
    """Learning rate of every group once the backbone starts unfreezing (null: learning_rate)."""
    layer_decay: float | None = None
    """Layer-wise LR decay (see full), applied to unfreeze_lr."""
    l2sp: float = 0.0
    """L2-SP (see full)."""


@dataclass
class IA3Config:
    strategy: Literal["ia3"] = "ia3"
    target_modules: list[str] | str | None = None
    """None: PEFT's default for the architecture."""
    feedforward_modules: list[str] | str | None = None
    merge: bool = False


@dataclass
class AdaLoraConfig:
    strategy: Literal["adalora"] = "adalora"
    init_r: int = 12
    target_r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    tinit: int = 0
    """Steps before rank pruning starts."""
    tfinal: int = 0
    """Steps at the end with the ranks fixed."""
    deltaT: int = 1
    """Steps between two rank re-allocations."""
    target_modules: list[str] | str | None = None
    merge: bool = False


@dataclass
class LoHaConfig:
    strategy: Literal["loha"] = "loha"
    r: int = 8
    alpha: int = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    merge: bool = False


@dataclass
class LoKrConfig:
    strategy: Literal["lokr"] = "lokr"
    r: int = 8
    alpha: int = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    merge: bool = False


STRATEGY_CONFIGS: dict[str, type] = {
    "full": FullConfig,
    "partial": PartialConfig,
    "lora": LoraConfig,
    "staged": StagedConfig,
    "ia3": IA3Config,
    "adalora": AdaLoraConfig,
    "loha": LoHaConfig,
    "lokr": LoKrConfig,
}


@dataclass
class SpeechConfig:
    """The recipe's `speech:` section (model.modality: speech)."""

    audio_column: str = "audio"
    """Column holding the audio: a file path, or a datasets `Audio` value; decoded with soundfile."""
    max_duration: float | None = None
    """Seconds the model sees: training crops a random window, evaluation the centre; shorter clips
    are padded. None: whole clips (padded per batch)."""
    sampling_rate: int | None = None
    """Rate the model is fed; default the feature extractor's. Another value rebuilds the extractor."""
    short_whisper_input: bool = True
    """Whisper: feed max_duration (rounded up to whole seconds) instead of 30 s, keeping the first
    rows of the encoder's position table. False: the 30 s input Whisper was trained on."""
    freeze_feature_encoder: bool = True
    """wav2vec2-style models (wav2vec2, HuBERT, WavLM): the convolutional feature encoder stays frozen."""
    noise_snr_db: float | list[float] | None = None
    """Training augmentation: white noise at this SNR in dB, or at one drawn from [low, high]."""
    gain_db: float | None = None
    """Training augmentation: gain drawn from [-gain_db, +gain_db] dB."""
    time_shift: float | None = None
    """Training augmentation: shift by up to +-time_shift seconds (zero-filled)."""

    def __post_init__(self) -> None:
        for key in ("max_duration", "sampling_rate", "gain_db", "time_shift"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise RecipeError(f"speech.{key}: must be positive, got {value!r}")
        snr = self.noise_snr_db
        if isinstance(snr, list) and (len(snr) != 2 or snr[0] > snr[1]):
            raise RecipeError(f"speech.noise_snr_db: expected a number or [low, high], got {snr!r}")


@dataclass
class VisionConfig:
    """The `vision:` section (model.modality: vision). Augmentation applies to training only."""

    library: Literal["timm", "transformers"] = "timm"
    """timm: timm.create_model (Hub id timm/..., a timm name, or a folder with config.json);
    transformers: AutoModelForImageClassification + AutoImageProcessor."""
    image_column: str = "image"
    image_size: int | None = None
    """Square input size in pixels; default: the backbone's own (timm data config / image processor)."""
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


# modality -> dataclass of its own recipe section (the section is named after the modality), or
# None when it has no options. Adding a modality: one entry here, one in train.MODALITIES.
MODALITIES: dict[str, type | None] = {
    "text": None,
    "speech": SpeechConfig,
    "vision": VisionConfig,
}


@dataclass
class DistillConfig:
    """The `distill:` section: a fine-tuned teacher supervises the model being trained (the student)."""

    teacher: str
    """Output folder of a fine-tuned run, or a Hub id; loaded like the student (same modality settings)."""
    alpha: float = 0.5
    """loss = alpha * task loss + (1 - alpha) * T^2 * KL(teacher || student), both softened by T."""
    temperature: float = 2.0
    cache_logits: bool | None = None
    """Compute the teacher's logits once (training inputs must be deterministic); null: whenever possible."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise RecipeError(f"distill.alpha: must be in [0, 1], got {self.alpha!r}")
        if not self.temperature > 0:
            raise RecipeError(f"distill.temperature: must be positive, got {self.temperature!r}")


@dataclass
class DomainTargetConfig:
    """Unlabelled target-domain data, read like the `data` section (same input and label columns)."""

    path: str
    """Hub dataset id, or a loader name (csv, json, parquet, imagefolder) used with `data_files`."""
    name: str | None = None
    data_files: dict[str, str] | None = None
    split: str = "train"
    """Split trained on (its labels, if any, are never used in training)."""
    eval_split: str | None = None
    """Labelled split evaluated after training (metrics `target`); default: `split`, when it has labels."""
    max_samples: int | None = None
    """At most this many examples of each target split."""


@dataclass
class DomainConfig:
    """The `domain:` section: domain adaptation towards unlabelled target data."""

    method: Literal["dann", "mmd"]
    """dann: domain classifier through a gradient reversal layer; mmd: multi-kernel Gaussian MMD."""
    target: DomainTargetConfig
    weight: float = 1.0
    """Weight of the domain loss added to the task loss."""
    hidden_size: int = 256
    """dann: width of the domain classifier's hidden layer."""
    kernel_multipliers: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    """mmd: Gaussian bandwidths as multiples of the median pairwise squared distance."""

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise RecipeError(f"domain.weight: must be non-negative, got {self.weight!r}")
        if self.hidden_size < 1:
            raise RecipeError(f"domain.hidden_size: must be positive, got {self.hidden_size!r}")
        if not self.kernel_multipliers or min(self.kernel_multipliers) <= 0:
            raise RecipeError(f"domain.kernel_multipliers: expected positive numbers, got {self.kernel_multipliers!r}")


@dataclass
class HubConfig:
    push: bool = False
    """Push the output folder to the Hub after the local save (see hf_transfer.hub)."""
    repo_id: str | None = None
    private: bool = True
    revision: str | None = None
    """Branch to push to (created if missing); default: main."""
    base_model: str | None = None
    """Hub id of the base model when model.name_or_path is a local folder (card, adapter config)."""
    merged_repo_id: str | None = None
    """LoRA with merge: push merged/ to this repo; default: merged/ stays a subfolder."""


@dataclass
class TaskConfig:
    """One entry of the recipe's `tasks:` list (multi-task: one shared backbone, a head per task)."""

    name: str
    """Metric prefix (eval_<name>_accuracy) and the task's output folder (<output_dir>/<name>)."""
    label_column: str
    weight: float = 1.0
    """The task's loss counts weight × its mean loss in the total."""
    problem_type: Literal["single_label_classification", "regression"] = "single_label_classification"
    label_names: list[str] | None = None
    """Ordered label names; default: the sorted values of the training split."""
    min_count: int | None = None
    """Classes with fewer training rows than this are rare (see `rare`)."""
    top_k: int | None = None
    """Keep the k most frequent training classes; the others are rare (see `rare`)."""
    rare: Literal["other", "ignore"] = "other"
    """Rare (and unseen) classes become one class `other`, or count as missing labels."""


@dataclass
class CVConfig:
    """The recipe's `cv:` section: k-fold cross-validation over the training split."""

    folds: int
    seed: int = 42
    """Seed of the fold assignment (training.seed still seeds the training)."""
    fold: int | None = None
    """Train this one fold only (0-based); set in each fold's saved recipe.yaml."""


@dataclass
class Recipe:
    model: ModelConfig
    data: DataConfig
    finetune: Any = field(default_factory=FullConfig)
    """One of STRATEGY_CONFIGS, chosen by `finetune.strategy`."""
    training: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of transformers.TrainingArguments."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement of metric_for_best_model."""
    nan_policy: Literal["stop", "skip"] = "stop"
    """A non-finite training loss stops the run (naming the step), or skips that batch."""
    hub: HubConfig = field(default_factory=HubConfig)
    verify: bool = True
    """After training, reload the folder as a Hub user would and re-check its metrics."""
    vision: Any = None
    """Options of the vision modality (see MODALITIES); None for other modalities."""
    speech: Any = None
    """Options of the speech modality (see MODALITIES); None for other modalities."""
    compare: list[str | dict[str, dict[str, Any]]] | None = None
    """Transfer report: runs to compare against, e.g. [scratch, linear_probe, majority] (see report.py)."""
    distill: DistillConfig | None = None
    """Knowledge distillation from a teacher (see hf_transfer/distill.py)."""
    domain: DomainConfig | None = None
    """Domain adaptation with unlabelled target data (see hf_transfer/domain.py)."""
    tasks: list[TaskConfig] | None = None
    """Multi-task: a head per task on one shared backbone (see multitask.py); replaces data.label_column."""
    cv: CVConfig | None = None
    """k-fold cross-validation (see cv.py)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, path: str) -> Any:
    """Return `value` converted to `tp`, or raise RecipeError naming `path`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in sorted(args, key=lambda a: a is str):  # try str last: it accepts little
            try:
                return _check_value(value, arg, path)
            except RecipeError:
                continue
        raise RecipeError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise RecipeError(f"{path}: expected one of {', '.join(map(repr, args))}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is list:
        if isinstance(value, list):
            return [_check_value(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return {str(k): _check_value(v, args[1], f"{path}.{k}") for k, v in value.items()}
    elif dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(tp, type) and issubclass(tp, str) and tp is not str:  # str enums
        if isinstance(value, str):
            return value
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:
        return value  # an annotation we do not check (e.g. a callable)
    raise RecipeError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise RecipeError(
                f"{path}.{key}: unknown key (allowed: {', '.join(fields)})".lstrip(".")
            )
    kwargs = {}
    for name, f in fields.items():
        where = f"{path}.{name}".lstrip(".")
        if name in data:
            kwargs[name] = _check_value(data[name], hints[name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{where}: required key is missing")
    return cls(**kwargs)


def _build_finetune(data: Any) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"finetune: expected a mapping, got {data!r}")
    strategy = data.get("strategy", "full")
    if strategy not in STRATEGY_CONFIGS:
        raise RecipeError(
            f"finetune.strategy: unknown strategy {strategy!r} "
            f"(choose from {', '.join(STRATEGY_CONFIGS)})"
        )
    cls = STRATEGY_CONFIGS[strategy]
    allowed = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in allowed:
            raise RecipeError(
                f"finetune.{key}: not an option of strategy {strategy!r} "
                f"(its options: {', '.join(sorted(allowed))})"
            )
    return build(cls, data, "finetune")


SECRET_FIELDS = ("hub_token",)  # would be pickled into checkpoints' training_args.bin


def _check_training(data: Any) -> dict[str, Any]:
    from transformers import TrainingArguments  # deferred: heavy import

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"training: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
    hints = typing.get_type_hints(TrainingArguments)
    out = {}
    for key, value in data.items():
        if key not in fields:
            raise RecipeError(f"training.{key}: not a transformers.TrainingArguments field")
        if key in SECRET_FIELDS and value:
            raise RecipeError(
                f"training.{key}: never put tokens in a recipe; set HF_TOKEN or run `hf auth login`"
            )
        out[key] = _check_value(value, hints.get(key, Any), f"training.{key}")
    return out


def validate(raw: Any) -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe: expected a mapping of sections, got {raw!r}")
    sections = {f.name for f in dataclasses.fields(Recipe)}
    for key in raw:
        if key not in sections:
            raise RecipeError(f"{key}: unknown section (allowed: {', '.join(sections)})")
    for key in ("model", "data"):
        if key not in raw:
            raise RecipeError(f"{key}: required section is missing")
    model = build(ModelConfig, raw["model"], "model")
    if model.modality not in MODALITIES:
        raise RecipeError(
            f"model.modality: unknown modality {model.modality!r} (choose from {', '.join(MODALITIES)})"
        )
    sections = {}
    for name in ("vision", "speech"):
        cls = MODALITIES.get(name)
        if raw.get(name) is not None and model.modality != name:  # a saved recipe has `vision: null`
            raise RecipeError(f"{name}: section only applies with model.modality: {name}")
        if model.modality == name and cls is not None:
            sections[name] = build(cls, raw.get(name), name)
    recipe = Recipe(
        model=model,
        data=build(DataConfig, raw["data"], "data"),
        finetune=_build_finetune(raw.get("finetune")),
        training=_check_training(raw.get("training")),
        early_stopping_patience=_check_value(
            raw.get("early_stopping_patience"), int | None, "early_stopping_patience"
        ),
        nan_policy=_check_value(raw.get("nan_policy", "stop"), Literal["stop", "skip"], "nan_policy"),
        hub=_build_hub(raw.get("hub")),
        verify=_check_value(raw.get("verify", True), bool, "verify"),
        compare=_check_compare(raw),
        **_build_objectives(raw),
        tasks=None if raw.get("tasks") is None else _check_value(raw["tasks"], list[TaskConfig], "tasks"),
        cv=None if raw.get("cv") is None else build(CVConfig, raw["cv"], "cv"),
        **sections,
    )
    from hf_transfer import cv, multitask  # each checks its section against the rest of the recipe

    multitask.check(recipe)
    cv.check(recipe)
    return recipe


def _build_objectives(raw: dict[str, Any]) -> dict[str, Any]:
    """The optional `distill` and `domain` sections (training objectives added to the task loss)."""
    sections = {"distill": DistillConfig, "domain": DomainConfig}
    out = {key: None if raw.get(key) is None else build(cls, raw[key], key) for key, cls in sections.items()}
    problem = (raw.get("data") or {}).get("problem_type", "single_label_classification")
    if out["distill"] is not None and problem != "single_label_classification":
        raise RecipeError(f"distill: needs data.problem_type single_label_classification, got {problem!r}")
    finetune = raw.get("finetune") or {}
    if out["domain"] is not None and finetune.get("strategy") == "partial" and finetune.get("freeze", "backbone") == "backbone":
        raise RecipeError("domain: the backbone is frozen (finetune.freeze: backbone), so its features cannot adapt")
    if any(out.values()) and finetune.get("cache_features"):
        raise RecipeError("finetune.cache_features: not available with distill or domain (they need the backbone's forward)")
    return out


def _build_hub(data: Any) -> HubConfig:
    hub = build(HubConfig, data, "hub")
    if hub.push and not hub.repo_id:
        raise RecipeError("hub.repo_id: required when hub.push is true")
    return hub


def _check_compare(raw: dict[str, Any]) -> Any:
    value = _check_value(raw.get("compare"), typing.get_type_hints(Recipe)["compare"], "compare")
    if value:
        from hf_transfer.report import check_compare  # the report module owns the variants

        check_compare(raw, value)
    return value


# --------------------------------------------------------------------------- loading


def apply_override(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `raw[a][b][c] = value` for `dotted == "a.b.c"`, creating sections as needed."""
    keys = dotted.split(".")
    if not all(keys):
        raise RecipeError(f"{dotted}: malformed override key")
    node = raw
    for i, key in enumerate(keys[:-1]):
        nxt = node.get(key)
        if nxt is None:
            nxt = node[key] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"{'.'.join(keys[: i + 1])}: is not a section, cannot set {dotted}")
        node = nxt
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b.c=value` -> ("a.b.c", value parsed as YAML 1.2)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise RecipeError(f"{text}: an override must look like section.key=value")
    return key.strip(), parse_yaml(value, f"override {key}") if value.strip() else None


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: cannot read recipe ({err.__class__.__name__})") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raise RecipeError(f"{path}: recipe is empty")
    return raw


def load_recipe(
    source: str | Path | dict[str, Any] | Recipe,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Recipe:
    """Load a recipe from a YAML path, a dict or a Recipe, apply overrides, validate."""
    if isinstance(source, Recipe):
        source = source.to_dict()
    if isinstance(source, (str, Path)):
        raw = read_recipe_file(source)
    else:
        raw = copy.deepcopy(source)
    if isinstance(overrides, dict):
        pairs = list(overrides.items())
    else:
        pairs = [parse_override(o) for o in overrides or []]
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe: expected a mapping of sections, got {raw!r}")
    for key, value in pairs:
        apply_override(raw, key, value)
    return validate(raw)


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML, with secret-looking values (tokens) redacted."""
    from hf_transfer.guards import redact

    return yaml.safe_dump(redact(recipe.to_dict()), sort_keys=False)
