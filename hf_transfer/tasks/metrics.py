"""Evaluation metrics: one implementation, computed locally with scikit-learn, SciPy, seqeval and jiwer.

These are the functions that `evaluate`'s metric modules (evaluate-metric/accuracy, f1, precision,
recall, mse, pearsonr, spearmanr, seqeval, wer, cer) call, with the same arguments, so figures match the Hub's
metric cards; the names below are those modules' names. Nothing is fetched from the Hub and no metric
script is run: the same figures online and offline.
"""

from __future__ import annotations

from typing import Callable


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


def _seqeval(predictions, references, **kw):
    """evaluate's `seqeval` module, computed as it computes it: the seqeval package's classification_report
    (micro average and one entry per entity type) plus token accuracy."""
    from seqeval.metrics import accuracy_score, classification_report

    report = classification_report(y_true=references, y_pred=predictions, output_dict=True, **kw)
    report.pop("macro avg")
    report.pop("weighted avg")
    overall = report.pop("micro avg")
    scores: dict = {name: {"precision": s["precision"], "recall": s["recall"], "f1": s["f1-score"],
                           "number": s["support"]} for name, s in report.items()}
    scores |= {"overall_precision": overall["precision"], "overall_recall": overall["recall"],
               "overall_f1": overall["f1-score"], "overall_accuracy": accuracy_score(references, predictions)}
    return scores


def _jiwer(name: str):
    """evaluate's `wer` / `cer` modules: jiwer's corpus rate over all pairs (references must not be empty)."""

    def fn(predictions, references, **kw):
        import jiwer

        return {name: float(getattr(jiwer, name)(list(references), list(predictions)))}

    return fn


# Metric name (as evaluate-metric/<name> on the Hub) -> its implementation.
METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "accuracy": _sk_accuracy,
    "f1": _sk_prf("f1"),
    "precision": _sk_prf("precision"),
    "recall": _sk_prf("recall"),
    "mse": _sk_mse,
    "pearsonr": _scipy_corr("pearsonr"),
    "spearmanr": _scipy_corr("spearmanr"),
    "seqeval": _seqeval,
    "wer": _jiwer("wer"),
    "cer": _jiwer("cer"),
}


def metric(name: str) -> Callable[..., dict[str, float]]:
    """`compute(predictions=..., references=..., **kwargs)` for `name`."""
    return METRICS[name]


def compute(name: str, preds, refs, out_key: str | None = None, **kw) -> dict[str, float]:
    """{out_key or the metric's own key: value} of metric `name`."""
    values = metric(name)(predictions=preds, references=refs, **kw)
    key = next(iter(values))
    return {out_key or key: float(values[key])}
