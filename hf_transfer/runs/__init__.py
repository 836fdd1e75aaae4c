"""What a recipe asks for, above the single run: a learning curve (curve.py: each point one of the below), k
folds (cv.py), one run per seed (seeds.py), or one run (single.py) with its comparison variants (compare.py),
then the card, the round-trip check and the push. `finetune` is the Python API."""

from __future__ import annotations

from functools import partial

from hf_transfer.console import show_logs
from hf_transfer.errors import OutputError
from hf_transfer.recipe.schema import Recipe
from hf_transfer.validate import load_recipe
from hf_transfer.runs.compare import run_compare
from hf_transfer.runs.curve import run_curve
from hf_transfer.runs.cv import run_cv
from hf_transfer.runs.seeds import run_seeds
from hf_transfer.runs.single import run_single
from hf_transfer.train import FinetuneResult


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> FinetuneResult:
    if overwrite and resume:
        raise OutputError("training.output_dir: overwrite and resume exclude each other "
                          "(--overwrite replaces the run, --resume continues it)")
    if recipe.curve is not None and recipe.curve.fraction is None:  # once per fraction, each of the below
        return run_curve(recipe, overwrite=overwrite, resume=resume)
    if recipe.seeds:  # once per seed, each a single run with its comparison
        return run_seeds(recipe, overwrite=overwrite, resume=resume)
    if recipe.cv is not None and recipe.cv.fold is None:  # k folds, each a single run
        return run_cv(recipe, overwrite=overwrite, resume=resume)
    between = partial(run_compare, overwrite=overwrite) if recipe.compare else None
    return run_single(recipe, overwrite=overwrite, resume=resume, between=between)


def finetune(recipe_or_path, *, overwrite: bool = False, resume: bool = False, **overrides) -> FinetuneResult:
    """Notebook API: `finetune("recipes/x.yaml", **{"training.num_train_epochs": 1})`.

    Override keys are dotted paths; `__` may stand for `.` (`training__learning_rate=1e-4`).
    Returns the metrics, the output folder and the Trainer. hf-transfer's log lines show on stderr as the
    command line shows them, unless the application configured logging (hf_transfer.console.show_logs).
    """
    show_logs()
    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    return run(load_recipe(recipe_or_path, dotted), overwrite=overwrite, resume=resume)


__all__ = ["run", "finetune", "FinetuneResult"]
