"""The tasks hf-transfer fine-tunes for: one module per task, each exporting one record (`TASK`).

`TASKS` is the one list of tasks; recipe sections, comparison baselines, `verify`, `predict` and the
model card read it. Adding a task: a module exporting `TASK` (see tasks/base.py) and an entry here.
"""

from __future__ import annotations

from hf_transfer.tasks import (
    audio_classification, image_classification, multitask, speech_recognition, text_classification,
    token_classification,
)
from hf_transfer.tasks.base import Task, TaskSpec

TASKS: dict[str, Task] = {
    t.name: t for t in (text_classification.TASK, image_classification.TASK, audio_classification.TASK,
                        token_classification.TASK, speech_recognition.TASK)
}

# model.modality -> the task a recipe without `task:` means (recipes written before tasks existed)
DEFAULT_TASKS: dict[str, str] = {"text": "text-classification", "vision": "image-classification",
                                 "speech": "audio-classification"}


def resolve(recipe) -> tuple[Task, TaskSpec]:
    """The record of a validated recipe's task (multi-task: specialised for its `tasks:`) and its builders' spec."""
    task = TASKS[recipe.task]
    if recipe.tasks:
        task = multitask.specialise(task, recipe.tasks, recipe.training.get("metric_for_best_model"))
    spec = TaskSpec(model=recipe.model, data=recipe.data, options=recipe.options,
                    seed=int(recipe.training.get("seed", 42)))
    return task, spec


__all__ = ["TASKS", "DEFAULT_TASKS", "Task", "TaskSpec", "resolve"]
