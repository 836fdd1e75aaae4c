"""What a task is: one record of everything the pipeline needs from it, and what its builders read.

A task (text-classification, image-classification, ...) is a `Task`: its recipe section, how data
becomes labelled model inputs, the model and processor it loads, its loss and metrics, how it saves, and
what a Hub user's `pipeline()` sees (task name, Auto class, example input, how `predict` reads inputs).
`hf_transfer.tasks.TASKS` holds one record per task; every other list (recipe sections, comparison
baselines, verify, predict, the card) is read from it. Builders get a `TaskSpec`: the `model` and `data`
sections, the task's own section and the seed, never the whole recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from hf_transfer.recipe.schema import DataConfig, ModelConfig


@dataclass(frozen=True)
class TaskSpec:
    """The recipe sections a task's builders read."""

    model: ModelConfig
    data: DataConfig
    options: Any = None
    """The task's own section (e.g. VisionConfig for `vision:`), None for tasks without one."""
    seed: int = 42
    """training.seed: random augmentation and carved splits follow it."""


@dataclass
class Labeler:
    """How label columns become the `labels` column of every split."""

    columns: list[tuple[str, str]]
    """(recipe key, label column), checked in every split."""
    names: Callable[[Any], Any]
    """Training split -> label names."""
    encode: Callable[[Any, Any, str], Any]
    """(split, label names, split name) -> the split with `labels` instead of the label columns."""
    stratify: str | None
    """Integer column of the encoded splits that stratified splits keep balanced (None: not stratified)."""


def save_pretrained(model, processor, spec: TaskSpec, folder) -> None:
    """A Hugging Face folder: the model's and the processor's `save_pretrained`."""
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))


def _none(*_: Any) -> None:
    return None


def _never(*_: Any) -> bool:
    return False


@dataclass(frozen=True)
class Task:
    """One task: a record of functions and facts; no behaviour lives in the pipeline's plumbing."""

    name: str
    """Recipe `task:` value, e.g. `text-classification`."""
    modality: str
    """`model.modality` of the task (text, vision, speech); a recipe without `task` picks its modality's default."""
    section: str | None
    """Recipe section holding the task's options (e.g. `vision`), or None."""
    options: type | None
    """Dataclass of that section."""
    problem_types: tuple[str, ...]
    """Values of `data.problem_type` the task accepts."""

    # data -> model inputs
    input_columns: Callable[[TaskSpec], dict[str, str]]
    """Recipe key -> dataset column the model reads (checked in every split)."""
    labeler: Callable[[TaskSpec], Labeler]
    load_processor: Callable[[TaskSpec], Any]
    preprocess: Callable[[Any, Any, TaskSpec], Any]
    """(raw DatasetDict with `labels`, processor, spec) -> model-ready splits."""
    collator: Callable[[Any], Callable]
    stochastic: Callable[[TaskSpec], bool]
    """Whether training inputs are augmented randomly (then nothing computed from them is cached)."""
    training_defaults: Callable[[], dict[str, Any]]
    """TrainingArguments defaults of the task (a recipe value always wins)."""

    # model, loss, metrics, saving
    load_model: Callable[[TaskSpec, Any], Any]
    """(spec, label names) -> the model with its new head."""
    loss: Callable[[TaskSpec], Callable | None]
    """Trainer's compute_loss_func, or None for the model's own loss."""
    compute_metrics: Callable[[TaskSpec], Callable]
    best_metric: Callable[[TaskSpec], tuple[str, bool]]
    """(metric_for_best_model, greater_is_better) when the recipe names none."""
    metric_names: dict[str, tuple[str, str, dict | None]]
    """Metric key -> (model-index type, display name, args): what the card reports."""
    save: Callable[[Any, TaskSpec, Any], bool]
    """(trainer, spec, folder) -> True when the task wrote the folder itself (e.g. timm's format)."""
    save_folder: Callable[[Any, Any, TaskSpec, Any], None] = save_pretrained
    """(trained model, processor, spec, folder) -> one model's folder as pipeline() loads it (multi-task:
    each task's folder); default: the model's and the processor's save_pretrained."""
    callbacks: Callable[[TaskSpec], list] = lambda spec: []
    """spec -> TrainerCallbacks the task's options ask for (e.g. vision.train_image_size)."""
    multitask: bool = False
    """The task runs with the recipe's `tasks:` (one head per label column on a shared backbone:
    tasks/multitask.py)."""
    baselines: dict[str, Callable[[TaskSpec, Any, Any], dict]] = field(default_factory=dict)
    """`compare` entries that train nothing: name -> (spec, loaded splits, TrainingArguments) -> {split: metrics},
    and optionally `predictions`: {split: (predictions, label ids)} for the report's intervals."""
    streams: bool = False
    """The task trains from a stream (`data.streaming: true`): its labeler and preprocess accept a
    `datasets.IterableDataset` training split."""
    objectives: tuple[str, ...] = ()
    """Recipe objectives the task supports: `class_weights`, `distill`, `domain` (others are refused)."""
    diagnose: Callable[[dict], dict | None] = _none
    """metrics.json -> a warning about the run (classification: collapsed predictions), or None."""
    caches_features: bool = True
    """A frozen-backbone run may train its head on features computed once (`finetune.cache_features`); False
    where the head reads more than one feature per labelled item the cache keeps (speech recognition: a CTC
    head labels every audio frame, an encoder-decoder generates text)."""
    generates: bool = False
    """Evaluation may generate (encoder-decoder models): `training` is checked against and built as
    Seq2SeqTrainingArguments (predict_with_generate, generation_max_length, generation_num_beams) and
    encoder-decoder models train with Seq2SeqTrainer."""
    details: Callable[[TaskSpec, Any, list[str] | None], dict | None] = _none
    """(spec, EvalPrediction of a split after training, label names) -> what metrics.json keeps of that split
    beyond the scalar metrics, under `per_class` (classification: precision / recall / F1 / support per
    class and the confusion matrix), or None."""
    resampled: Callable[[TaskSpec], Callable | None] = _none
    """spec -> a scorer of many resamples of a split's predictions at once ((predictions, label ids, index rows
    of shape (k, n)) -> {metric: k values}, equal to compute_metrics on each row), or None: the transfer
    report's bootstrap then calls compute_metrics once per resample (hf_transfer.outputs.intervals)."""

    # what a Hub user sees
    pipeline_task: str = ""
    """transformers.pipeline task that loads the saved folder."""
    auto_class: str = ""
    """transformers Auto class of the saved model."""
    auto_classes: tuple[str, ...] = ()
    """Further Auto classes of the task's models, told apart by the saved config's architectures
    (speech-recognition: AutoModelForCTC besides AutoModelForSpeechSeq2Seq)."""
    processor_arg: str = ""
    """pipeline() argument that names the processor (tokenizer, image_processor, feature_extractor)."""
    more_processor_args: tuple[str, ...] = ()
    """Further processors the pipeline takes (speech recognition: the tokenizer besides the feature extractor)."""
    peft_task_type: str | None = None
    """PEFT TaskType of the adapter (SEQ_CLS for text), None for a plain PeftModel."""
    example: str = '"path/to/input"'
    """Example input for the card's snippet."""
    read_inputs: Callable[[list[str]], list] = list
    """`hf-transfer predict` arguments -> pipeline inputs."""
    pipeline_kwargs: Callable[[TaskSpec], dict[str, Any]] = lambda spec: {}
    """Call arguments that make pipeline() preprocess as training did (e.g. truncation)."""
    verify_inputs: Callable[[TaskSpec, Any, Any], Any] | None = None
    """(spec, raw split, processor) -> a dataset whose column `inputs` is what the round-trip check feeds to the
    pipeline; None: the task has no round-trip check."""
    score_texts: Callable[[TaskSpec], Callable[[list[str], list[str]], dict]] | None = None
    """Tasks whose pipeline answers with text (speech recognition): spec -> (references, hypotheses) ->
    metrics; the round-trip check scores the pipeline's texts with it (`mode: texts`)."""
    entities: bool = False
    """Labels belong to words, not to the whole input (token classification): the round-trip check reads
    per-word logits from the model and tokenizer (`is_split_into_words`), `predict` and the card's snippet
    group sub-tokens into entities (`aggregation_strategy="simple"`), the cached-feature probe caches a vector
    per labelled token."""
    verify_after_training: bool = False
    """Run the round-trip check after every training run (`verify: true`); otherwise `hf-transfer verify`
    checks a folder on request."""


IGNORE = -100
"""The label of positions the loss, the metrics and decoding skip (padding, sub-tokens): transformers' own value."""

NO_LOSS: Callable[[TaskSpec], None] = _none
NO_SAVE: Callable[[Any, TaskSpec, Any], bool] = _never
DETERMINISTIC: Callable[[TaskSpec], bool] = _never
NO_DETAILS: Callable[[TaskSpec, Any, Any], None] = _none


def arguments_class(task: Task) -> type:
    """TrainingArguments, or Seq2SeqTrainingArguments for a task whose evaluation may generate."""
    from transformers import Seq2SeqTrainingArguments, TrainingArguments  # deferred: heavy import

    return Seq2SeqTrainingArguments if task.generates else TrainingArguments
