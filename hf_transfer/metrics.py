"""Evaluation metrics through `evaluate`, with an offline path.

`evaluate.load("accuracy")` fetches the metric's script from the Hugging Face Hub. When the Hub
is unreachable (always, offline), the same metric is computed with the scikit-learn / SciPy
function that evaluate's own module calls, so figures agree with either path.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)


def _sk_accuracy(predictions, references, **kw):
    from sklearn.metrics import accuracy_score

    return {"accuracy": float(accuracy_score(references, predictions, **kw))}


def _sk_prf(name: str):
    def fn(predictions, references, **kw):
        from sklearn import metrics

        score = getattr(metrics, f"{name}_score")(references, predictions, zero_division=0, **kw)
        return {name: float(score)}

    return fn


def _sk_mse(predictions, references, **kw):
    from sklearn.metrics import mean_squared_error

    return {"mse": float(mean_squared_error(references, predictions, **kw))}


def _scipy_corr(name: str):
    def fn(predictions, references, **kw):
        from scipy import stats

        func = stats.pearsonr if name == "pearsonr" else stats.spearmanr
        return {name: float(func(references, predictions)[0])}

    return fn


# Metric name on the Hub (evaluate-metric/<name>) -> offline implementation.
OFFLINE_METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "accuracy": _sk_accuracy,
    "f1": _sk_prf("f1"),
    "precision": _sk_prf("precision"),
    "recall": _sk_prf("recall"),
    "mse": _sk_mse,
    "pearsonr": _scipy_corr("pearsonr"),
    "spearmanr": _scipy_corr("spearmanr"),
}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "HF_EVALUATE_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


@cache
def metric(name: str) -> Callable[..., dict[str, float]]:
    """`compute(predictions=..., references=..., **kwargs)` for `name`."""
    if not _offline():
        try:
            import evaluate

            return evaluate.load(name).compute
        except Exception as err:  # Hub unreachable or module broken: use the local twin
            log.info("evaluate.load(%r) unavailable (%s); computing it locally", name, err.__class__.__name__)
    return OFFLINE_METRICS[name]


def _compute(name: str, preds, refs, out_key: str | None = None, **kw) -> dict[str, float]:
    values = metric(name)(predictions=preds, references=refs, **kw)
    key = next(iter(values))
    return {out_key or key: float(values[key])}


def _classification(preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    out = _compute("accuracy", preds, refs)
    for name in ("f1", "precision", "recall"):
        out |= _compute(name, preds, refs, out_key=f"{name}_macro", average="macro")
    return out


def _multilabel(logits: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    preds = (logits > 0).astype(int)
    refs = refs.astype(int)
    out = {"exact_match": float((preds == refs).all(axis=1).mean())}
    for name in ("f1", "precision", "recall"):
        out |= _compute(name, preds, refs, out_key=f"{name}_macro", average="macro")
    out |= _compute("f1", preds, refs, out_key="f1_micro", average="micro")
    return out


def _regression(preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    preds, refs = preds.reshape(-1), refs.reshape(-1)
    out = _compute("mse", preds, refs)
    if len(refs) > 1 and np.std(refs) > 0 and np.std(preds) > 0:
        out |= _compute("pearsonr", preds, refs) | _compute("spearmanr", preds, refs)
    return out


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


def best_metric(problem_type: str) -> tuple[str, bool]:
    """(metric_for_best_model, greater_is_better) by problem type."""
    return {
        "regression": ("mse", False),
        "multi_label_classification": ("f1_macro", True),
    }.get(problem_type, ("accuracy", True))
