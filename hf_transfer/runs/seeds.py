"""Seeds (recipe `seeds: [s, ...]`): the recipe, with its `compare` runs, trained once per seed.

Seed s trains the recipe with `training.seed: s` into <output_dir>/seed-<s>: the folder the recipe
without `seeds` would write (its compare runs under seed-<s>/compare/<name>, and a report.json of that
seed alone, even without `compare`). Each seed's recipe.yaml says `seeds: null` and `training.seed: s`,
so it reproduces on its own. Then report.json, report.md and curves.png in <output_dir> give every run's
mean over the seeds with its 95% interval, and the paired verdicts (runs/compare.py build_report,
outputs/intervals.py). As with cv folds: the output folder must be empty unless --overwrite (every seed is
written beside the previous run, which is replaced only once all are complete) or --resume (seeds whose
folder is finished are kept, the others continue from their checkpoints).
"""

from __future__ import annotations

import copy
import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.folder import is_finished, read_metrics, staged
from hf_transfer.outputs import report as report_files
from hf_transfer.runs.compare import build_report, run_compare
from hf_transfer.runs.single import run_single
from hf_transfer.tasks import resolve
from hf_transfer.train import FinetuneResult, output_dir
from hf_transfer.trainer import training_arguments
from hf_transfer.validate import load_recipe

log = logging.getLogger(__name__)


def seed_folder(out: Path, seed: int) -> Path:
    return out / f"seed-{seed}"


def seed_recipe(recipe, out: Path, seed: int):
    """The recipe of one seed: `training.seed: seed`, no `seeds`, written into seed-<seed>."""
    raw = copy.deepcopy(recipe.to_dict())
    raw["seeds"] = None
    raw["training"]["seed"] = seed
    raw["training"]["output_dir"] = str(seed_folder(out, seed))
    return load_recipe(raw)


def run_seeds(recipe, overwrite: bool = False, resume: bool = False) -> FinetuneResult:
    """Train every seed through run_single (with its comparison), then write the report over seeds; returns
    a FinetuneResult whose metrics are the main run's means over seeds and whose report is that report.
    With --overwrite the seeds are written beside the previous run, which is replaced only once every seed
    and the report are complete (folder.staged)."""
    out = output_dir(recipe)
    args = training_arguments(recipe, out)
    per_seed, last = [], None
    with staged(out, overwrite, resume, args) as target:  # `out`, or its staging sibling
        for seed in recipe.seeds:
            folder = seed_folder(target, seed)
            if resume and is_finished(folder) and (folder / report_files.JSON).is_file():
                log.info("seeds: seed %d already finished (%s)", seed, folder)
                per_seed.append(report_files.read(folder)["runs"])
                continue
            log.info("seeds: training seed %d into %s", seed, folder)
            last = run_single(seed_recipe(recipe, target, seed), overwrite=overwrite, resume=resume,
                              between=partial(run_compare, overwrite=overwrite))
            per_seed.append((last.report or {}).get("runs"))
        if args.process_index != 0:
            return FinetuneResult(metrics={}, output_dir=out, trainer=last.trainer if last else None)
        task, spec = resolve(recipe)
        report_files.write(build_report(per_seed, recipe.seeds, task, spec), target)
        metrics = _mean_metrics([read_metrics(seed_folder(target, seed)) for seed in recipe.seeds])
    report = report_files.read(out)  # as written, its paths in `out`
    return FinetuneResult(metrics=metrics, output_dir=out, trainer=last.trainer if last else None, report=report)


def _mean_metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """{split: {metric: mean over seeds}} of the main run's scalar metrics that every seed has."""
    out: dict[str, Any] = {"seeds": len(runs)}
    for split in ("validation", "test"):
        found = [m.get(split) or {} for m in runs]
        keys = [k for k, v in found[0].items() if isinstance(v, (int, float)) and all(k in f for f in found)]
        if keys:
            out[split] = {k: float(np.mean([f[k] for f in found])) for k in keys}
    return out
