"""What the recipe adds to the task loss: class weights (`data.class_weights`), knowledge distillation
(`distill`, see distill.py) and domain adaptation (`domain`, see domain.py)."""

from __future__ import annotations

from hf_transfer.objectives import distill, domain
from hf_transfer.objectives.losses import resolve_class_weights, task_loss_function


def wanted(recipe) -> bool:
    """Objectives that need the model's own forward (no cached-feature linear probe)."""
    return recipe.distill is not None or recipe.domain is not None


def attach(recipe, task, spec, model, processor, loaded, splits, collator, hooks, args, loss):
    """(splits, collator, compute_loss_func) with the recipe's objectives wired into `hooks`."""
    labels = loaded.splits["train"].select_columns(["labels"])["labels"] if recipe.data.class_weights else []
    weights = resolve_class_weights(recipe.data.class_weights, labels, loaded.label_names or [])
    if recipe.distill is not None:  # first: it scales the task loss by alpha
        splits = distill.attach(recipe.distill, task, spec, processor, loaded, splits, hooks, args)
    if recipe.domain is not None:
        splits = domain.attach(recipe.domain, task, spec, model, processor, collator, loaded.label_names, splits,
                               hooks, args)
    if weights is not None:
        loss = task_loss_function(recipe.data.problem_type, loss, weights)
    if recipe.distill is not None and recipe.distill.unlabelled is not None:  # unlabelled rows: KL term only
        loss = distill.labelled_only(loss, args.label_smoothing_factor)
    return splits, distill.with_columns(collator, hooks.batch_columns), loss
