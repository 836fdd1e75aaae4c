"""Batched inference over a preprocessed split: the model in eval mode, no autograd graph, in order.

Used where a model's outputs are computed once ahead of training: the teacher's logits (distill)
and the frozen backbone's features (probe).
"""

from __future__ import annotations

from typing import Any, Callable

import torch


@torch.no_grad()
def run_batches(model, split, collator, batch_size: int, device,
                keep: Callable[[int, Any], Any]) -> list:
    """`keep(batch index, model outputs)` for every batch of `split` (its `labels` are not fed), in order.

    The model runs in eval mode on `device` under no_grad; its train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval().to(device)
    loader = torch.utils.data.DataLoader(split, batch_size=batch_size, collate_fn=collator)
    try:
        return [keep(i, model(**{k: v.to(device) for k, v in batch.items() if k != "labels"}))
                for i, batch in enumerate(loader)]
    finally:
        model.train(was_training)
