"""The transfer report (recipe `compare`): what pretraining buys, measured against the same recipe without it.

Each entry of `compare` (recipe/variants.py: `scratch`, `linear_probe`, the task's baselines such as
`majority`, or any named set of overrides) runs after the main run, into `<output_dir>/compare/<name>`;
then report.json, report.md and curves.png (outputs/report.py) state each pretrained run's gain over
scratch and flag negative transfer.
"""

from __future__ import annotations

import logging
from typing import Any

from hf_transfer.outputs import report as report_files
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
    curve: dict[float, float] = {}  # epoch -> value; the first per epoch (the last is the final evaluate)
    for e in result.trainer.state.log_history:
        if f"eval_{metric}" in e and "epoch" in e:
            curve.setdefault(e["epoch"], e[f"eval_{metric}"])
    return {
        "name": name,
        "kind": kind,
        "strategy": recipe.finetune.strategy,
        "pretrained": recipe.model.pretrained,
        "validation": m["validation"].get(f"eval_{metric}"),
        "test": m.get("test", {}).get(f"test_{metric}"),
        "train_seconds": round(m["train"]["train_runtime"] + features.get("seconds", 0.0), 1),
        "cached_features": bool(features),
        "trainable_parameters": m["trainable_parameters"],
        "output_dir": str(result.output_dir),
        "curve": sorted(curve.items()),
        "collapsed": bool(m.get("collapse")),
    }


def _gain(row: dict, scratch: dict | None, greater: bool, split: str) -> float | None:
    if scratch is None or row[split] is None or scratch[split] is None:
        return None
    diff = row[split] - scratch[split] if greater else scratch[split] - row[split]
    return round(100 * diff, 2) if greater else diff


def _baseline_row(name: str, metrics: dict[str, dict[str, float]], metric: str) -> dict[str, Any]:
    return {
        "name": name, "kind": name, "strategy": None, "pretrained": False,
        "validation": metrics["validation"].get(f"eval_{metric}"),
        "test": metrics.get("test", {}).get(f"test_{metric}"),
        "train_seconds": 0.0, "cached_features": False, "trainable_parameters": 0,
        "output_dir": None, "curve": [], "collapsed": False,
    }


def run_compare(recipe, result, overwrite: bool = False) -> dict[str, Any]:
    """Run the comparison runs of `recipe.compare`, write report.json / report.md / curves.png."""
    task, spec = resolve(recipe)
    out = result.output_dir
    metric, greater = task.best_metric(spec)
    raw = recipe.to_dict()
    raw["training"]["output_dir"] = str(out)  # variants go under <out>/compare/
    rows = [_row("main", _kind(recipe), recipe, result, metric)]
    for name, overrides in variants.entries(recipe.compare, task.baselines):
        if name in task.baselines:
            splits = load_splits(recipe, recipe.training.get("seed", 42)).splits
            args = training_arguments(recipe, out / "compare" / name)  # evaluation settings (batch, generation)
            rows.append(_baseline_row(name, task.baselines[name](spec, splits, args), metric))
            continue
        variant = load_recipe(variants.variant_raw(raw, name, overrides))
        log.info("transfer report: running %r", name)
        res = run_single(variant, overwrite=overwrite)
        rows.append(_row(name, _kind(variant), variant, res, metric))
        del res
    split = "test" if all(r["test"] is not None for r in rows) else "validation"
    scratch = next((r for r in rows if r["kind"] == "scratch"), None)
    for r in rows:
        r["gain_over_scratch"] = _gain(r, scratch, greater, split) if r["kind"] in ("pretrained", "linear_probe") else None
        r["negative_transfer"] = r["gain_over_scratch"] is not None and r["gain_over_scratch"] <= 0
    if not result.trainer.is_world_process_zero():
        return {}
    report = {
        "metric": metric,
        "split": split,
        "gain_unit": "points" if greater else f"{metric} reduction",
        "negative_transfer": rows[0]["negative_transfer"],
        "runs": rows,
    }
    report_files.write(report, out)
    return report
