"""Layer-wise options of the strategies: learning rate by depth (layer-wise LR decay) and L2-SP.

`option_hooks` reads them from any strategy's options (`layer_decay`, `l2sp`): full, partial and staged
accept them.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from hf_transfer.anatomy import backbone_of, find_blocks, head_parameter_names
from hf_transfer.strategies.base import Hooks


def layer_depths(model: nn.Module) -> dict[str, int]:
    """Parameter name -> depth from the top: head and layers above the blocks 0, the top block 1,
    block i of n: n - i, the stem (embeddings) n + 1."""
    backbone = backbone_of(model)
    blocks = find_blocks(backbone)
    n = len(blocks)
    block_of = {id(p): i for i, b in enumerate(blocks) for p in b.parameters()}
    body = {id(p) for p in backbone.parameters()} if backbone is not model else set()
    depths, seen_block = {}, False
    for name, p in model.named_parameters():
        if id(p) in block_of:
            seen_block = True
            depths[name] = n - block_of[id(p)]
        elif id(p) in body and not seen_block:
            depths[name] = n + 1
        else:
            depths[name] = 0
    return depths


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, decay_names: set[str], layer_decay: float | None
) -> list[dict]:
    """Every parameter (frozen ones too), grouped by (head?, depth, decays?);
    LR = lr × layer_decay^depth. Groups carry `hf_depth` and `hf_head` for staged unfreezing."""
    depths = layer_depths(model)
    head = head_parameter_names(model)
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        depth = depths[name] if layer_decay is not None else 0
        key = (name in head, depths[name], name in decay_names)
        group = groups.setdefault(key, {
            "params": [],
            "lr": lr * (layer_decay or 1.0) ** depth,
            "weight_decay": weight_decay if name in decay_names else 0.0,
            "hf_head": name in head,
            "hf_depth": depth,
        })
        group["params"].append(p)
    return list(groups.values())


def l2sp_penalty(model: nn.Module, alpha: float) -> Callable[[], torch.Tensor]:
    """alpha/2 · Σ ||w − w0||² over the backbone's trainable weights, w0 = the weights now."""
    pairs = [(p, p.detach().clone()) for p in backbone_of(model).parameters()]

    def penalty() -> torch.Tensor:
        total = None
        for i, (p, p0) in enumerate(pairs):
            if not p.requires_grad:
                continue
            if p0.device != p.device:  # Trainer moved the model after the snapshot
                p0 = p0.to(p.device)
                pairs[i] = (p, p0)
            term = (p - p0).pow(2).sum()
            total = term if total is None else total + term
        return alpha / 2 * total if total is not None else torch.zeros(())

    return penalty


def option_hooks(model: nn.Module, cfg, hooks: Hooks) -> None:
    """Layer-wise LR decay groups and the L2-SP penalty, when the strategy's options set them."""
    layer_decay = getattr(cfg, "layer_decay", None)
    if layer_decay is not None:
        hooks.param_groups = lambda m, lr, wd, decay: param_groups(m, lr, wd, decay, layer_decay)
    if getattr(cfg, "l2sp", 0.0):
        hooks.penalty = l2sp_penalty(model, cfg.l2sp)
