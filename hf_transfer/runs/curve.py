"""Learning curves (recipe `curve: {fractions: [0.05, 0.1, 0.25, 0.5, 1.0]}`): what pretraining buys when
labelled data is scarce.

Each fraction f trains the recipe, with its `compare` runs and its `seeds`, on a share of the training
split (tasks/subsets.py `select_share`): per class the first round(f * n_c) rows, at least one, in an order
drawn with the run's training.seed, so the subsets are nested (the 5% rows lie among the 10% rows) and
stratified, and each seed draws others. Validation and test are the same at every point. Point f is
written into <output_dir>/fraction-<f>: the folder the recipe with `curve.fraction: f` writes (its
recipe.yaml reproduces it), with its transfer report (runs/compare.py; over seeds, runs/seeds.py). Then
curve.json, curve.md, curve.png and report.html (outputs/curve.py) give every run's metric ± its 95%
interval against the number of training examples N, and the examples scratch needs to match each
pretrained run at each N (`examples_needed`). As with seeds: the output folder must be empty unless
--overwrite (every point is written beside the previous run, which is replaced only once all are
complete) or --resume (finished points are kept, the others continue).
"""

from __future__ import annotations

import copy
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

from hf_transfer.folder import read_metrics, staged
from hf_transfer.outputs import curve as curve_files
from hf_transfer.outputs import report as report_files
from hf_transfer.outputs.html import write_curve_html
from hf_transfer.recipe import variants
from hf_transfer.runs.compare import run_compare
from hf_transfer.runs.seeds import run_seeds
from hf_transfer.runs.single import run_single
from hf_transfer.tasks import resolve
from hf_transfer.tasks.subsets import share, too_small
from hf_transfer.train import FinetuneResult, load_splits, output_dir
from hf_transfer.trainer import training_arguments
from hf_transfer.validate import load_recipe

log = logging.getLogger(__name__)

TRANSFER = ("pretrained", "linear_probe")  # run kinds whose curve scratch is measured against


def point_folder(out: Path, fraction: float) -> Path:
    return out / f"fraction-{fraction:g}"


def point_recipe(recipe, out: Path, fraction: float):
    """The recipe of one point: `curve.fraction: fraction`, written into fraction-<fraction>."""
    raw = copy.deepcopy(recipe.to_dict())
    raw["curve"]["fraction"] = fraction
    raw["training"]["output_dir"] = str(point_folder(out, fraction))
    return load_recipe(raw)


def plan(recipe) -> dict[str, Any]:
    """What the curve will train: the examples at each fraction (the first seed's draw of the pool: the
    training split after validation is carved and max_train_samples applied), the runs, the seeds, the
    count of training runs and the classes a fraction is too small to hold."""
    task, spec = resolve(recipe)
    seeds = recipe.seeds or [recipe.training.get("seed", 42)]
    fractions = sorted(recipe.curve.fractions)
    names = [name for name, _ in variants.entries(recipe.compare or [], task.baselines)]
    loaded = load_splits(recipe, seeds[0])  # the whole pool: recipe.curve.fraction is unset here
    column = task.labeler(spec).stratify
    strata = list(loaded.splits["train"][column]) if column else None
    groups = [len(loaded.splits["train"])] if strata is None else [strata.count(c) for c in sorted(set(strata))]
    label = (lambda c: loaded.label_names[c]) if loaded.label_names else str
    trained = [variants.MAIN] + [n for n in names if n not in task.baselines]
    return {
        "fractions": fractions,
        "examples": [sum(share(n, f) for n in groups) for f in fractions],
        "pool": len(loaded.splits["train"]),
        "stratified": strata is not None,
        "runs": trained,
        "baselines": [n for n in names if n in task.baselines],
        "seeds": seeds,
        "training_runs": len(fractions) * len(trained) * len(seeds),
        "too_small": {f"{f:g}": [label(c) for c in too_small(strata, f)] for f in fractions if too_small(strata, f)},
    }


def describe(planned: dict[str, Any]) -> str:
    """The plan in one line, logged before the first run."""
    p = planned
    line = (f"curve: {len(p['fractions'])} fractions (N = {', '.join(map(str, p['examples']))} of {p['pool']} "
            f"training rows) x {len(p['runs'])} trained runs ({', '.join(p['runs'])}) x {_count(p['seeds'], 'seed')} "
            f"= {p['training_runs']} training runs")
    if p["baselines"]:
        line += f", plus baselines that train nothing ({', '.join(p['baselines'])})"
    for fraction, classes in p["too_small"].items():
        line += f"; fraction {fraction} is too small to hold every class: {', '.join(classes)} keep one example each"
    return line


def _count(items: list[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'s' * (len(items) != 1)}"


def run_curve(recipe, overwrite: bool = False, resume: bool = False) -> FinetuneResult:
    """Train every point (with its comparison and seeds), then write the curve's files; returns a
    FinetuneResult whose metrics are curve.json. With --overwrite the points are written beside the
    previous run, which is replaced only once every point and the curve are complete (folder.staged)."""
    out = output_dir(recipe)
    args = training_arguments(recipe, out)
    planned = plan(recipe)
    log.info(describe(planned))
    points, last = [], None
    with staged(out, overwrite, resume, args) as target:  # `out`, or its staging sibling
        for fraction, expected in zip(planned["fractions"], planned["examples"]):
            folder = point_folder(target, fraction)
            if resume and _finished(folder, planned["seeds"]):
                log.info("curve: fraction %g already finished (%s)", fraction, folder)
            else:
                log.info("curve: fraction %g (about %d training examples) into %s", fraction, expected, folder)
                point = point_recipe(recipe, target, fraction)
                last = (run_seeds(point, overwrite=overwrite, resume=resume) if point.seeds else
                        run_single(point, overwrite=overwrite, resume=resume,
                                   between=partial(run_compare, overwrite=overwrite)))
            points.append(_point(fraction, folder, planned["too_small"].get(f"{fraction:g}", [])))
        if args.process_index != 0:
            return FinetuneResult(metrics={}, output_dir=out, trainer=last.trainer if last else None)
        task, spec = resolve(recipe)
        curve_files.write(build_curve(points, planned, *task.best_metric(spec)), target)
        write_curve_html(target)
    curve = curve_files.read(out)  # as written, its paths in `out`
    return FinetuneResult(metrics=curve, output_dir=out, trainer=last.trainer if last else None)


def _finished(folder: Path, seeds: list[int]) -> bool:
    """A point whose transfer report, over the same seeds, is written (the report comes last)."""
    return (folder / report_files.JSON).is_file() and report_files.read(folder).get("seeds") == seeds


def _point(fraction: float, folder: Path, too_few: list[str]) -> dict[str, Any]:
    """A point's report with its training examples per seed (each seed's main run's metrics.json)."""
    report = report_files.read(folder)
    main = report["runs"][0]
    examples = [read_metrics(Path(s["output_dir"])).get("train_examples") for s in main["per_seed"]]
    return {"fraction": fraction, "examples_per_seed": examples, "examples": _mean(examples),
            "output_dir": str(folder), "too_small": too_few, "report": report}


def _mean(values: list[Any]) -> float | None:
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


# --------------------------------------------------------------------------- the curve


def build_curve(points: list[dict[str, Any]], planned: dict[str, Any], metric: str, greater: bool) -> dict[str, Any]:
    """curve.json: every run's mean and 95% interval at each point (from the points' transfer reports),
    and the examples scratch needs to match each pretrained run at each point."""
    split = "test" if all(p["report"]["split"] == "test" for p in points) else "validation"
    runs = []
    for i, first in enumerate(points[0]["report"]["runs"]):
        rows = [p["report"]["runs"][i] for p in points]
        runs.append({**{k: first[k] for k in ("name", "kind", "strategy")},
                     "points": [_value(p, r, split) for p, r in zip(points, rows)]})
    scratch = next((r for r in runs if r["kind"] == "scratch"), None)
    matches = [] if scratch is None else [
        _match(r, at, scratch, greater) for r in runs if r["kind"] in TRANSFER for at in r["points"]]
    return {
        "metric": metric, "split": split, "greater_is_better": greater, "seeds": planned["seeds"],
        "confidence": points[0]["report"]["confidence"], "stratified": planned["stratified"],
        "pool": planned["pool"], "training_runs": planned["training_runs"],
        "points": [{k: p[k] for k in ("fraction", "examples", "examples_per_seed", "output_dir", "too_small")}
                   for p in points],
        "runs": runs, "scratch": None if scratch is None else scratch["name"], "matches": matches,
    }


def _value(point: dict[str, Any], row: dict[str, Any], split: str) -> dict[str, Any]:
    found = row.get("interval") if point["report"]["split"] == split else None
    mean = found["mean"] if found else row[split]
    half = found["half_width"] if found else None
    return {"fraction": point["fraction"], "examples": point["examples"], "mean": mean,
            "low": None if half is None else mean - half, "high": None if half is None else mean + half,
            "half_width": half, "collapsed": row.get("collapsed", False)}


def _match(run: dict[str, Any], at: dict[str, Any], scratch: dict[str, Any], greater: bool) -> dict[str, Any]:
    examples = [p["examples"] for p in scratch["points"]]
    values = [p["mean"] for p in scratch["points"]]
    needed = examples_needed(examples, values, at["mean"], greater)
    return {"run": run["name"], "kind": run["kind"], "examples": at["examples"], "value": at["mean"], **needed}


def examples_needed(examples: list[float], values: list[float], target: float, greater: bool = True) -> dict[str, Any]:
    """Where a curve (values at increasing example counts) first reaches `target`, read linearly in
    log(examples) between its points (as curve.png draws it): {"needed": examples or None, "status"}.
    status: `reached` between two points; `at the smallest point` when the first point already reaches it
    (needed: that point's examples, an upper bound); `not reached` within the data (needed: None)."""
    sign = 1.0 if greater else -1.0
    found = sorted((n, v) for n, v in zip(examples, values) if n is not None and v is not None)
    for i, (n, v) in enumerate(found):
        if sign * (v - target) < 0:
            continue
        if i == 0:
            return {"needed": float(n), "status": "at the smallest point"}
        (n0, v0) = found[i - 1]
        t = (target - v0) / (v - v0)  # v0 is below the target and v reaches it: v != v0
        return {"needed": math.exp(math.log(n0) + t * (math.log(n) - math.log(n0))), "status": "reached"}
    best = max(found, key=lambda p: sign * p[1], default=(None, None))
    return {"needed": None, "status": "not reached", "best": best[1], "best_examples": best[0]}
