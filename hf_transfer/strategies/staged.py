"""Strategy `staged`: the head alone first, then more of the backbone at given epochs.

The optimizer holds every parameter from the start (see hooks.param_groups); a stage only flips
`requires_grad` (a parameter without a gradient is skipped by the optimizer: bit-for-bit unchanged,
no weight decay) and sets each group's base learning rate in both the optimizer and the LR
scheduler, so the schedule runs on unbroken across stages.
"""

from __future__ import annotations

import logging
import math

from dataclasses import dataclass
from typing import Literal

from torch import nn
from transformers import TrainerCallback

from hf_transfer.errors import ModelError, RecipeError
from hf_transfer.recipe.typed import INT32_MAX, check_range
from hf_transfer.anatomy import backbone_of, find_blocks, freeze_backbone
from hf_transfer.strategies.base import Hooks, Strategy
from hf_transfer.strategies.layers import param_groups

log = logging.getLogger(__name__)


@dataclass
class StagedConfig:
    strategy: Literal["staged"] = "staged"
    head_epochs: int = 1
    """Epochs with only the head training (the backbone frozen)."""
    unfreeze: Literal["all"] | int = "all"
    """What unfreezes after head_epochs: `all`, or the top k blocks (plus the layers above them)."""
    milestones: dict[str, Literal["all"] | int] | None = None
    """Later stages: {epoch: blocks unfrozen from that epoch on}, e.g. {3: 4, 5: all}."""
    unfreeze_lr: float | None = None
    """Learning rate of every group once the backbone starts unfreezing (null: learning_rate)."""
    layer_decay: float | None = None
    """Layer-wise LR decay (see full), applied to unfreeze_lr."""
    l2sp: float = 0.0
    """L2-SP (see full)."""

    def __post_init__(self) -> None:
        check_range(self.head_epochs, "finetune.head_epochs", low=0, high=INT32_MAX)
        if self.unfreeze != "all":
            check_range(self.unfreeze, "finetune.unfreeze", low=1, high=INT32_MAX)
        for key, value in (self.milestones or {}).items():
            check_range(_epoch(key), f"finetune.milestones.{key}", low=0, high=INT32_MAX)
            if value != "all":
                check_range(value, f"finetune.milestones.{key}", low=1, high=INT32_MAX)
        check_range(self.unfreeze_lr, "finetune.unfreeze_lr", low=0, low_open=True)
        check_range(self.layer_decay, "finetune.layer_decay", low=0, low_open=True)
        check_range(self.l2sp, "finetune.l2sp", low=0)


def stage_plan(cfg: StagedConfig, n_blocks: int) -> list[tuple[int, int]]:
    """[(first epoch, top blocks unfrozen), ...]; `all` counts as n_blocks + 1 (blocks + stem)."""

    def blocks(value, key: str) -> int:
        if value == "all":
            return n_blocks + 1
        if not 1 <= value <= n_blocks:
            raise ModelError(f"{key}: {value} blocks asked, the backbone has {n_blocks}")
        return value

    if cfg.head_epochs < 0:
        raise RecipeError("finetune.head_epochs: must be >= 0")
    plan = [(0, 0), (cfg.head_epochs, blocks(cfg.unfreeze, "finetune.unfreeze"))]
    for key, value in sorted((cfg.milestones or {}).items(), key=lambda kv: _epoch(kv[0])):
        epoch, k = _epoch(key), blocks(value, f"finetune.milestones.{key}")
        if epoch <= plan[-1][0] or k <= plan[-1][1]:
            raise RecipeError(
                f"finetune.milestones.{key}: stages must come after head_epochs and unfreeze more blocks"
            )
        plan.append((epoch, k))
    return plan if cfg.head_epochs > 0 else plan[1:]


def _epoch(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise RecipeError(f"finetune.milestones.{key}: keys must be epoch numbers") from None


def stage_at(plan: list[tuple[int, int]], epoch: float) -> int:
    """Index of the stage that epoch `epoch` (0-based, fractional when resuming) belongs to."""
    done = math.floor(epoch + 1e-6)
    return max(i for i, (start, _) in enumerate(plan) if start <= done or i == 0)


def unfreeze_top(model: nn.Module, k: int) -> None:
    """Unfreeze the layers above the blocks, the top k blocks, and with k > blocks also the stem."""
    backbone = backbone_of(model)
    blocks = list(find_blocks(backbone))
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    params = list(backbone.parameters())
    first = next(i for i, p in enumerate(params) if id(p) in in_blocks)
    last = max(i for i, p in enumerate(params) if id(p) in in_blocks)
    chosen = [p for b in blocks[max(len(blocks) - k, 0):] for p in b.parameters()] + params[last + 1:]
    if k > len(blocks):
        chosen += params[:first]
    for p in chosen:
        p.requires_grad_(True)


def stage_lr(group: dict, stage: int, base_lr: float, cfg: StagedConfig) -> float:
    """Base LR of a param group (tagged by hooks.param_groups) in `stage`."""
    if stage == 0 and cfg.head_epochs > 0 and group["hf_head"]:
        return base_lr
    lr = cfg.unfreeze_lr if cfg.unfreeze_lr is not None else base_lr
    return lr * (cfg.layer_decay or 1.0) ** group["hf_depth"]


def set_base_lrs(optimizer, scheduler, lrs: list[float]) -> None:
    """Give each group a new base LR, keeping the scheduler's current factor (idempotent)."""
    sched = getattr(scheduler, "scheduler", scheduler)  # accelerate wraps the scheduler
    bases = getattr(sched, "base_lrs", None)
    for i, (group, lr) in enumerate(zip(optimizer.param_groups, lrs)):
        old = bases[i] if bases is not None else group.get("initial_lr", group["lr"])
        factor = group["lr"] / old if old else 1.0
        group["lr"], group["initial_lr"] = lr * factor, lr
        if bases is not None:
            bases[i] = lr


class StagedUnfreezing(TrainerCallback):
    """Applies the stage of each epoch at its start (also when resuming mid-way)."""

    def __init__(self, model: nn.Module, cfg: StagedConfig, base_lr: float):
        self.model, self.cfg, self.base_lr = model, cfg, base_lr
        self.plan = stage_plan(cfg, len(find_blocks(backbone_of(model))))
        self.stage: int | None = None

    def on_epoch_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        stage = stage_at(self.plan, state.epoch or 0.0)
        if stage == self.stage:
            return
        if self.plan[stage][1]:
            unfreeze_top(self.model, self.plan[stage][1])
        effective = stage if self.cfg.head_epochs > 0 else stage + 1
        set_base_lrs(optimizer, lr_scheduler, [
            stage_lr(g, effective, self.base_lr, self.cfg) for g in optimizer.param_groups
        ])
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        log.info("staged unfreezing: epoch %d, stage %d, %s trainable parameters",
                 math.floor(state.epoch or 0), effective, f"{trainable:,}")
        self.stage = stage


def apply_staged(model: nn.Module, cfg: StagedConfig) -> nn.Module:
    """Stage 0 (head only); StagedUnfreezing unfreezes the rest during training."""
    stage_plan(cfg, len(find_blocks(backbone_of(model))))  # checks the schedule against the model
    freeze_backbone(model, "finetune.strategy")
    return model


def staged_hooks(model: nn.Module, cfg: StagedConfig, args, hooks: Hooks) -> None:
    """The stage callback, and every parameter in the optimizer from the start at its stage-0 LR."""
    if args.world_size > 1:
        raise ModelError(
            "finetune.strategy: staged unfreezing runs in one process (DDP fixes the set of "
            "trained parameters when it wraps the model)"
        )
    hooks.callbacks.append(StagedUnfreezing(model, cfg, args.learning_rate))

    def staged_groups(m, lr, wd, decay):
        groups = param_groups(m, lr, wd, decay, cfg.layer_decay)
        for g in groups:
            g["lr"] = stage_lr(g, 0, lr, cfg)
        return groups

    hooks.param_groups = staged_groups


STAGED = Strategy(name="staged", options=StagedConfig, apply=apply_staged, hooks=staged_hooks)
