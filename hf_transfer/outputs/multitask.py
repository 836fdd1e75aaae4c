"""A finished multi-task run as one model again: `load_multitask(out)`.

The run's task folders are ordinary model folders (pipeline() loads each); this rebuilds the multi-task
model from them, one backbone shared, as the run's recipe.yaml describes it (tasks/multitask.py).
"""

from __future__ import annotations

from pathlib import Path

from hf_transfer.errors import HfTransferError
from hf_transfer.folder import RECIPE, require_finished
from hf_transfer.tasks import TASKS, resolve
from hf_transfer.tasks.multitask import MultiTaskModel, reload
from hf_transfer.validate import load_recipe


def load_multitask(out: str | Path) -> MultiTaskModel:
    """The trained multi-task model of the finished run in `out`, in eval mode."""
    out = Path(out)
    require_finished(out, HfTransferError, why=" (load_multitask reads its recipe.yaml and task folders)")
    recipe = load_recipe(out / RECIPE)
    if not recipe.tasks:
        raise HfTransferError(f"load_multitask: {out} is a single-task run (its recipe has no tasks:)")
    _, spec = resolve(recipe)
    return reload(TASKS[recipe.task], spec, recipe.tasks, out)
