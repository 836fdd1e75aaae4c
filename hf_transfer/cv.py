"""k-fold cross-validation (recipe `cv: {folds: k, seed: 42}`).

The training split is cut into k folds with scikit-learn's StratifiedKFold (KFold for regression,
multi-label, or classes too small to stratify). Fold i trains the ordinary pipeline on the other
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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.errors import DataError, RecipeError

log = logging.getLogger(__name__)

ROLES = {"validation": "eval", "test": "test"}
_NOT_SUMMARISED = ("_runtime", "_per_second", "epoch")  # timings say nothing about the model


def check(recipe) -> None:
    cv = recipe.cv
    if cv is None:
        return
    if cv.folds < 2:
        raise RecipeError(f"cv.folds: must be at least 2, got {cv.folds}")
    if cv.fold is not None and not 0 <= cv.fold < cv.folds:
        raise RecipeError(f"cv.fold: must be between 0 and {cv.folds - 1}, got {cv.fold}")
    if recipe.compare:
        raise RecipeError("cv: not available with compare (run the comparison per fold by hand)")
    if recipe.hub.push:
        raise RecipeError("cv: not available with hub.push (push a fold's folder with hf-transfer push)")


def fold_indices(n: int, strata: list[int] | None, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out row indices of each fold: disjoint, together all n rows, class-balanced when
    `strata` (a class per row) is given."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if n < folds:
        raise DataError(f"cv.folds: {folds} folds need at least {folds} training rows, the split has {n}")
    x = np.zeros(n)
    if strata is not None:
        try:  # scikit-learn warns when a class has fewer rows than folds, and refuses when all do
            return [held for _, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, strata)]
        except ValueError as err:
            log.warning("cv: folds not stratified (%s)", str(err).splitlines()[0])
    return [held for _, held in KFold(folds, shuffle=True, random_state=seed).split(x)]


def select_fold(train, stratify: str | None, folds: int, seed: int, index: int):
    """(training part, held-out fold `index`) of the encoded training split."""
    strata = list(train[stratify]) if stratify else None
    held = fold_indices(len(train), strata, folds, seed)[index]
    rest = np.setdiff1d(np.arange(len(train)), held)
    log.info("cv: fold %d of %d: %d training rows, %d held out", index, folds, len(rest), len(held))
    return train.select(rest), train.select(np.sort(held))


def fold_of(recipe):
    """The data.load_data `fold` of a one-fold recipe (cv.fold set); None otherwise."""
    cv = recipe.cv
    if cv is None or cv.fold is None:
        return None
    return partial(select_fold, folds=cv.folds, seed=cv.seed, index=cv.fold)


def fold_recipe(recipe, out: Path, index: int):
    from hf_transfer.config import load_recipe

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
    """Train every fold through train.run, then write cv.json and cv.md; returns a FinetuneResult
    whose metrics are the summary (cv.json)."""
    from hf_transfer.train import COMPLETE_MARKER, FinetuneResult, check_output_dir, default_output_dir, run, training_arguments

    out = Path(recipe.training.get("output_dir") or default_output_dir(recipe))
    args = training_arguments(recipe, out)
    with args.main_process_first(local=False, desc="output folder"):
        check_output_dir(out, overwrite, resume)
    runs, last = [], None
    for i in range(recipe.cv.folds):
        fold = fold_recipe(recipe, out, i)
        folder = out / f"fold-{i}"
        if resume and (folder / COMPLETE_MARKER).is_file():
            log.info("cv: fold %d already finished (%s)", i, folder)
            metrics = json.loads((folder / COMPLETE_MARKER).read_text(encoding="utf-8"))
        else:
            log.info("cv: training fold %d of %d into %s", i, recipe.cv.folds, folder)
            last = run(fold, resume=resume)
            metrics = last.metrics
        runs.append({"fold": i, "output_dir": str(folder), **{r: metrics[r] for r in ROLES if r in metrics}})
    summary = {
        "folds": recipe.cv.folds, "seed": recipe.cv.seed, "metric": args.metric_for_best_model,
        "std": "sample standard deviation over the folds (ddof=1)", **summarise(runs), "runs": runs,
    }
    if args.process_index == 0:
        (out / "cv.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (out / "cv.md").write_text(cv_markdown(summary), encoding="utf-8")
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
