"""A finished multi-task run: its task folders read as runs of their own, and the whole model again.

The run's task folders are ordinary model folders (pipeline() loads each). `multitask_root(folder)` tells
whether a folder is a multi-task run's root or one of its task folders; `read_run(folder)` gives the recipe
and metrics of any run folder, for a task folder the task's view: its label column and problem type, and
metrics.json's <split>_<task>_<metric> as <split>_<metric> (the card, report.html and push read a task folder
through it); `load_multitask(out)` rebuilds the multi-task model, one backbone shared, as the run's recipe.yaml
describes it (tasks/multitask.py).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

from hf_transfer.errors import HfTransferError, OutputError
from hf_transfer.folder import RECIPE, is_finished, not_a_model, read_metrics, require_finished, require_model_run
from hf_transfer.tasks import TASKS, resolve
from hf_transfer.tasks.multitask import COLLAPSE_HINT, MultiTaskModel, default_metric, reload, task_metrics
from hf_transfer.validate import load_recipe

TASK_KEY = "multitask"  # the view's metrics entry that names the run's tasks


def multitask_root(out: Path) -> tuple[Path | None, str | None]:
    """(root, None) for the root of a finished multi-task run, (root, task) for one of its task folders,
    (None, None) for anything else."""
    out = Path(out)
    for root, name in ((out, None), (out.parent, out.name)):
        try:
            tasks = load_recipe(root / RECIPE).tasks if is_finished(root) else None
        except HfTransferError:
            tasks = None
        if tasks and (name is None or name in [t.name for t in tasks]):
            return root, name
    return None, None


def task_view(root: Path, name: str) -> tuple[Any, dict[str, Any]]:
    """(recipe, metrics) of task `name` of the finished multi-task run in `root`, as a single-task run of
    that task would hold them; metrics[TASK_KEY] names the run's tasks and its model selection."""
    recipe = load_recipe(root / RECIPE)
    metrics = read_metrics(root)
    task = next(t for t in recipe.tasks if t.name == name)
    others = [t.name for t in recipe.tasks if t.name != name]
    selected = str(recipe.training.get("metric_for_best_model") or f"{recipe.tasks[0].name}_"
                   f"{default_metric(recipe.tasks[0])}").removeprefix("eval_")
    training = {k: v for k, v in recipe.training.items() if k != "metric_for_best_model"}
    training["output_dir"] = str(root / name)
    if selected.startswith(name + "_"):  # selected by this task's metric; another task's is named in TASK_KEY
        training["metric_for_best_model"] = selected.removeprefix(name + "_")
    view = replace(recipe, tasks=None, training=training, data=replace(
        recipe.data, label_column=task.label_column, problem_type=task.problem_type, label_names=task.label_names))
    shown = {}
    for key, value in metrics.items():
        if key == "log_history":
            shown[key] = [task_metrics(entry, name, others) for entry in value]
        elif isinstance(value, dict) and key in ("validation", "test", "train"):
            shown[key] = task_metrics(value, name, others)
        elif key not in ("per_class", "confusion", "collapse"):
            shown[key] = copy.deepcopy(value)
    collapse = TASKS[recipe.task].diagnose(shown)  # this task's predictions only
    if collapse is not None:
        shown["collapse"] = collapse | {"hint": COLLAPSE_HINT}
    shown[TASK_KEY] = {"task": name, "metric_for_best_model": selected,
                       "tasks": [{"name": t.name, "label_column": t.label_column, "weight": t.weight}
                                 for t in recipe.tasks]}
    return view, shown


def read_run(out: Path, error: type[Exception] = OutputError, why: str = "") -> tuple[Any, dict[str, Any]]:
    """(recipe, metrics) of a finished run's folder with a model of its own (`error` naming what it is
    otherwise, `why` appended where it is unfinished); a multi-task run's task folder gives its task's view."""
    out = Path(out)
    root, name = multitask_root(out)
    if name is not None:
        hint = not_a_model(out)
        if hint:
            raise error(hint)
        return task_view(root, name)
    require_model_run(out, error, why)
    return load_recipe(out / RECIPE), read_metrics(out, error)


def load_multitask(out: str | Path) -> MultiTaskModel:
    """The trained multi-task model of the finished run in `out`, in eval mode."""
    out = Path(out)
    require_finished(out, HfTransferError, why=" (load_multitask reads its recipe.yaml and task folders)")
    recipe = load_recipe(out / RECIPE)
    if not recipe.tasks:
        raise HfTransferError(f"load_multitask: {out} is a single-task run (its recipe has no tasks:)")
    _, spec = resolve(recipe)
    return reload(TASKS[recipe.task], spec, recipe.tasks, out)
