"""Batched inference over a preprocessed split: the model in eval mode, no autograd graph, in order.

Used where a model's outputs are computed once ahead of training: the teacher's logits (distill)
and the frozen backbone's features (probe).
"""

from __future__ import annotations

from typing import Any, Callable

import torch


@torch.no_grad()
def run_batches(model, split, collator, batch_size: int, device,
                keep: Callable[[int, Any], Any], bar=None) -> list:
    """`keep(batch index, model outputs)` for every batch of `split` (its `labels` are not fed), in order;
    `bar` (hf_transfer.console.progress) advances by each batch's examples.

    The model runs in eval mode on `device` under no_grad; its train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval().to(device)
    loader = torch.utils.data.DataLoader(split, batch_size=batch_size, collate_fn=collator)
    kept = []
    try:
        for i, batch in enumerate(loader):
            kept.append(keep(i, model(**{k: v.to(device) for k, v in batch.items() if k != "labels"})))
            if bar is not None:
                bar.update(min(batch_size, len(split) - i * batch_size))
        return kept
    finally:
        model.train(was_training)
