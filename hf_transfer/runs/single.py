"""One run and what follows it: train (hf_transfer.train), then report.html, the model card, the round-trip
check (`verify: true`, for tasks whose record runs it after training) and the push (`hub.push`).

The card, the check and the push run on the main process once the folder is complete (metrics.json
written). A failed push raises HubError but loses nothing: `hf-transfer push OUTPUT_DIR REPO_ID`
retries it.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Callable

from hf_transfer.folder import staged
from hf_transfer.outputs import hub, report as report_files
from hf_transfer.outputs.card import write_card
from hf_transfer.outputs.html import write_html
from hf_transfer.outputs.verify import verify
from hf_transfer.tasks import TASKS
from hf_transfer.train import FinetuneResult, output_dir, run_one
from hf_transfer.trainer import training_arguments
from hf_transfer.validate import load_recipe

log = logging.getLogger(__name__)


def after_training(recipe, out: Path) -> None:
    """report.html and the card (which links to it), then verify, then push. A multi-task run: each task
    folder gets its own page and card, and verify checks every task folder."""
    for folder in [out / t.name for t in recipe.tasks] if recipe.tasks else [out]:
        write_html(folder)
        write_card(folder)
    if recipe.verify and TASKS[recipe.task].verify_after_training:
        log.info(verify(out).summary())
    elif recipe.verify:
        log.info("verify: skipped for task %s (run `hf-transfer verify %s`)", recipe.task, out)
    if recipe.hub.push:
        h = recipe.hub
        for url in hub.push(out, h.repo_id, h.private, h.revision, h.base_model, h.merged_repo_id):
            log.info("pushed to %s", url)


def _staged_with_comparison(recipe, resume: bool, between) -> FinetuneResult:
    """--overwrite of a run with `compare`: the run and its variants are written into the staging sibling
    (folder.staged), which replaces the previous run, comparison included, only once all are complete."""
    out = output_dir(recipe)
    with staged(out, True, resume, training_arguments(recipe, out)) as target:
        raw = copy.deepcopy(recipe.to_dict())
        raw["training"]["output_dir"] = str(target)
        result = run_one(load_recipe(raw), resume=resume, taken=True)  # staged holds `out`'s lock
        report = between(recipe, result)  # variants go under <target>/compare/
    result.output_dir = out
    # the report as put in place: its paths say `out`, not the staging folder (folder.relocate)
    result.report = report_files.read(out) if report else report
    return result


def run_single(recipe, overwrite: bool = False, resume: bool = False,
               between: Callable[[object, FinetuneResult], dict] | None = None) -> FinetuneResult:
    """Train one recipe, then its outputs. `between(recipe, result)` runs after training and before the
    card (the transfer report, whose table the card shows); its result is `result.report`."""
    hub.preflight(recipe)  # a push that cannot start fails before training
    if between is not None and overwrite:  # the run and its comparison replace the previous ones together
        result = _staged_with_comparison(recipe, resume, between)
    else:
        result = run_one(recipe, overwrite=overwrite, resume=resume)
        if between is not None:  # every process trains the variants (DDP); the main one writes the report
            result.report = between(recipe, result)
    if result.trainer.is_world_process_zero():
        after_training(recipe, result.output_dir)
    return result
