"""Multi-task: one shared backbone, one head per task (recipe `tasks:`), loss = Σ weight · task loss.

Each task gets the model the single-task run would load (its own head, labels and problem type);
their backbones are replaced by one shared backbone that runs once per batch (`SharedPass`). The
backbone is found by `anatomy.backbone_of`, so every classification task shares the same way: text
(BERT's `bert`), vision (a timm model without its classifier, or a transformers model's `vit` /
`convnext` ...), speech (`wav2vec2`, `hubert`, Whisper's encoder). The `labels` column holds one
value per task (NaN where a row has no label for that task: that row is left out of the task's loss
and metrics); the task's preprocessing (augmentation, the image cache, audio crops) carries it as it
carries one label. Metrics are prefixed with the task's name (eval_sentiment_accuracy). The output
folder holds the multi-task checkpoint (model.safetensors) and one folder per task
(<output_dir>/<task>), written as the single-task run writes its folder (`save_folder`: a Hugging
Face folder, timm's format for timm), which `transformers.pipeline` loads with that task's label
names; `reload` (outputs/multitask.py: `load_multitask(out)`) rebuilds the whole model from them.

`specialise(task, tasks, metric)` turns the single-task record into the multi-task one (labels, model,
metrics, saving); the recipe rules of `tasks:` are checked with the rest of the recipe (validate.py).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from hf_transfer.errors import DataError, ModelError
from hf_transfer.anatomy import backbone_of, classifier_slot, slot_of
from hf_transfer.tasks.base import NO_DETAILS, NO_LOSS, Labeler, Task, TaskSpec
from hf_transfer.tasks.classification import class_names, score

log = logging.getLogger(__name__)

OTHER = "other"
_SECTION = re.compile(r"^(eval|test)_")  # a metric key's split prefix
COLLAPSE_HINT = ("the model predicts one class for almost every example of a task; try a higher (or, if the loss "
                 "diverged, lower) training.learning_rate, more training.num_train_epochs, training.warmup_steps, a "
                 "higher weight for that task (tasks[i].weight), or hf-transfer tune")


def default_metric(task) -> str:
    return "mse" if task.problem_type == "regression" else "accuracy"


def best_metric(tasks, metric: str | None) -> tuple[str, bool]:
    """(metric_for_best_model, greater_is_better): `metric` (the recipe's), else the first task's headline."""
    name = metric or f"{tasks[0].name}_{default_metric(tasks[0])}"
    return name, not name.endswith(("mse", "loss"))


# --------------------------------------------------------------------------- labels


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _values(ds, column: str) -> list:
    """A label column's values; a ClassLabel's ids as their names (-1, no label: None)."""
    values = ds[column]
    classes = class_names((ds.features or {}).get(column))
    return [classes[v] if isinstance(v, int) and v >= 0 else None for v in values] if classes else values


def _task_names(train, task) -> list[str] | None:
    """A task's label names: its label_names, else the column's ClassLabel names, else the training values
    (kept classes, plus `other` when rare ones map there)."""
    if task.problem_type == "regression":
        return None
    if task.label_names:
        return [str(n) for n in task.label_names]
    classes = class_names((train.features or {}).get(task.label_column))
    if classes and not (task.min_count or task.top_k):
        return [str(n) for n in classes]
    counts = Counter(str(v) for v in _values(train, task.label_column) if not _missing(v))
    if not counts:
        raise DataError(f"tasks.{task.name}: column {task.label_column!r} has no labels in the training split")
    kept = sorted(counts)
    if task.min_count:
        kept = [c for c in kept if counts[c] >= task.min_count]
    if task.top_k:
        kept = sorted(sorted(kept, key=lambda c: (-counts[c], c))[: task.top_k])
    if task.min_count or task.top_k:
        rare = len(counts) - len(kept)
        log.info("task %s: %d classes kept, %d rare (%s)", task.name, len(kept), rare, task.rare)
        if task.rare == OTHER and rare:
            kept = sorted(set(kept) | {OTHER})
    if not kept:
        raise DataError(f"tasks.{task.name}: no class has min_count {task.min_count} training rows")
    return kept


def _encoder(task, names: list[str] | None, split: str):
    """Raw value -> float label (class id, or the regression target); NaN for a missing label."""
    index = {n: i for i, n in enumerate(names or [])}
    grouped = bool(task.min_count or task.top_k)  # values outside the kept classes are rare, not errors

    def encode(value: Any) -> float:
        if _missing(value):
            return math.nan
        if task.problem_type == "regression":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DataError(f"tasks.{task.name}: regression label {value!r} in split {split!r} is not a number")
            return float(value)
        if str(value) in index:
            return float(index[str(value)])
        if grouped:
            return float(index[OTHER]) if task.rare == OTHER else math.nan
        raise DataError(
            f"tasks.{task.name}: label {value!r} in split {split!r} is not one of label_names {list(index)}"
        )

    return encode


def labeler(tasks) -> Labeler:
    """`labels` = [value per task] and `stratum` = the first classification task's class (missing
    labels: a stratum of their own)."""
    columns = sorted({t.label_column for t in tasks})
    first = next((i for i, t in enumerate(tasks) if t.problem_type != "regression"), None)

    def names(train) -> dict[str, list[str] | None]:
        return {t.name: _task_names(train, t) for t in tasks}

    def encode(ds, label_names, split):
        values = {col: _values(ds, col) for col in columns}  # never decodes audio / images
        encoded = [list(map(_encoder(t, label_names[t.name], split), values[t.label_column])) for t in tasks]
        labels = [list(row) for row in zip(*encoded)]
        drop = [c for c in [*columns, "labels", "stratum"] if c in ds.column_names]
        ds = ds.remove_columns(drop).add_column("labels", labels)
        if first is None:
            return ds
        n = len(label_names[tasks[first].name])
        return ds.add_column("stratum", [n if math.isnan(row[first]) else int(row[first]) for row in labels])

    return Labeler(
        columns=[(f"tasks[{i}].label_column", t.label_column) for i, t in enumerate(tasks)],
        names=names, encode=encode, stratify=None if first is None else "stratum",
    )


# --------------------------------------------------------------------------- model


class SharedPass(nn.Module):
    """Stands in for the shared backbone inside each task's model: the first call of a forward pass
    runs the backbone, the other tasks reuse its output. Holds no parameters of its own."""

    def __init__(self, backbone: nn.Module, cache: dict):
        super().__init__()
        object.__setattr__(self, "backbone", backbone)  # not registered: MultiTaskModel owns it
        self.cache = cache

    def forward(self, *args, **kwargs):
        if "out" not in self.cache:
            self.cache["out"] = self.backbone(*args, **kwargs)
        return self.cache["out"]


@dataclass
class MultiTaskOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: tuple[torch.Tensor, ...] | None = None


@dataclass
class _Slot:
    """Where a task's model holds its backbone (`setattr(parent, name, ...)`), and the classifier that
    backbone held itself (timm: the body's last layer), else None."""

    parent: nn.Module
    name: str
    classifier: nn.Module | None


class MultiTaskModel(nn.Module):
    """`backbone` (shared) + `heads` (each task's own model, its backbone a SharedPass).

    The backbone is the part of a task's model that `anatomy.backbone_of` finds (transformers:
    `base_model`, or the one inner model, e.g. Whisper's encoder; timm: the timm model). A backbone
    that holds its own classifier (timm) shares everything but it: the shared one ends in an identity
    (it gives the pooled features), each task's model runs SharedPass then its own classifier."""

    def __init__(self, models: dict[str, nn.Module], tasks):
        super().__init__()
        first = next(iter(models.values()))
        self.backbone = backbone_of(first)
        if self.backbone is first:
            raise ModelError(f"tasks: no backbone to share found in {first.__class__.__name__}")
        self._slots = {name: _slot(model) for name, model in models.items()}
        self._classifier = classifier_slot(self.backbone)  # (parent, name) in the shared backbone, or None
        self._pass: dict = {}
        self.heads = nn.ModuleDict(models)
        for name in models:
            self.detach_task_model(name)
        self.tasks = list(tasks)
        if hasattr(first, "config"):
            self.config = first.config  # what Trainer reads (e.g. keys_to_ignore_at_inference)
        self.main_input_name = first.main_input_name
        self.accepts_loss_kwargs = False  # the loss is a mean over the batch (see distributed.declare_mean_loss)

    @property
    def base_model(self) -> nn.Module:  # strategies.backbone_of: what `partial` / `staged` freeze
        return self.backbone

    def forward(self, labels=None, **inputs):
        """`inputs`: the model inputs of the task's collator (input_ids, pixel_values, input_values, ...)."""
        self._pass.clear()
        try:
            logits = tuple(self.heads[t.name](**inputs).logits for t in self.tasks)
        finally:
            self._pass.clear()
        loss = None if labels is None else weighted_loss(logits, labels, self.tasks)
        return MultiTaskOutput(loss=loss, logits=logits)

    def task_model(self, name: str) -> nn.Module:
        """Task `name`'s model with the real backbone (and its classifier) back in place (share it, do not
        train it apart; detach_task_model undoes it)."""
        slot = self._slots[name]
        if slot.classifier is not None:
            setattr(*self._classifier, slot.classifier)
        setattr(slot.parent, slot.name, self.backbone)
        return self.heads[name]

    def detach_task_model(self, name: str) -> None:
        slot = self._slots[name]
        shared: nn.Module = SharedPass(self.backbone, self._pass)
        if slot.classifier is not None:
            setattr(*self._classifier, nn.Identity())
            shared = nn.Sequential(shared, slot.classifier)
        setattr(slot.parent, slot.name, shared)


def _slot(model: nn.Module) -> _Slot:
    backbone = backbone_of(model)
    parent, name = slot_of(model, backbone)
    inner = classifier_slot(backbone)
    return _Slot(parent, name, None if inner is None else getattr(*inner))


def task_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Mean loss over the rows that have a label (NaN = none); 0 (with a graph) when no row has one."""
    valid = ~torch.isnan(labels)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1)[valid], labels[valid].to(logits.dtype))
    return F.cross_entropy(logits[valid], labels[valid].long())


def weighted_loss(logits: tuple[torch.Tensor, ...], labels: torch.Tensor, tasks) -> torch.Tensor:
    return sum(t.weight * task_loss(lg, labels[:, i], t.problem_type) for i, (t, lg) in enumerate(zip(tasks, logits)))


def task_spec(spec: TaskSpec, task) -> TaskSpec:
    """The single-task spec of one task: its problem type."""
    return replace(spec, data=replace(spec.data, problem_type=task.problem_type))


def load_model(single: Task, spec: TaskSpec, tasks, label_names: dict[str, list[str] | None]) -> MultiTaskModel:
    """Each task's single-task model (the single-task record's load_model with its labels), one backbone shared."""
    models = {t.name: single.load_model(task_spec(spec, t), label_names[t.name]) for t in tasks}
    return MultiTaskModel(models, tasks)


def reload(single: Task, spec: TaskSpec, tasks, out: str | Path) -> MultiTaskModel:
    """The trained multi-task model, rebuilt from the task folders of a finished run: each folder loaded
    by the single-task record's load_model, with the label names its config holds."""
    from transformers import AutoConfig

    models = {}
    for t in tasks:
        folder = Path(out) / t.name
        id2label = AutoConfig.from_pretrained(folder).id2label
        names = None if t.problem_type == "regression" else [id2label[i] for i in sorted(id2label)]
        one = task_spec(spec, t)
        one = replace(one, model=replace(spec.model, name_or_path=str(folder), pretrained=True))
        models[t.name] = single.load_model(one, names)
    return MultiTaskModel(models, tasks).eval()


# --------------------------------------------------------------------------- metrics and saving


def task_metrics(values: dict[str, Any], name: str, others: list[str]) -> dict[str, Any]:
    """One task's entries of a metrics dict: `eval_<name>_x` as `eval_x`; other tasks' entries and the
    evaluation loss (the weighted sum over tasks) left out; the rest (runtimes, epoch, training loss) kept."""
    kept = {}
    for key, value in values.items():
        section = _SECTION.match(key)
        rest = key[section.end():] if section else None
        if rest is not None and rest.startswith(name + "_"):
            kept[f"{section.group(1)}_{rest[len(name) + 1:]}"] = value
        elif rest is None or not (rest == "loss" or any(rest.startswith(o + "_") for o in others)):
            kept[key] = value
    return kept


def diagnose_fn(single: Task, tasks):
    """The single-task record's collapse flag, task by task: its splits named `<split> (<task>)`."""
    def diagnose(metrics: dict[str, Any]) -> dict[str, Any] | None:
        found = None
        for t in tasks:
            others = [o.name for o in tasks if o is not t]
            one = single.diagnose({k: task_metrics(v, t.name, others) if k in ("validation", "test") else v
                                   for k, v in metrics.items()})
            if one is not None:
                found = found or {**one, "splits": {}, "hint": COLLAPSE_HINT}
                found["splits"] |= {f"{role} ({t.name})": share for role, share in one["splits"].items()}
        return found

    return diagnose


def compute_metrics_fn(tasks):
    """A Trainer `compute_metrics`: each task's metrics (classification.score) on its labelled rows, prefixed."""
    def compute(pred) -> dict[str, float]:
        logits = pred.predictions if isinstance(pred.predictions, tuple) else (pred.predictions,)
        refs = np.asarray(pred.label_ids, dtype=float).reshape(len(pred.label_ids), -1)
        out: dict[str, float] = {"samples": len(refs)}
        for i, t in enumerate(tasks):
            valid = ~np.isnan(refs[:, i])
            if not valid.any():
                continue
            y = refs[valid, i] if t.problem_type == "regression" else refs[valid, i].astype(int)
            scores = score(t.problem_type, np.asarray(logits[i])[valid], y) | {"samples": int(valid.sum())}
            out |= {f"{t.name}_{k}": v for k, v in scores.items()}
        return out

    return compute


def save(single: Task, trainer, spec: TaskSpec, tasks, out: Path) -> bool:
    """The multi-task checkpoint (model.safetensors, by Trainer) and one folder per task, each written as
    the single-task record writes a model's folder (save_folder)."""
    trainer.save_model(str(out))
    if not trainer.is_world_process_zero():
        return True
    model = trainer.model
    for t in tasks:
        try:
            single.save_folder(model.task_model(t.name), trainer.processing_class, task_spec(spec, t), out / t.name)
        finally:
            model.detach_task_model(t.name)
    return True


# --------------------------------------------------------------------------- the record


def specialise(single: Task, tasks, metric: str | None) -> Task:
    """The multi-task record built on the single-task one: labels, model, metrics and saving per task
    (`metric`: the recipe's training.metric_for_best_model, if any)."""
    best = best_metric(tasks, metric)
    return replace(
        single,
        labeler=lambda spec: labeler(tasks),
        load_model=lambda spec, names: load_model(single, spec, tasks, names),
        compute_metrics=lambda spec: compute_metrics_fn(tasks),
        diagnose=diagnose_fn(single, tasks),
        best_metric=lambda spec: best,
        loss=NO_LOSS,  # the multi-task model's own: Σ weight · task loss
        save=lambda trainer, spec, out: save(single, trainer, spec, tasks, out),
        # MultiTaskModel.forward takes **inputs: Trainer cannot read the input names from its signature
        training_defaults=lambda: {**single.training_defaults(), "remove_unused_columns": False},
        baselines={},
        details=NO_DETAILS,
        verify_inputs=None,
        verify_after_training=False,
    )
