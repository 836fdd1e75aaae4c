"""Domain adaptation (recipe section `domain`) with unlabelled target-domain data.

Each training step draws a target batch alongside the source batch (a DataLoader over the target
split, with the same preprocessing, augmentation and collator, cycled) and runs the model on it too.
The pooled features are the input of the classification head's last Linear layer (found through
strategies.head_parameter_names, so it works for text, timm and transformers vision, and speech),
captured by a forward pre-hook. Added to the task loss, times `domain.weight`:

- `dann`: a domain classifier (Linear-ReLU-Linear, source 0 / target 1, binary cross-entropy) on the
  features passed through a gradient reversal layer whose lambda follows 2 / (1 + exp(-10 p)) - 1 over
  the training progress p. The classifier trains in its own optimizer group and is never saved.
- `mmd`: multi-kernel Gaussian MMD^2 between source and target features (bandwidths: the median
  pairwise squared distance times `domain.kernel_multipliers`).

Two controls separate what the adaptation loss buys: `target_bn` runs the target batches through the
model in training mode (batch-norm running statistics see the target domain) and adds nothing to the
loss; `none` trains on the source alone. Both evaluate the labelled target split like the others, so a
recipe's `compare` puts all of them in one transfer report (its target-domain table).

A labelled target split (`domain.target.eval_split`, or the adaptation split when it has the label
column) is evaluated after training (metrics `target`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from hf_transfer.errors import DataError, ModelError
from hf_transfer.objectives.losses import dann_lambda, grad_reverse, mmd2
from hf_transfer.recipe.schema import DomainConfig
from hf_transfer.anatomy import head_parameter_names
from hf_transfer.tasks.base import TaskSpec
from hf_transfer.tasks.data import load_extra

log = logging.getLogger(__name__)


def head_layer(model: nn.Module) -> nn.Linear:
    """The Linear layer that produces the logits: the last Linear whose weights all belong to the head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    head = head_parameter_names(base)
    linears = [
        m for name, m in base.named_modules()
        if isinstance(m, nn.Linear) and all(f"{name}.{p}" in head for p, _ in m.named_parameters())
    ]
    if not linears:
        raise ModelError(f"domain: no Linear classification head found in {base.__class__.__name__}")
    return linears[-1]


class FeatureCapture:
    """Keeps the input of `layer` from its latest forward (with its graph, so gradients flow back)."""

    def __init__(self, layer: nn.Module):
        self.features: torch.Tensor | None = None
        layer.register_forward_pre_hook(self._store)

    def _store(self, module, args) -> None:
        self.features = args[0].flatten(1)


def _target_split(cfg: DomainConfig, data, task, spec: TaskSpec, label_names, split: str, key: str):
    """(one target split with a `labels` column, whether its labels are real)."""
    ds = load_extra(cfg.target, data, task.input_columns(spec), split, key)
    labeler = task.labeler(spec)
    if all(col in ds.column_names for _, col in labeler.columns):
        return labeler.encode(ds, label_names, split), True
    return ds.add_column("labels", [0] * len(ds)), False


def load_target(cfg: DomainConfig, task, spec: TaskSpec, label_names):
    """(target split to adapt to, labelled target split to evaluate or None)."""
    t = cfg.target
    train, labelled = _target_split(cfg, spec.data, task, spec, label_names, t.split, "split")
    if t.eval_split is None:
        return train, train if labelled else None
    evaluate, labelled = _target_split(cfg, spec.data, task, spec, label_names, t.eval_split, "eval_split")
    if not labelled:
        raise DataError(f"domain.target.eval_split: split {t.eval_split!r} has no label column to evaluate")
    return train, evaluate


def cycle(dataset, collator, batch_size: int, seed: int) -> Iterator[dict[str, Any]]:
    """Shuffled batches of `dataset` forever (a new order each pass, fixed by `seed`)."""
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=collator,
        drop_last=len(dataset) >= batch_size,
    )
    while True:
        yield from loader


def domain_classifier(in_features: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))


@dataclasses.dataclass
class DomainLoss:
    """The Trainer objective: runs the model on a target batch and adds weight x the domain loss."""

    method: str
    weight: float
    multipliers: list[float]
    capture: FeatureCapture
    batches: Iterator[dict[str, Any]]
    classifier: nn.Module | None = None

    def __call__(self, trainer, loss, model, inputs, outputs, columns):
        source = self.capture.features  # captured during the Trainer's forward just before
        batch = next(self.batches)
        inputs = {k: v.to(source.device) for k, v in batch.items() if k != "labels"}
        if self.method == "target_bn":  # the forward updates batch-norm statistics; nothing to differentiate
            with torch.no_grad():
                model(**inputs)
            return loss
        model(**inputs)
        target = self.capture.features
        if self.method == "mmd":
            term = mmd2(source, target, self.multipliers)
        else:
            progress = trainer.state.global_step / max(trainer.state.max_steps, 1)
            features = grad_reverse(torch.cat([source, target]), dann_lambda(progress))
            domains = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(source.device)
            term = F.binary_cross_entropy_with_logits(self.classifier(features).squeeze(-1).float(), domains)
        return loss + self.weight * term


def attach(cfg: DomainConfig, task, spec: TaskSpec, model, processor, collator, label_names, splits, hooks, args):
    """Add the domain objective to `hooks`; returns the splits (+ `target` when it has labels)."""
    from datasets import DatasetDict

    if args.world_size > 1 and cfg.method != "none":
        raise ModelError("domain: domain adaptation runs in one process (the target forward and the domain "
                         "classifier are outside DDP)")
    target, evaluate = load_target(cfg, task, spec, label_names)
    if cfg.method == "none" and evaluate is None:
        raise DataError("domain.method: none only evaluates the labelled target split, and "
                        "domain.target has no labels (set domain.target.eval_split to a labelled split)")
    if cfg.method == "none":  # nothing to adapt to: only the labelled split is prepared
        splits["target"] = task.preprocess(DatasetDict({"target": evaluate}), processor, spec)["target"]
        log.info("domain: none (source only), evaluated on %d labelled target examples", len(evaluate))
        return splits
    parts = {"train": target} | ({"target": evaluate} if evaluate is not None else {})
    prepared = task.preprocess(DatasetDict(parts), processor, spec)
    layer = head_layer(model)
    classifier = None
    if cfg.method == "dann":
        classifier = domain_classifier(layer.in_features, cfg.hidden_size)
        hooks.extra_modules.append(classifier)
    batches = cycle(prepared["train"], collator, args.per_device_train_batch_size, args.seed)
    hooks.objectives.append(
        DomainLoss(cfg.method, cfg.weight, cfg.kernel_multipliers, FeatureCapture(layer), batches, classifier)
    )
    log.info("domain: %s towards %d target examples (%s)", cfg.method, len(target),
             f"evaluated on {len(evaluate)} labelled ones" if evaluate is not None else "no target labels")
    if evaluate is not None:
        splits["target"] = prepared["target"]
    return splits
