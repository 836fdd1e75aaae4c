"""The typed recipe schema: one dataclass per YAML section shared by every task.

A recipe is YAML with the sections `model`, `data`, `finetune`, `training` and `hub`, the optional
`task`, `distill`, `domain`, `tasks`, `cv`, `curve`, `compare`, `seeds`, `rank`, `tune`, and the task's
own section (`vision`, `speech`, ...). The sections below are the shared ones. `finetune` is the chosen
strategy's options (its record in `hf_transfer.strategies`); the task's section is its record's `options`
(`hf_transfer.tasks`). `training` is handed to `transformers.TrainingArguments` and checked against that
class's own fields, so it is not re-modelled here. Reading YAML into these classes (unknown keys, wrong
types, every rule that spans sections) is `hf_transfer.validate`; a class's `__post_init__` checks only
rules within its own section. Every error names the key path and fits on one line.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from hf_transfer.errors import RecipeError
from hf_transfer.recipe.typed import INT32_MAX, check_range


@dataclass
class ModelConfig:
    name_or_path: str
    """Hub id (e.g. google-bert/bert-base-uncased) or a local model folder."""
    modality: str = "text"
    """text, vision or speech. Without a recipe `task`, it picks the modality's classification task;
    with one, it is the task's modality."""
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
    fast_dropout: bool = True
    """Training on a CPU: dropout and attention dropout draw their masks from 16 random bits an element, four
    elements to one draw of torch's generator, with dropout's distribution (hf_transfer/dropout.py); it
    applies to eager CPU training without activation checkpointing. false: torch's own dropout."""

    def __post_init__(self) -> None:
        check_range(self.max_length, "model.max_length", low=1, high=INT32_MAX)


def file_patterns(value: str | list[str]) -> list[str]:
    """One split's `data_files` entry (a file, a glob, or a list of them) as a list."""
    return [value] if isinstance(value, str) else list(value)


def check_data_files(files: dict[str, str | list[str]] | None, key: str) -> None:
    for split, value in (files or {}).items():
        patterns = file_patterns(value)
        if not patterns or not all(p.strip() for p in patterns):
            raise RecipeError(f"{key}.{split}: empty; name a file, a glob or a list of them")


STREAM_EVAL_SAMPLES = 1000  # data.streaming: rows of validation / test evaluated when max_eval_samples is unset


@dataclass
class DataConfig:
    path: str
    """Hub dataset id, or a loader name (csv, json, parquet) used with `data_files`."""
    name: str | None = None
    """Hub dataset configuration (e.g. `sst2` of nyu-mll/glue)."""
    data_files: dict[str, str | list[str]] | None = None
    """Split name -> local file, glob or list of them (as datasets' `data_files`), for the local loaders."""
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str | list[str] = "label"
    """One column; or, for multi_label, a list of 0/1 columns (one per label)."""
    problem_type: Literal[
        "single_label_classification", "multi_label_classification", "regression"
    ] = "single_label_classification"
    label_names: list[str] | None = None
    """Ordered label names; default: the dataset's ClassLabel names or the sorted values (numbers as numbers).
    Labels are matched by value; integers count as class ids 0..n-1 only for a ClassLabel column or when
    they name no label here."""
    label_separator: str | None = None
    """Multi-label from one text column: the separator between labels (e.g. `;` in `pain;day`)."""
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
    streaming: bool = False
    """Read the dataset as a stream (`datasets.IterableDataset`): nothing is downloaded or converted
    ahead, so it may be larger than the disk. Needs `training.max_steps`; validation and test are their
    first `max_eval_samples` rows (default STREAM_EVAL_SAMPLES), held in memory."""
    shuffle_buffer: int = 1000
    """Streaming: the training rows are shuffled within a buffer of this many rows (seeded by training.seed)."""

    def __post_init__(self) -> None:
        if self.label_names is not None and len({str(n) for n in self.label_names}) != len(self.label_names):
            repeated = sorted({str(n) for n in self.label_names if [str(m) for m in self.label_names].count(str(n)) > 1})
            raise RecipeError(f"data.label_names: {', '.join(map(repr, repeated))} listed twice")
        if self.label_separator is not None and not self.label_separator.strip():
            raise RecipeError(f"data.label_separator: must be a visible separator, got {self.label_separator!r}")
        check_data_files(self.data_files, "data.data_files")
        check_range(self.validation_size, "data.validation_size", low=0, high=1, low_open=True, high_open=True)
        for key in ("max_train_samples", "max_eval_samples", "shuffle_buffer"):
            check_range(getattr(self, key), f"data.{key}", low=1, high=INT32_MAX)
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
class DistillConfig:
    """The `distill:` section: a fine-tuned teacher supervises the model being trained (the student)."""

    teacher: str
    """Output folder of a fine-tuned run, or a Hub id; loaded like the student (same modality settings)."""
    alpha: float = 0.5
    """loss = alpha * task loss + (1 - alpha) * T^2 * KL(teacher || student), both softened by T."""
    temperature: float = 2.0
    cache_logits: bool | None = None
    """Compute the teacher's logits once (training inputs must be deterministic); null: whenever possible."""
    unlabelled: UnlabelledConfig | None = None
    """Extra inputs the teacher labels: they join training and count only in the distillation term."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise RecipeError(f"distill.alpha: must be in [0, 1], got {self.alpha!r}")
        if not self.temperature > 0:
            raise RecipeError(f"distill.temperature: must be positive, got {self.temperature!r}")


@dataclass
class ExtraData:
    """Extra inputs read like the `data` section (same input columns); their labels, if any, are never
    trained on. `KEY` is the section's key path in errors."""

    KEY: ClassVar[str] = "data"
    path: str
    """Hub dataset id, or a loader name (csv, json, parquet, imagefolder) used with `data_files`."""
    name: str | None = None
    data_files: dict[str, str | list[str]] | None = None
    split: str = "train"
    """Split trained on."""
    max_samples: int | None = None
    """At most this many examples of each split read."""

    def __post_init__(self) -> None:
        check_data_files(self.data_files, f"{self.KEY}.data_files")
        check_range(self.max_samples, f"{self.KEY}.max_samples", low=1, high=INT32_MAX)


@dataclass
class UnlabelledConfig(ExtraData):
    """`distill.unlabelled`: inputs the teacher labels (unlabelled transfer data)."""

    KEY: ClassVar[str] = "distill.unlabelled"


@dataclass
class DomainTargetConfig(ExtraData):
    """Unlabelled target-domain data (`domain.target`)."""

    KEY: ClassVar[str] = "domain.target"
    eval_split: str | None = None
    """Labelled split evaluated after training (metrics `target`); default: `split`, when it has labels."""


@dataclass
class DomainConfig:
    """The `domain:` section: domain adaptation towards unlabelled target data."""

    method: Literal["dann", "mmd", "target_bn", "none"]
    """dann: domain classifier through a gradient reversal layer; mmd: multi-kernel Gaussian MMD; the two
    controls: target_bn (target batches through the model, so batch-norm statistics see the target, no
    loss) and none (source-only training; the labelled target split is still evaluated)."""
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
        check_range(self.hidden_size, "domain.hidden_size", high=INT32_MAX)
        if not self.kernel_multipliers or min(self.kernel_multipliers) <= 0:
            raise RecipeError(f"domain.kernel_multipliers: expected positive numbers, got {self.kernel_multipliers!r}")


def check_repo_id(key: str, value: str | None) -> None:
    """Refuse what the Hub would refuse at the push, hours later: a repo id is `name` or `namespace/name`."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if value is None:
        return
    try:
        validate_repo_id(value)
    except HFValidationError as err:
        cause = str(err).split(": '", 1)[0].strip()  # the rule, without the value it quotes
        raise RecipeError(f"{key}: {value!r} is not a Hub repo id ({cause})") from None


@dataclass
class HubConfig:
    push: bool = False
    """Push the output folder to the Hub after the local save (see hf_transfer.outputs.hub)."""
    repo_id: str | None = None
    private: bool = True
    revision: str | None = None
    """Branch to push to (created if missing); default: main."""
    base_model: str | None = None
    """Hub id of the base model when model.name_or_path is a local folder (card, adapter config)."""
    merged_repo_id: str | None = None
    """LoRA with merge: push merged/ to this repo; default: merged/ stays a subfolder."""
    license: str | None = None
    """The model card's license (a Hub license id, e.g. apache-2.0, mit, cc-by-4.0, other); mind the
    base model's and the data's licenses."""
    language: list[str] | None = None
    """The model card's languages (ISO 639-1 codes, e.g. [en])."""

    def __post_init__(self) -> None:
        for key in ("repo_id", "merged_repo_id", "base_model"):
            check_repo_id(f"hub.{key}", getattr(self, key))
        if self.license is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", self.license):
            raise RecipeError(f"hub.license: expected a Hub license id such as apache-2.0 or mit, got {self.license!r}")
        for code in self.language or []:
            if not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*", str(code)):
                raise RecipeError(f"hub.language: expected ISO 639 codes such as en or pt-BR, got {code!r}")


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


CURVE_FRACTIONS = [0.05, 0.1, 0.25, 0.5, 1.0]


@dataclass
class CurveConfig:
    """The recipe's `curve:` section: a learning curve, the recipe (with its `compare` runs and `seeds`)
    trained on nested, stratified shares of the training split (see runs/curve.py)."""

    fractions: list[float] = field(default_factory=lambda: list(CURVE_FRACTIONS))
    """Shares of the training split, each in (0, 1]; at least one example of every class is kept."""
    fraction: float | None = None
    """Train this one share only; set in each point's saved recipe.yaml."""

    def __post_init__(self) -> None:
        if not self.fractions:
            raise RecipeError("curve.fractions: list at least one fraction")
        for i, value in enumerate(self.fractions):
            check_range(value, f"curve.fractions[{i}]", low=0, high=1, low_open=True)
        twice = [v for i, v in enumerate(self.fractions) if v in self.fractions[:i]]
        if twice:
            raise RecipeError(f"curve.fractions: {twice[0]} listed twice")
        check_range(self.fraction, "curve.fraction", low=0, high=1, low_open=True)


@dataclass
class RankConfig:
    """The `rank:` section: `hf-transfer rank` scores candidate backbones on frozen features (runs/rank.py)."""

    candidates: list[str] = field(default_factory=list)
    """Hub ids or local model folders, each loaded as model.name_or_path would be."""
    sample: int = 1000
    """Training examples scored (a seeded random sample); the validation split is capped at the same."""
    batch_size: int = 32
    """Examples per forward pass."""
    output_dir: str | None = None
    """Where rank.json and rank.md go; default: training.output_dir + `-rank`."""

    def __post_init__(self) -> None:
        check_range(self.sample, "rank.sample", low=2, high=INT32_MAX)
        check_range(self.batch_size, "rank.batch_size", low=1, high=INT32_MAX)
        twice = sorted({c for c in self.candidates if self.candidates.count(c) > 1})
        if twice:
            raise RecipeError(f"rank.candidates: {twice[0]!r} listed twice")
        if any(not c.strip() for c in self.candidates):
            raise RecipeError("rank.candidates: an empty name")


@dataclass
class TuneConfig:
    """The `tune:` section: `hf-transfer tune` searches hyper-parameters with Optuna or Ray Tune
    (runs/tune.py). Each `space` entry is validated at its bounds or choices as the recipe key it names."""

    space: dict[str, Any]
    """Recipe key -> a list of choices, or a range {low, high, log: false, step: null} (integers when
    low and high are). A key without a section is a training key (`learning_rate` = training.learning_rate);
    `finetune.strategy` and the options of the strategies searched (`finetune.r`) may be searched too."""
    backend: Literal["optuna", "ray"] = "optuna"
    """optuna: trials one after another in this process (TPE sampler). ray: Ray Tune (random search),
    trials in parallel on a Ray cluster: this machine's cores, or the machines of `ray_address`."""
    n_trials: int = 10
    timeout: float | None = None
    """Time budget in seconds: optuna starts no trial after it (a running trial finishes); ray stops
    the running trials too (they count as pruned)."""
    pruner: Literal["median", "none"] = "median"
    """median: stop a trial whose validation metric after an epoch is worse than the median of the
    earlier trials after that epoch (optuna: MedianPruner from the third trial on; ray: ASHA with
    reduction factor 2, at epochs w + 1, 2(w + 1), 4(w + 1), ... for a warm-up of w epochs)."""
    pruner_warmup: int | None = None
    """Epochs every trial trains before the pruner may stop it; null: half the fewest epochs a trial
    can train (rounded up). On small data a good run can sit at the majority class for its first
    epochs, exactly like a bad one."""
    seed: int = 0
    """Seed of the sampler (optuna: TPE; ray: the random search); each trial trains with training.seed."""
    recipe_first: bool = True
    """The first trial runs the recipe's own values of the searched keys (those the space holds; the
    others are sampled), so the search starts from the recipe and its best is never a trial that did
    worse on validation than the recipe as written."""
    output_dir: str | None = None
    """Where tune.json, tune.md, tune.png, best.yaml and the trials go; default: training.output_dir + `-tune`."""
    train_best: bool = False
    """Train best.yaml after the search (also `hf-transfer tune --train-best`)."""
    ray_address: str | None = None
    """ray: the cluster to join (`auto`: the one `ray start` runs here; `host:port`; `ray://host:port`);
    default: a one-machine Ray started for the search and stopped after it."""
    resources_per_trial: dict[str, float] | None = None
    """ray: what one trial holds, {cpu: 1, gpu: 0} (default: 1 CPU, and 1 GPU where Trainer sees one)."""
    _address = re.compile(r"auto|(ray://)?[\w.-]+:\d{1,5}")  # a head node's GCS port, or ray:// and its client port

    def __post_init__(self) -> None:
        check_range(self.n_trials, "tune.n_trials", low=1, high=INT32_MAX)
        check_range(self.timeout, "tune.timeout", low=0, low_open=True)
        check_range(self.seed, "tune.seed", low=0, high=2**32 - 1)
        check_range(self.pruner_warmup, "tune.pruner_warmup", low=0, high=INT32_MAX)
        if not self.space:
            raise RecipeError("tune.space: name at least one recipe key to search")
        for key in ("ray_address", "resources_per_trial"):
            if getattr(self, key) is not None and self.backend != "ray":
                raise RecipeError(f"tune.{key}: only with tune.backend: ray (the backend is {self.backend!r})")
        if self.ray_address is not None and not self._address.fullmatch(self.ray_address):
            raise RecipeError(f"tune.ray_address: expected auto, host:port or ray://host:port, got {self.ray_address!r}")
        for name, count in (self.resources_per_trial or {}).items():
            if name not in ("cpu", "gpu"):
                raise RecipeError(f"tune.resources_per_trial.{name}: unknown resource (allowed: cpu, gpu)")
            check_range(count, f"tune.resources_per_trial.{name}", low=0, low_open=name == "cpu")


@dataclass
class Recipe:
    model: ModelConfig
    data: DataConfig
    task: str | None = None
    """The task's name (a key of hf_transfer.tasks.TASKS); validation sets it from model.modality when absent."""
    finetune: Any = None
    """The options of the strategy named by `finetune.strategy` (its record's `options` class)."""
    training: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of transformers.TrainingArguments."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement of metric_for_best_model."""
    nan_policy: Literal["stop", "skip"] = "stop"
    """A non-finite training loss stops the run (naming the step), or skips that batch."""
    hub: HubConfig = field(default_factory=HubConfig)
    verify: bool = True
    """After training, reload the folder as a Hub user would and re-check its metrics."""
    compare: list[str | dict[str, dict[str, Any]]] | None = None
    """Transfer report: runs to compare against, e.g. [scratch, linear_probe, majority] (see runs/compare.py)."""
    seeds: list[int] | None = None
    """Train the recipe (and each `compare` run) once per seed, as training.seed, into <output_dir>/seed-<s>;
    the report gives every run's mean and 95% interval over seeds and test examples (see runs/seeds.py)."""
    distill: DistillConfig | None = None
    """Knowledge distillation from a teacher (see objectives/distill.py)."""
    domain: DomainConfig | None = None
    """Domain adaptation with unlabelled target data (see objectives/domain.py)."""
    tasks: list[TaskConfig] | None = None
    """Multi-task: a head per task on one shared backbone (see tasks/multitask.py); replaces data.label_column."""
    cv: CVConfig | None = None
    """k-fold cross-validation (see runs/cv.py)."""
    curve: CurveConfig | None = None
    """Learning curve: the recipe trained on growing shares of the training split (see runs/curve.py)."""
    rank: RankConfig | None = None
    """Candidate backbones for `hf-transfer rank` (see runs/rank.py)."""
    tune: TuneConfig | None = None
    """Hyper-parameter search for `hf-transfer tune` (see runs/tune.py)."""

    sections: dict[str, Any] = field(default_factory=dict)
    """The task's own section by its name (e.g. {"vision": VisionConfig(...)}); empty for tasks without one."""

    @property
    def options(self) -> Any:
        """The task's own section (e.g. the `vision:` options), or None."""
        return next(iter(self.sections.values()), None)

    def __getattr__(self, name: str) -> Any:  # recipe.vision, recipe.speech: the task's section by name
        sections = self.__dict__.get("sections") or {}
        if name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The recipe as YAML-ready data: the task's section under its own name, as in a recipe file."""
        data = dataclasses.asdict(self)
        sections = data.pop("sections")
        return {**data, **sections}
