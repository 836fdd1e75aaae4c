"""k-fold cross-validation (recipe `cv: {folds: k, seed: 42}`).

The training split is cut into k folds with scikit-learn's StratifiedKFold (KFold for regression,
multi-label, token classification (whole sentences, not stratified by tag), or classes too small to
stratify: tasks/subsets.py, the task's `Labeler.stratify`). Fold i trains the ordinary pipeline on the other
k-1 folds with fold i as its validation split, into <output_dir>/fold-<i>; a test split, if any, is
evaluated by every fold. Each fold's recipe.yaml says `cv.fold: i`, so the fold reproduces (and
verifies) on its own. Then cv.json and cv.md hold every fold's metrics and their mean ± std
(sample standard deviation, ddof=1). The folds only split data: every modality works.
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
from pathlib import Path
from typing import Any

from hf_transfer.folder import is_finished, read_metrics, staged
from hf_transfer.validate import load_recipe
from hf_transfer.runs.single import run_single
from hf_transfer.trainer import training_arguments
from hf_transfer.train import FinetuneResult, output_dir

log = logging.getLogger(__name__)

ROLES = {"validation": "eval", "test": "test"}
_NOT_SUMMARISED = ("_runtime", "_per_second", "epoch")  # timings say nothing about the model


def fold_recipe(recipe, out: Path, index: int):
    raw = copy.deepcopy(recipe.to_dict())
    raw["cv"]["fold"] = index
    raw["training"]["output_dir"] = str(out / f"fold-{index}")
    return load_recipe(raw)


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{role: {metric: {mean, std, values}}} over the folds (metrics every fold has)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for role in ROLES:
        per_fold = [r[role] for r in runs if role in r]
        if len(per_fold) != len(runs):
            continue
        keys = [k for k in per_fold[0] if not k.endswith(_NOT_SUMMARISED) and all(k in m for m in per_fold)]
        out[role] = {}
        for k in keys:
            values = [float(m[k]) for m in per_fold]
            out[role][k] = {"mean": statistics.fmean(values), "std": statistics.stdev(values), "values": values}
    return out


def run_cv(recipe, overwrite: bool = False, resume: bool = False):
    """Train every fold through run_single, then write cv.json and cv.md; returns a FinetuneResult
    whose metrics are the summary (cv.json). With --overwrite the folds are written beside the previous
    run, which is replaced only once every fold and the summary are complete (folder.staged)."""
    out = output_dir(recipe)
    args = training_arguments(recipe, out)
    runs, last = [], None
    with staged(out, overwrite, resume, args) as target:  # `out`, or its staging sibling
        for i in range(recipe.cv.folds):
            folder = target / f"fold-{i}"
            if resume and is_finished(folder):
                log.info("cv: fold %d already finished (%s)", i, folder)
                metrics = read_metrics(folder)
            else:
                log.info("cv: training fold %d of %d into %s", i, recipe.cv.folds, folder)
                last = run_single(fold_recipe(recipe, target, i), overwrite=overwrite, resume=resume)
                metrics = last.metrics
            runs.append({"fold": i, "output_dir": str(out / f"fold-{i}"),
                         **{r: metrics[r] for r in ROLES if r in metrics}})
        summary = {
            "folds": recipe.cv.folds, "seed": recipe.cv.seed, "metric": args.metric_for_best_model,
            "std": "sample standard deviation over the folds (ddof=1)", **summarise(runs), "runs": runs,
        }
        if args.process_index == 0:
            (target / "cv.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            (target / "cv.md").write_text(cv_markdown(summary), encoding="utf-8")
    return FinetuneResult(metrics=summary, output_dir=out, trainer=last.trainer if last else None)


def cv_markdown(summary: dict[str, Any]) -> str:
    k = summary["folds"]
    lines = [
        f"# {k}-fold cross-validation",
        "",
        f"Folds drawn with seed {summary['seed']}; model selection by {summary['metric']}; "
        f"± is the {summary['std']}.",
    ]
    for role, prefix in ROLES.items():
        if role not in summary:
            continue
        lines += [
            "",
            f"## {role} ({'the held-out fold' if role == 'validation' else 'the same test split for every fold'})",
            "",
            "| metric | " + " | ".join(f"fold {i}" for i in range(k)) + " | mean ± std |",
            "|---|" + "---|" * (k + 1),
        ]
        for name, s in summary[role].items():
            values = " | ".join(_fmt(v) for v in s["values"])
            lines.append(f"| {name.removeprefix(prefix + '_')} | {values} | {_fmt(s['mean'])} ± {_fmt(s['std'])} |")
    return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.4f}"
