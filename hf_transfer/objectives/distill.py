"""Knowledge distillation (recipe section `distill`): a fine-tuned teacher supervises the student.

loss = alpha * task loss + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)).

The teacher is loaded by the student's task loader (an output folder: a full model, a PEFT
adapter folder or a timm folder; or a Hub id), in eval mode with every weight frozen. Its label
space must be the student's (same number of labels, same names when both are known).

When the training inputs are deterministic (text; vision and speech without random augmentation),
the teacher's logits are computed once, batched under no_grad with the evaluation preprocessing of
the teacher's own processor, and travel with each training example (`teacher_logits`). Otherwise
the teacher runs on each (augmented) training batch, so it must read the student's inputs.

`distill.unlabelled`: extra inputs (read like `data`, through tasks.data.load_extra; any labels
dropped) preprocessed as the training split is, appended to it with the label UNLABELLED (-100), and
labelled by the teacher (cached or per batch, as above). Batches mix both kinds of rows. The task loss
becomes `labelled_only`: the mean (class-weighted mean) over the batch's labelled rows, 0 when it has
none; the KL term stays the mean over all the batch's rows. So per batch of B rows, L of them labelled:
loss = alpha * (1/L) sum_labelled CE + (1 - alpha) * T^2 * (1/B) sum_all KL.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hf_transfer.anatomy import check_text_model
from hf_transfer.console import progress
from hf_transfer.errors import ModelError, RecipeError
from hf_transfer.inference import run_batches
from hf_transfer.objectives.losses import distillation_loss
from hf_transfer.recipe.schema import DistillConfig, UnlabelledConfig
from hf_transfer.tasks.base import TaskSpec
from hf_transfer.tasks.data import load_extra
from hf_transfer.tasks.loaders import missing_folder

log = logging.getLogger(__name__)

TEACHER_COLUMN = "teacher_logits"
UNLABELLED = -100  # the label of a `distill.unlabelled` row: only the distillation term sees it


def teacher_spec(spec: TaskSpec, name_or_path: str) -> TaskSpec:
    """The student's spec with `name_or_path` (the teacher) as the pretrained, unmodified model."""
    model = dataclasses.replace(spec.model, name_or_path=name_or_path, pretrained=True, config_overrides=None)
    return dataclasses.replace(spec, model=model)


def _adapter_base(source: str) -> str | None:
    """The base model of a PEFT adapter folder (adapter_config.json), or None for any other teacher."""
    path = Path(source) / "adapter_config.json"
    return json.loads(path.read_text(encoding="utf-8"))["base_model_name_or_path"] if path.is_file() else None


def _read_config(source: str) -> dict[str, Any]:
    """The teacher's config.json: from its folder, or from the Hub (cache)."""
    problem = missing_folder(source)
    if problem:
        raise ModelError(f"distill.teacher: {problem}")
    try:
        path = Path(source) / "config.json"
        if not Path(source).is_dir():
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, "config.json"))
        return json.loads(path.read_text(encoding="utf-8"))
    except Exception as err:  # missing file, Hub unreachable, invalid JSON
        text = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        raise ModelError(f"distill.teacher: cannot read the config.json of {source!r}: {text}") from None


def teacher_labels(config: dict[str, Any]) -> tuple[int | None, list[str] | None]:
    """(number of labels, label names or None) from a transformers or timm config.json."""
    names = config.get("label_names")
    id2label = config.get("id2label")
    if not names and id2label:
        names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if names and all(re.fullmatch(r"LABEL_\d+", str(n)) for n in names):
        names = None  # transformers' placeholder names: the real ones are unknown
    count = len(names) if names else config.get("num_classes") or config.get("num_labels") or (
        len(id2label) if id2label else None)
    return count, names


def check_label_space(source: str, label_names: list[str] | None) -> None:
    """A one-line error when the teacher's labels are not the student's."""
    count, names = teacher_labels(_read_config(source))
    student = len(label_names or [])
    if count is None:
        raise ModelError(f"distill.teacher: {source!r} does not say how many labels it predicts")
    if count != student:
        raise ModelError(f"distill.teacher: {source!r} predicts {count} labels, the student {student}")
    if names and label_names and [str(n) for n in names] != [str(n) for n in label_names]:
        raise ModelError(f"distill.teacher: {source!r} has labels {names}, the student {label_names}")


def load_teacher(source: str, task, spec: TaskSpec, label_names: list[str] | None) -> torch.nn.Module:
    check_label_space(source, label_names)
    base = _adapter_base(source)
    teacher = task.load_model(teacher_spec(spec, base or source), label_names)
    if base is not None:  # an adapter (and its head) on its base model, merged: a plain model to run
        from peft import PeftModel

        teacher = PeftModel.from_pretrained(teacher, source).merge_and_unload()
    teacher.eval().requires_grad_(False)
    return teacher


def predict_logits(model, split, collator, batch_size: int, device, bar=None) -> torch.Tensor:
    """Logits of `model` (run in eval mode, without gradients) for every example of a preprocessed split, in order."""
    return torch.cat(run_batches(model, split, collator, batch_size, device,
                                 lambda i, out: out.logits.float().cpu(), bar))


class WithColumn(torch.utils.data.Dataset):
    """A dataset whose examples carry one more entry (row i of `values`)."""

    def __init__(self, dataset, name: str, values: torch.Tensor):
        self.dataset, self.name, self.values = dataset, name, values

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], self.name: self.values[i]}

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:  # one batched transform call
        rows = _rows(self.dataset, indices)
        return [{**row, self.name: self.values[i]} for row, i in zip(rows, indices)]


class Joined(torch.utils.data.Dataset):
    """The rows of `first`, then those of `second` (each keeps its own transforms)."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self.first)
        if not 0 <= i < len(self):
            raise IndexError(i)  # ends `for row in dataset` (Trainer's lengths for group_by_length)
        return self.first[i] if i < n else self.second[i - n]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:  # each part's batched transform once
        n = len(self.first)
        low, high = [i for i in indices if i < n], [i - n for i in indices if i >= n]
        rows = iter(_rows(self.first, low)), iter(_rows(self.second, high))
        return [next(rows[i >= n]) for i in indices]


def _rows(dataset, indices: list[int]) -> list[dict[str, Any]]:
    if not indices:
        return []
    if hasattr(dataset, "__getitems__"):
        return dataset.__getitems__(indices)
    return [dataset[i] for i in indices]


def with_columns(collator, names: list[str]):
    """`collator` that also stacks the batch entries `names` (which it does not know about)."""
    if not names:
        return collator

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        extra = {n: torch.stack([torch.as_tensor(f.pop(n)) for f in features]) for n in names if n in features[0]}
        return {**collator(features), **extra}

    return collate


def _cached_logits(source: str, task, spec: TaskSpec, teacher, raw_train, args) -> torch.Tensor:
    """The teacher's logits for the raw training split, through the teacher's own preprocessing (eval)."""
    from datasets import DatasetDict

    t_spec = teacher_spec(spec, source)
    processor = task.load_processor(t_spec)
    check_text_model(processor, teacher, source, spec.model.max_length, key="distill.teacher")
    # role "teacher": the deterministic (evaluation) preprocessing; an empty "train" keeps tasks happy
    seen = task.preprocess(DatasetDict({"train": raw_train.select([]), "teacher": raw_train}), processor, t_spec)
    with progress(len(seen["teacher"]), "teacher logits", disable=args.disable_tqdm) as bar:
        logits = predict_logits(teacher, seen["teacher"], task.collator(processor),
                                args.per_device_eval_batch_size, args.device, bar)
    log.info("distill: cached the teacher's logits for %d training examples", len(logits))
    return logits


def load_unlabelled(cfg: UnlabelledConfig, task, spec: TaskSpec):
    """The raw `distill.unlabelled` split: the data section's input columns only, every label UNLABELLED."""
    columns = task.input_columns(spec)
    ds = load_extra(cfg, spec.data, columns, cfg.split)
    return ds.select_columns(list(columns.values())).add_column("labels", [UNLABELLED] * len(ds))


def labelled_only(task_loss, label_smoothing: float = 0.0):
    """Trainer's `compute_loss_func` on the labelled rows of a batch (label != UNLABELLED): `task_loss`
    (class weights; None: cross-entropy, with training.label_smoothing_factor as Trainer applies it),
    their mean; zero, still in the graph, for a batch without a labelled row."""
    def compute(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        keep = labels != UNLABELLED
        if not bool(keep.any()):
            return logits.sum() * 0.0
        if task_loss is not None:
            return task_loss({"logits": logits[keep]}, labels[keep])
        return F.cross_entropy(logits[keep].float(), labels[keep], label_smoothing=label_smoothing)

    return compute


def _add_unlabelled(cfg: UnlabelledConfig, task, spec: TaskSpec, processor, splits, hooks):
    """(raw unlabelled split, splits whose train has the preprocessed unlabelled rows appended)."""
    from datasets import DatasetDict

    if task.loss(spec) is not None:  # a single-label task's own loss: vision's soft labels (mixup / cutmix)
        raise RecipeError("distill.unlabelled: not available with mixup / cutmix (vision.mixup_alpha, "
                          "vision.cutmix_alpha): the mixed labels would blend in unlabelled rows")
    raw = load_unlabelled(cfg, task, spec)
    seen = task.preprocess(DatasetDict({"train": raw}), processor, spec)["train"]  # as the training split
    labelled = len(splits["train"])
    hooks.metrics["unlabelled_examples"] = len(raw)
    log.info("distill.unlabelled: %d unlabelled inputs joined the %d labelled training examples "
             "(they count in the distillation term only)", len(raw), labelled)
    splits["train"] = Joined(splits["train"], seen)
    return raw, splits


def _check_reads_student_inputs(source: str, task, spec: TaskSpec, processor, teacher) -> None:
    """Run on every batch, the teacher reads the student's token ids: refuse a teacher with another vocabulary,
    whose logits would be computed from the wrong tokens."""
    check_text_model(processor, teacher, source, spec.model.max_length, key="distill.teacher")
    if not callable(getattr(processor, "get_vocab", None)):
        return  # images and audio: the README's rule (the teacher must read the student's inputs)
    own = task.load_processor(teacher_spec(spec, source))
    if callable(getattr(own, "get_vocab", None)) and own.get_vocab() != processor.get_vocab():
        raise RecipeError(f"distill.cache_logits: false runs the teacher {source!r} on the student's token ids, but "
                          "its tokenizer is not the student's; set distill.cache_logits to null (the teacher then "
                          "reads each text through its own tokenizer)")


def attach(cfg: DistillConfig, task, spec: TaskSpec, processor, loaded, splits, hooks, args):
    """Add the distillation term to `hooks`; returns the splits (train carrying cached logits, and the
    unlabelled rows of `distill.unlabelled`)."""
    teacher = load_teacher(cfg.teacher, task, spec, loaded.label_names)
    stochastic = task.stochastic(spec)
    cache = (not stochastic) if cfg.cache_logits is None else cfg.cache_logits
    if cache and stochastic:
        raise RecipeError("distill.cache_logits: the training inputs are augmented randomly; set it to false or null")
    raw = [loaded.splits["train"]]
    if cfg.unlabelled is not None:
        unlabelled, splits = _add_unlabelled(cfg.unlabelled, task, spec, processor, splits, hooks)
        raw.append(unlabelled)
    if cache:
        logits = torch.cat([_cached_logits(cfg.teacher, task, spec, teacher, part, args) for part in raw])
        splits["train"] = WithColumn(splits["train"], TEACHER_COLUMN, logits)
        hooks.batch_columns.append(TEACHER_COLUMN)
        del teacher

        def teacher_logits(inputs, columns):
            return columns[TEACHER_COLUMN]
    else:
        _check_reads_student_inputs(cfg.teacher, task, spec, processor, teacher)

        @torch.no_grad()
        def teacher_logits(inputs, columns):
            device = next(iter(inputs.values())).device
            teacher.to(device)  # moved with the student (a no-op after the first batch)
            return teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits

    def objective(trainer, loss, model, inputs, outputs, columns):
        logits = outputs["logits"]
        target = teacher_logits(inputs, columns).to(logits.device)
        return distillation_loss(loss, logits, target, cfg.alpha, cfg.temperature)

    hooks.objectives.append(objective)
    return splits
