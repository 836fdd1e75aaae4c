"""The transfer report (recipe `compare`): what pretraining buys, measured against the same recipe without it.

Each entry of `compare` (recipe/variants.py: `scratch`, `linear_probe`, the task's baselines such as
`majority`, or any named set of overrides) runs after the main run, into `<output_dir>/compare/<name>`;
then report.json, report.md and curves.png (outputs/report.py) give every run's metrics with 95% intervals
and, paired on the same test examples (outputs/intervals.py), each pretrained run's gain over scratch and
every run's difference from the main run, with a verdict only where the interval excludes zero. With
`seeds` (runs/seeds.py) the same report is built from the runs of every seed.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from hf_transfer.folder import COMPARE, PREDICTIONS, read_predictions, write_predictions
from hf_transfer.outputs import intervals
from hf_transfer.outputs import report as report_files
from hf_transfer.outputs.html import epoch_points
from hf_transfer.recipe import variants
from hf_transfer.validate import load_recipe
from hf_transfer.runs.single import run_single
from hf_transfer.strategies import STRATEGIES
from hf_transfer.tasks import resolve
from hf_transfer.train import load_splits
from hf_transfer.trainer import training_arguments

log = logging.getLogger(__name__)


def _kind(recipe) -> str:
    if not recipe.model.pretrained:
        return "scratch"
    return "linear_probe" if STRATEGIES[recipe.finetune.strategy].head_only(recipe.finetune) else "pretrained"


def _row(name: str, kind: str, recipe, result, metric: str) -> dict[str, Any]:
    m = result.metrics
    features = m.get("cached_features") or {}
    predictions = result.output_dir / PREDICTIONS
    return {
        "name": name,
        "kind": kind,
        "strategy": recipe.finetune.strategy,
        "pretrained": recipe.model.pretrained,
        "validation": m["validation"].get(f"eval_{metric}"),
        "test": m.get("test", {}).get(f"test_{metric}"),
        "target": m.get("target", {}).get(f"target_{metric}"),  # domain adaptation's labelled target split
        "train_seconds": round(m["train"]["train_runtime"] + features.get("seconds", 0.0), 3),
        "cached_features": bool(features),
        "trainable_parameters": m["trainable_parameters"],
        "output_dir": str(result.output_dir),
        "curve": epoch_points(result.trainer.state.log_history, f"eval_{metric}"),
        "collapsed": bool(m.get("collapse")),
        "predictions": str(predictions) if predictions.is_file() else None,
    }


def _baseline_row(name: str, metrics: dict[str, dict[str, float]], metric: str, predictions: str | None) -> dict[str, Any]:
    return {
        "name": name, "kind": name, "strategy": None, "pretrained": False,
        "validation": metrics["validation"].get(f"eval_{metric}"),
        "test": metrics.get("test", {}).get(f"test_{metric}"), "target": None,
        "train_seconds": 0.0, "cached_features": False, "trainable_parameters": 0,
        "output_dir": None, "curve": [], "collapsed": False, "predictions": predictions,
    }


def run_compare(recipe, result, overwrite: bool = False) -> dict[str, Any]:
    """Run the comparison runs of `recipe.compare`, write report.json / report.md / curves.png."""
    task, spec = resolve(recipe)
    out = result.output_dir
    metric, _ = task.best_metric(spec)
    raw = recipe.to_dict()
    raw["training"]["output_dir"] = str(out)  # variants go under <out>/compare/
    main_process = result.trainer.is_world_process_zero()
    rows = [_row(variants.MAIN, _kind(recipe), recipe, result, metric)]
    for name, overrides in variants.entries(recipe.compare or [], task.baselines):
        if name in task.baselines:
            splits = load_splits(recipe, recipe.training.get("seed", 42)).splits
            args = training_arguments(recipe, out / COMPARE / name)  # evaluation settings (batch, generation)
            found = task.baselines[name](spec, splits, args)
            predicted, path = found.pop("predictions", None), None
            if predicted and main_process:  # the baseline's folder holds only its predictions
                (out / COMPARE / name).mkdir(parents=True, exist_ok=True)
                write_predictions(out / COMPARE / name, predicted)
                path = str(out / COMPARE / name / PREDICTIONS)
            rows.append(_baseline_row(name, found, metric, path))
            continue
        variant = load_recipe(variants.variant_raw(raw, name, overrides))
        log.info("transfer report: running %r", name)
        res = run_single(variant, overwrite=overwrite)
        rows.append(_row(name, _kind(variant), variant, res, metric))
        del res
    if not main_process:
        return {}
    report = build_report([rows], [recipe.training.get("seed", 42)], task, spec)
    report_files.write(report, out)
    return report


# --------------------------------------------------------------------------- the report over seeds


def build_report(per_seed: list[list[dict[str, Any]]], seeds: list[int], task, spec) -> dict[str, Any]:
    """The report of runs trained at every seed: `per_seed[i]` holds seed i's rows (the same names in
    each); every row gets its mean and 95% interval per metric, the paired difference from the main run
    and, for pretrained runs, from scratch, with a verdict that follows the interval."""
    metric, greater = task.best_metric(spec)
    split = "test" if all(r["test"] is not None for rows in per_seed for r in rows) else "validation"
    scorer = task.resampled(spec) or intervals.looped(_metric_function(task, spec))
    names = [r["name"] for r in per_seed[0]]
    by_name = {name: [next(r for r in rows if r["name"] == name) for rows in per_seed] for name in names}
    scored = {name: _scored(runs, split, scorer) for name, runs in by_name.items()}
    rows = [_merge(runs, seeds) for runs in by_name.values()]
    scratch = next((r for r in rows if r["kind"] == "scratch"), None)
    main = rows[0]
    for r in rows:
        found = scored[r["name"]]
        keys = sorted(found[0][1]) if found else []
        r["intervals"] = {k: _interval(found, k) for k in keys if k in task.metric_names or k == metric}
        r["interval"] = r["intervals"].get(metric)
        r["vs_main"] = None if r is main else _versus_main(found, scored[main["name"]], metric, greater)
        transfer = r["kind"] in ("pretrained", "linear_probe") and scratch is not None
        to_scratch = _paired(found, scored[scratch["name"]], metric, greater) if transfer else None
        r["vs_scratch"] = to_scratch
        r["gain_over_scratch"] = _gain(_mean(by_name[r["name"]], split) if transfer else None,
                                       _mean(by_name[scratch["name"]], split) if transfer else None, greater)
        r["gain_interval"] = None if to_scratch is None else [_units(to_scratch[k], greater) for k in ("low", "high")]
        r["verdict"] = intervals.verdict(to_scratch, "gain", "negative transfer")
        r["negative_transfer"] = r["verdict"] == "negative transfer"
    if any(r.get("target") is not None for r in rows):
        _target_columns(rows, by_name, scorer, metric, greater)
    return {
        "metric": metric,
        "split": split,
        "gain_unit": "points" if greater else f"{metric} reduction",
        "seeds": list(seeds),
        "confidence": intervals.CONFIDENCE,
        "resamples": intervals.RESAMPLES,
        "negative_transfer": main["negative_transfer"],
        "verdict": main["verdict"],
        "runs": rows,
    }


def _target_columns(rows, by_name, scorer, metric: str, greater: bool) -> None:
    """Domain adaptation: every run's metric on the labelled target split (each run whose recipe keeps a
    `domain` section, the `none` and `target_bn` controls included) with its interval, and its difference
    from the main run paired on the same target examples: what the adaptation changes where it is meant to."""
    scored = {name: _scored(runs, "target", scorer) for name, runs in by_name.items()}
    main = rows[0]
    for r in rows:
        found = scored[r["name"]]
        r["target_interval"] = _interval(found, metric)
        r["target_vs_main"] = None if r is main else _versus_main(found, scored[main["name"]], metric, greater)


def _metric_function(task, spec):
    from transformers import EvalPrediction

    compute = task.compute_metrics(spec)
    return lambda predictions, label_ids: compute(EvalPrediction(predictions, label_ids))


def _scored(runs: list[dict[str, Any]], split: str, scorer) -> list[tuple[Any, dict[str, np.ndarray]]] | None:
    """Per seed: (label ids, {metric: values on the whole split, then on every resample}); None when a seed
    kept no predictions of `split`."""
    out = []
    for r in runs:
        predicted = read_predictions(r["predictions"]).get(split) if r.get("predictions") else None
        if predicted is None:
            return None
        predictions, label_ids = predicted
        n = len(label_ids[0] if isinstance(label_ids, tuple) else label_ids)
        out.append((label_ids, scorer(predictions, label_ids, intervals.index_rows(n))))
    return out


def _interval(found, key: str) -> dict[str, float] | None:
    if found is None or any(key not in values for _, values in found):
        return None
    return intervals.interval([v[key][0] for _, v in found], [v[key][1:] for _, v in found])


def _same_examples(a, b) -> bool:
    pairs = zip(a, b) if isinstance(a, tuple) and isinstance(b, tuple) else [(a, b)]
    return not isinstance(a, tuple) ^ isinstance(b, tuple) and all(np.array_equal(x, y) for x, y in pairs)


def _paired(found, reference, key: str, greater: bool) -> dict[str, float] | None:
    """The interval of `found` minus `reference` (reversed for a lower-is-better metric), seed by seed and
    resample by resample; None unless both were scored on the same examples at every seed."""
    if found is None or reference is None or len(found) != len(reference):
        return None
    if not all(_same_examples(a, b) and key in va and key in vb for (a, va), (b, vb) in zip(found, reference)):
        return None
    sign = 1.0 if greater else -1.0
    diffs = [sign * (va[key] - vb[key]) for (_, va), (_, vb) in zip(found, reference)]
    return intervals.interval([d[0] for d in diffs], [d[1:] for d in diffs])


def _versus_main(found, main, key: str, greater: bool) -> dict[str, float | str] | None:
    """A run minus the main run, paired, with its verdict (better / worse / no significant difference)."""
    diff = _paired(found, main, key, greater)
    return None if diff is None else {**diff, "verdict": intervals.verdict(diff)}


def _mean(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r.get(key) for r in runs]  # rows written before a key existed (--resume) lack it
    return None if any(v is None for v in values) else float(np.mean(values))


def _units(diff: float, greater: bool) -> float:
    return round(100 * diff, 2) if greater else diff


def _gain(value: float | None, scratch: float | None, greater: bool) -> float | None:
    if value is None or scratch is None:
        return None
    return _units(value - scratch if greater else scratch - value, greater)


def _merge(runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """One row of a run over seeds: means (train time: per seed), the mean validation curve, `collapsed`
    when any seed collapsed, and each seed's own figures under `per_seed`."""
    first = runs[0]
    curves: dict[float, list[float]] = {}
    for r in runs:
        for epoch, value in r["curve"]:
            curves.setdefault(epoch, []).append(value)
    return {
        **{k: first[k] for k in ("name", "kind", "strategy", "pretrained", "cached_features", "trainable_parameters")},
        "validation": _mean(runs, "validation"),
        "test": _mean(runs, "test"),
        "target": _mean(runs, "target"),
        "train_seconds": round(float(np.mean([r["train_seconds"] for r in runs])), 3),
        "output_dir": first["output_dir"],
        "curve": sorted((e, float(np.mean(v))) for e, v in curves.items()),
        "collapsed": any(r["collapsed"] for r in runs),
        "predictions": first.get("predictions"),
        "per_seed": [{"seed": seed, **{k: r.get(k) for k in ("validation", "test", "target", "output_dir", "collapsed", "predictions")}}
                     for seed, r in zip(seeds, runs)],
    }
