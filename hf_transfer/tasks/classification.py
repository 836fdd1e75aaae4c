"""Classification, the shared part of text-, image- and audio-classification: problem types, labels,
metrics, loss and the majority baseline.

`data.problem_type` is one of PROBLEM_TYPES: single-label (one class id per example), multi-label (a
0/1 vector: a list of 0/1 columns, or one column of label lists) or regression (one float). Label names
come from `data.label_names`, else the dataset's ClassLabel names, else the sorted values of the
training split. `task(...)` builds a classification task record from its modality's own functions.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from hf_transfer.errors import DataError
from hf_transfer.recipe.schema import DataConfig
from hf_transfer.tasks.base import NO_SAVE, Labeler, Task, TaskSpec
from hf_transfer.tasks.data import EMPTY, is_stream
from hf_transfer.tasks.metrics import compute

log = logging.getLogger(__name__)

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")

# metric key (after the eval_ / test_ prefix) -> (model-index type, display name, args): the card's table
METRIC_NAMES = {
    "accuracy": ("accuracy", "Accuracy", None),
    "f1_macro": ("f1", "F1 (macro)", {"average": "macro"}),
    "precision_macro": ("precision", "Precision (macro)", {"average": "macro"}),
    "recall_macro": ("recall", "Recall (macro)", {"average": "macro"}),
    "f1_micro": ("f1", "F1 (micro)", {"average": "micro"}),
    "exact_match": ("exact_match", "Exact match", None),
    "mse": ("mse", "MSE", None),
    "pearsonr": ("pearsonr", "Pearson r", None),
    "spearmanr": ("spearmanr", "Spearman rho", None),
}


# --------------------------------------------------------------------------- labels


def label_columns(cfg: DataConfig) -> list[str]:
    return cfg.label_column if isinstance(cfg.label_column, list) else [cfg.label_column]


def class_names(feature) -> list[str] | None:
    """The names of a ClassLabel column (or of a list of ClassLabels), else None."""
    return getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)


def _split_values(value: Any, cfg: DataConfig, split: str) -> list:
    """One multi-label cell as a list of labels: a list as it is; a string split at data.label_separator."""
    if value is None:
        return []
    if isinstance(value, str):
        if not cfg.label_separator:
            raise DataError(
                f"data.label_column: multi-label value {value!r} in split {split!r} is a string; set "
                "data.label_separator (e.g. ';') to split it, or store a list of labels"
            )
        return [v.strip() for v in value.split(cfg.label_separator) if v.strip()]
    return list(value)


def _infer_label_names(train, cfg: DataConfig) -> list[str] | None:
    if cfg.problem_type == "regression":
        return None
    columns = label_columns(cfg)
    if cfg.problem_type == "multi_label_classification" and len(columns) > 1:
        return cfg.label_names or columns
    if is_stream(train):  # a stream cannot be scanned for its labels
        names = cfg.label_names or class_names((train.features or {}).get(columns[0]))
        if not names:
            raise DataError(
                f"data.label_names: required with data.streaming (a stream cannot be scanned for its labels) "
                f"unless column {columns[0]!r} is a ClassLabel"
            )
        return [str(n) for n in names]
    names = [str(n) for n in cfg.label_names] if cfg.label_names else class_names(train.features[columns[0]])
    values = train[columns[0]]
    if cfg.problem_type == "multi_label_classification":
        values = [v for row in values for v in _split_values(row, cfg, cfg.train_split)]
    if cfg.problem_type == "single_label_classification" and None in values:
        raise DataError(f"data.label_column: column {columns[0]!r} of the training split {cfg.train_split!r} has "
                        f"{values.count(None)} of {len(values)} labels {EMPTY}")
    if not names:
        try:  # numbers sort as numbers (1, 2, 10), then become names
            names = [str(v) for v in sorted(set(values))]
        except TypeError:
            raise DataError(
                f"data.label_column: column {columns[0]!r} mixes value types; set data.label_names"
            ) from None
    if cfg.problem_type == "single_label_classification" and len(set(map(str, values))) < 2:
        raise DataError(
            f"data.label_column: the training split {cfg.train_split!r} holds a single class "
            f"({values[0]!r}); a classifier needs examples of at least two"
        )
    return list(names)


def encoder(cfg: DataConfig, label_names: list[str] | None, split: str, ids: bool = False):
    """Return a function mapping one raw example to its `labels` value. Labels are matched by value
    (`str(value)` among the label names); an integer counts as a class id only when the column is a
    ClassLabel (`ids`), or when it names no label and data.label_names were given for ids 0..n-1."""
    columns = label_columns(cfg)
    index = {name: i for i, name in enumerate(label_names or [])}
    ids_allowed = ids or bool(cfg.label_names)

    def one(value: Any) -> int:
        if value is None:
            raise DataError(f"data.label_column: a label in split {split!r} is {EMPTY}")
        number = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(index)  # a bool is a name
        if ids and number:
            return value
        if str(value) in index:
            return index[str(value)]
        if ids_allowed and number:
            return value
        raise DataError(
            f"data.label_column: label {value!r} in split {split!r} is not one of "
            f"label_names {list(index)}"
        )

    def regression(ex):
        value = ex[columns[0]]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(
                f"data.label_column: regression label {value!r} in split {split!r} is not a number"
            )
        return float(value)

    def multi(ex):
        if len(columns) > 1:
            values = [ex[c] for c in columns]
            if any(v not in (0, 1, True, False) for v in values):
                raise DataError(
                    f"data.label_column: multi-label columns must hold 0/1 in split {split!r}, "
                    f"got {values}"
                )
            return [float(v) for v in values]
        hot = [0.0] * len(index)
        for value in _split_values(ex[columns[0]], cfg, split):
            hot[one(value)] = 1.0
        return hot

    return {
        "regression": regression,
        "multi_label_classification": multi,
        "single_label_classification": lambda ex: one(ex[columns[0]]),
    }[cfg.problem_type]


def labeler(spec: TaskSpec) -> Labeler:
    """`data.label_column` -> `labels`, by problem type."""
    cfg = spec.data
    single = cfg.problem_type == "single_label_classification"
    return Labeler(
        columns=[("data.label_column", c) for c in label_columns(cfg)],
        names=lambda train: _infer_label_names(train, cfg),
        encode=lambda ds, names, split: encode_labels(ds, cfg, names, split),
        stratify="labels" if single else None,
    )


def encode_labels(ds, cfg: DataConfig, label_names, split: str):
    ids = class_names((ds.features or {}).get(label_columns(cfg)[0])) is not None  # ClassLabel: values are class ids
    encode = encoder(cfg, label_names, split, ids=ids)
    if is_stream(ds):  # labelled lazily, row by row, as training reads it
        drop = [c for c in label_columns(cfg) if c != "labels"]  # a `labels` column is overwritten
        return ds.map(lambda ex: {"labels": encode(ex)}, remove_columns=drop)
    labels = [encode(ex) for ex in ds.select_columns(label_columns(cfg))]  # never decodes audio/images
    if split == cfg.train_split and cfg.problem_type == "single_label_classification":
        missing = [n for i, n in enumerate(label_names) if i not in set(labels)]
        if missing:
            log.warning("data.label_names: %s never occur in the training split %r; the model cannot learn them",
                        ", ".join(map(repr, missing)), split)
    drop = [c for c in label_columns(cfg) if c in ds.column_names] + (
        ["labels"] if "labels" in ds.column_names else []
    )
    return ds.remove_columns(sorted(set(drop))).add_column("labels", labels)


def head_config(spec: TaskSpec, label_names: list[str] | None) -> dict[str, Any]:
    """Config kwargs of a new classification head: label count, problem type and the label names."""
    kwargs: dict[str, Any] = {"num_labels": len(label_names) if label_names else 1,
                              "problem_type": spec.data.problem_type}
    if label_names:
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    return kwargs


# --------------------------------------------------------------------------- metrics


def _classification(preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    out = compute("accuracy", preds, refs)
    for name in ("f1", "precision", "recall"):
        out |= compute(name, preds, refs, out_key=f"{name}_macro", average="macro")
    out["top_prediction_share"] = float(np.bincount(preds).max() / len(preds)) if len(preds) else 0.0
    return out


def _multilabel(logits: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    preds = (logits > 0).astype(int)
    refs = refs.astype(int)
    out = {"exact_match": float((preds == refs).all(axis=1).mean())}
    for name in ("f1", "precision", "recall"):
        out |= compute(name, preds, refs, out_key=f"{name}_macro", average="macro")
    out |= compute("f1", preds, refs, out_key="f1_micro", average="micro")
    return out


def _regression(preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    """MSE, Pearson's r and Spearman's rho. Where a correlation is undefined (constant predictions, as a
    model can give early in training, or constant references) it is reported as 0, no correlation: the key
    is always there for metric_for_best_model, and a NaN would stay the best score once recorded."""
    preds, refs = preds.reshape(-1), refs.reshape(-1)
    out = compute("mse", preds, refs)
    if len(refs) > 1 and np.std(refs) > 0 and np.std(preds) > 0:
        return out | compute("pearsonr", preds, refs) | compute("spearmanr", preds, refs)
    return out | {"pearsonr": 0.0, "spearmanr": 0.0}


def score(problem_type: str, logits, refs: np.ndarray) -> dict[str, float]:
    """The metrics of `problem_type` for model outputs `logits` against `refs`."""
    if problem_type == "regression":
        return _regression(np.asarray(logits), refs)
    if problem_type == "multi_label_classification":
        return _multilabel(np.asarray(logits), refs)
    return _classification(np.asarray(logits).argmax(-1), refs)


def compute_metrics_fn(problem_type: str) -> Callable[[Any], dict[str, float]]:
    """A `compute_metrics` for Trainer, by problem type."""

    def compute(pred) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        refs = np.asarray(pred.label_ids)
        return score(problem_type, logits, refs) | {"samples": len(refs)}  # samples: gathered over processes

    return compute


def class_details(problem_type: str, logits, refs: np.ndarray, label_names: list[str] | None) -> dict | None:
    """Per-class precision / recall / F1 / support and the confusion matrix (single-label: rows are the true
    class, columns the predicted one; multi-label: one [[tn, fp], [fn, tp]] per label), label names in
    label-id order. None for regression."""
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix, precision_recall_fscore_support

    if problem_type == "regression":
        return None
    logits, refs = np.asarray(logits), np.asarray(refs)
    ids = list(range(logits.shape[-1]))
    names = [str(n) for n in label_names] if label_names else [str(i) for i in ids]
    if problem_type == "multi_label_classification":
        preds, refs = (logits > 0).astype(int), refs.astype(int)
        matrix, layout = multilabel_confusion_matrix(refs, preds), "per label: [[tn, fp], [fn, tp]]"
    else:
        preds, refs = logits.argmax(-1), refs.astype(int)
        matrix, layout = confusion_matrix(refs, preds, labels=ids), "rows: true label, columns: predicted label"
    p, r, f, n = precision_recall_fscore_support(refs, preds, labels=ids, average=None, zero_division=0)
    return {
        "per_class": {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(n[i])}
                      for i, name in enumerate(names)},
        "confusion_matrix": {"labels": names, "layout": layout, "matrix": matrix.tolist()},
    }


def details(spec: TaskSpec, pred, label_names: list[str] | None) -> dict | None:
    """The task record's `details`: class_details of a split's final evaluation."""
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    return class_details(spec.data.problem_type, logits, pred.label_ids, label_names)


def confusion_scores(logits, refs, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Single-label accuracy and macro F1 / precision / recall of every index row at once (the transfer
    report's bootstrap), from one confusion matrix per row: what `_classification` gives for each row, as
    scikit-learn computes it (macro over the labels present in the row's references or predictions, 0 where
    undefined)."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    preds, refs = np.asarray(logits).argmax(-1), np.asarray(refs).astype(np.int64)
    k = int(max(np.asarray(logits).shape[-1], refs.max(initial=0) + 1))
    m = len(rows)
    codes = (refs * k + preds)[rows] + (np.arange(m) * k * k)[:, None]
    counts = np.bincount(codes.ravel(), minlength=m * k * k).reshape(m, k, k)
    tp = np.diagonal(counts, axis1=1, axis2=2).astype(float)
    true, pred = counts.sum(axis=2), counts.sum(axis=1)
    present = (true + pred) > 0

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    def macro(values):
        return (values * present).sum(axis=1) / present.sum(axis=1)

    return {"accuracy": tp.sum(axis=1) / rows.shape[1], "f1_macro": macro(ratio(2 * tp, true + pred)),
            "precision_macro": macro(ratio(tp, pred)), "recall_macro": macro(ratio(tp, true))}


def resampled(spec: TaskSpec):
    """The task record's `resampled`: confusion_scores for single-label classification, else None (the
    bootstrap calls compute_metrics per resample)."""
    return confusion_scores if spec.data.problem_type == "single_label_classification" else None


def best_metric_of(problem_type: str) -> tuple[str, bool]:
    """(metric_for_best_model, greater_is_better) by problem type."""
    return {
        "regression": ("mse", False),
        "multi_label_classification": ("f1_macro", True),
    }.get(problem_type, ("accuracy", True))


def best_metric(spec: TaskSpec) -> tuple[str, bool]:
    return best_metric_of(spec.data.problem_type)


def compute_metrics(spec: TaskSpec):
    return compute_metrics_fn(spec.data.problem_type)


# --------------------------------------------------------------------------- loss


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on class ids (one per input, or one per token: -100 skipped) or on soft targets
    (mixup / cutmix), with class `weight`s if given (a weighted mean over the ids, a batch mean over soft
    targets); BCE multi-label; MSE regression."""
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    if labels.dim() == logits.dim():  # soft targets, one row per image
        if weight is None:
            return torch.sum(-labels * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return F.cross_entropy(logits, labels, weight=weight)
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), weight=weight)


# --------------------------------------------------------------------------- the majority baseline


def majority_logits(problem_type: str, train_labels) -> np.ndarray:
    """A constant prediction from the training labels: the majority class (per label for multi-label;
    the mean for regression), as one row of logits."""
    train = np.asarray(train_labels, dtype=float)
    if problem_type == "regression":
        return np.array([train.mean()])
    if problem_type == "multi_label_classification":
        return np.where(train.mean(axis=0) >= 0.5, 1.0, -1.0)
    counts = np.bincount(train.astype(int))
    return np.eye(len(counts))[counts.argmax()]


def majority(spec: TaskSpec, splits, args=None) -> dict[str, dict[str, float]]:
    """Metrics of the majority prediction on the validation and test splits (a baseline: no training)."""
    from transformers import EvalPrediction

    constant = majority_logits(spec.data.problem_type, splits["train"]["labels"])
    metrics = compute_metrics_fn(spec.data.problem_type)
    out = {}
    for role, prefix in (("validation", "eval"), ("test", "test")):
        if role in splits:
            refs = np.asarray(splits[role]["labels"])
            logits = np.tile(constant, (len(refs), 1))
            out[role] = {f"{prefix}_{k}": v for k, v in metrics(EvalPrediction(logits, refs)).items()}
            out.setdefault("predictions", {})[role] = (logits, refs)  # the transfer report's bootstrap
    return out


# --------------------------------------------------------------------------- collapse


COLLAPSE_SHARE = 0.95  # one class predicted for this share of the examples or more: a collapsed run
COLLAPSE_HINT = ("the model predicts one class for almost every example; try a higher (or, if the loss "
                 "diverged, lower) training.learning_rate, more training.num_train_epochs, "
                 "training.warmup_steps, data.class_weights: auto, or hf-transfer tune")


def diagnose(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """A collapse flag when the validation or test predictions are (almost) all one class."""
    shares = {role: metrics[role][f"{prefix}_top_prediction_share"]
              for role, prefix in (("validation", "eval"), ("test", "test"))
              if f"{prefix}_top_prediction_share" in (metrics.get(role) or {})}
    collapsed = {role: share for role, share in shares.items() if share >= COLLAPSE_SHARE}
    if not collapsed:
        return None
    return {"splits": collapsed, "threshold": COLLAPSE_SHARE, "hint": COLLAPSE_HINT}


# --------------------------------------------------------------------------- the record


def task(**fields: Any) -> Task:
    """A classification task record: the modality's functions in `fields`, the classification parts here."""
    shared = dict(
        labeler=labeler, compute_metrics=compute_metrics, best_metric=best_metric, metric_names=METRIC_NAMES,
        baselines={"majority": majority}, save=NO_SAVE, diagnose=diagnose, details=details, resampled=resampled,
        objectives=("class_weights", "distill", "domain"), multitask=True,
    )
    return Task(**{**shared, **fields})
