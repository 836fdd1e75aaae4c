"""The typed recipe schema: one dataclass per YAML section.

A recipe is YAML with the sections `model`, `data`, `finetune`, `training` and `hub`, and the optional
`vision` / `speech` (the modality's options), `distill`, `domain`, `tasks`, `cv`, `compare`.
Every section except `training` is a dataclass below; `training` is handed to
`transformers.TrainingArguments` and checked against that class's own fields, so it is not
re-modelled here. `finetune` is one of STRATEGY_CONFIGS, chosen by its `strategy` key; a modality's
section is its entry of MODALITIES. Reading YAML into these classes (unknown keys, wrong types,
cross-section rules) is `hf_transfer.config`; a class's `__post_init__` checks only rules within its
own section. Every error names the key path and fits on one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from hf_transfer.errors import RecipeError


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
