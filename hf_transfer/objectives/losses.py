"""The losses that distillation, domain adaptation and class weighting add, as plain functions.

- `class_weights`: inverse class frequency, normalised to mean 1 (`data.class_weights: auto`); with a
  label per word (token classification) the words' tags are counted.
- `task_loss_function`: Trainer's `compute_loss_func` for the task: class-weighted cross-entropy
  (on class ids, one per input or per token, or on soft targets from mixup / cutmix), else the
  modality's own loss.
- `distillation_loss`: alpha * task + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)).
- `grad_reverse` and `dann_lambda`: DANN's gradient reversal layer and its schedule.
- `mmd2`: multi-kernel Gaussian MMD^2 between two samples, bandwidths from the median heuristic.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from hf_transfer.errors import DataError
from hf_transfer.tasks.classification import classification_loss


def class_weights(labels: Sequence[int | list[int]], num_labels: int, names: list[str] | None = None) -> list[float]:
    """Inverse class frequency, normalised to mean 1 over the classes. A row's label is a class id, or a
    list of them (a tag per word): every one counts."""
    counts = [0] * num_labels
    for row in labels:
        for label in row if isinstance(row, list) else [row]:
            counts[label] += 1
    if min(counts) == 0:
        missing = counts.index(0)
        named = f" ({names[missing]!r})" if names else ""
        raise DataError(
            f"data.class_weights: label {missing}{named} has no training example; give the weights as a list"
        )
    inverse = [1.0 / c for c in counts]
    mean = sum(inverse) / num_labels
    return [w / mean for w in inverse]


def resolve_class_weights(setting, train_labels: Sequence[int], label_names: list[str]) -> torch.Tensor | None:
    """The recipe's `data.class_weights` (`auto` or a list) as a tensor, checked against the labels."""
    if setting is None:
        return None
    if setting == "auto":
        return torch.tensor(class_weights(train_labels, len(label_names), label_names))
    if len(setting) != len(label_names):
        raise DataError(f"data.class_weights: {len(setting)} weights for {len(label_names)} labels {label_names}")
    return torch.tensor(setting, dtype=torch.float32)


def task_loss_function(problem_type: str, modality_loss: Callable | None, weights: torch.Tensor | None):
    """Trainer's `compute_loss_func`: cross-entropy with class `weights` (class ids, one per input or per
    token with -100 skipped, or soft targets), else the task's loss, else the model's loss recomputed from
    its logits (a per-batch mean)."""
    if weights is None and modality_loss is not None:
        return modality_loss
    def compute(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        if weights is None:
            return classification_loss(logits, labels, problem_type)
        return classification_loss(logits.float(), labels, problem_type, weights.to(logits.device))

    return compute


def distillation_loss(
    task_loss: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor, alpha: float, temperature: float
) -> torch.Tensor:
    """alpha * task_loss + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)), batch mean."""
    t = temperature
    log_p_student = F.log_softmax(student.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return alpha * task_loss + (1 - alpha) * t * t * kl


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by -lam on the way back (Ganin & Lempitsky, 2015)."""
    return _GradReverse.apply(x, lam)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's schedule 2 / (1 + exp(-gamma * p)) - 1: 0 at the start of training, towards 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def mmd2(
    x: torch.Tensor, y: torch.Tensor, multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
    bandwidths: Sequence[float] | None = None,
) -> torch.Tensor:
    """Biased MMD^2 between samples x (n, d) and y (m, d) under k(a, b) = sum_s exp(-||a - b||^2 / s).

    The bandwidths s default to `multipliers` x the median pairwise squared distance of the pooled
    sample (off the diagonal, not differentiated)."""
    z = torch.cat([x, y]).float()
    d2 = torch.cdist(z, z).pow(2)
    if bandwidths is None:
        n = len(z)
        off = d2.detach()[~torch.eye(n, dtype=torch.bool, device=z.device)]
        median = off.median().clamp_min(1e-12) if off.numel() else torch.tensor(1.0, device=z.device)
        bandwidths = [median * m for m in multipliers]
    k = sum(torch.exp(-d2 / s) for s in bandwidths)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
