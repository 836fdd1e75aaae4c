"""What strategies add to Trainer: their own optimizer groups (layer-wise LR decay, staged
unfreezing), a weight penalty (L2-SP), callbacks (stages, AdaLoRA's rank budget), and saving a
model other than the one Trainer trains (the cached-feature probe trains only the head).

`TransferTrainer` is `transformers.Trainer` with those small, optional overrides, plus the loss terms
of recipe objectives (distillation, domain adaptation: see objectives.py) and their extra batch
entries and modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from hf_transfer.errors import ModelError
from hf_transfer.strategies import backbone_of, find_blocks, head_parameter_names


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


class AdaLoraBudget(TrainerCallback):
    """AdaLoRA re-allocates ranks after each optimizer step, before gradients are cleared."""

    def __init__(self, model):
        self.model = model

    def _config(self):
        return self.model.peft_config[self.model.active_adapter]

    def on_train_begin(self, args, state, control, **kwargs):
        cfg = self._config()
        if cfg.tinit >= state.max_steps - cfg.tfinal:
            raise ModelError(
                f"finetune.tinit: tinit + tfinal must stay below the {state.max_steps} training steps"
            )
        cfg.total_step = state.max_steps

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.model.base_model.update_and_allocate(state.global_step)


@dataclass
class Hooks:
    callbacks: list = field(default_factory=list)
    param_groups: Callable | None = None
    penalty: Callable | None = None
    objectives: list[Callable] = field(default_factory=list)
    """Training-only loss terms `(trainer, loss, model, inputs, outputs, columns) -> loss` (distill, domain)."""
    batch_columns: list[str] = field(default_factory=list)
    """Batch entries that are not model inputs (e.g. cached teacher logits): popped into `columns`."""
    extra_modules: list[nn.Module] = field(default_factory=list)
    """Trained with the model (one more optimizer group) but not part of it, so never saved (DANN's
    domain classifier)."""


def trainer_hooks(model: nn.Module, cfg, args) -> Hooks:
    """The Trainer extras that recipe `finetune` section `cfg` asks for."""
    from hf_transfer.staged import StagedUnfreezing, stage_lr

    hooks = Hooks()
    layer_decay = getattr(cfg, "layer_decay", None)
    if cfg.strategy == "staged":
        if args.world_size > 1:
            raise ModelError(
                "finetune.strategy: staged unfreezing runs in one process (DDP fixes the set of "
                "trained parameters when it wraps the model)"
            )
        hooks.callbacks.append(StagedUnfreezing(model, cfg, args.learning_rate))

        def staged_groups(m, lr, wd, decay):
            groups = param_groups(m, lr, wd, decay, layer_decay)
            for g in groups:
                g["lr"] = stage_lr(g, 0, lr, cfg)
            return groups

        hooks.param_groups = staged_groups
    elif layer_decay is not None:
        hooks.param_groups = lambda m, lr, wd, decay: param_groups(m, lr, wd, decay, layer_decay)
    if getattr(cfg, "l2sp", 0.0):
        hooks.penalty = l2sp_penalty(model, cfg.l2sp)
    if cfg.strategy == "adalora":
        hooks.callbacks.append(AdaLoraBudget(model))
    return hooks


class TransferTrainer(Trainer):
    """Trainer + optional param groups, loss penalty and a different model to export."""

    def __init__(self, *args, hooks: Hooks | None = None, export_model=None, **kwargs):
        hooks = hooks or Hooks()
        super().__init__(*args, callbacks=[*(kwargs.pop("callbacks", None) or []), *hooks.callbacks], **kwargs)
        self.hooks, self.export_model = hooks, export_model

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.hooks.param_groups is not None:
            opt_model = self.model if model is None else model
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            decay = set(self.get_decay_parameter_names(opt_model))
            groups = self.hooks.param_groups(opt_model, self.args.learning_rate, self.args.weight_decay, decay)
            self.optimizer = cls(groups, **kwargs)
        optimizer = super().create_optimizer(model)
        extra = [p for m in self.hooks.extra_modules for p in m.to(self.args.device).parameters()]
        if extra and not any(g.get("hf_extra") for g in optimizer.param_groups):
            optimizer.add_param_group({"params": extra, "weight_decay": self.args.weight_decay,
                                       "hf_extra": True, "hf_head": True, "hf_depth": 0})
        return optimizer

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()  # Trainer drops columns the forward does not name
        self._signature_columns += [c for c in self.hooks.batch_columns if c not in self._signature_columns]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        columns = {c: inputs.pop(c) for c in self.hooks.batch_columns if c in inputs}
        objectives = self.hooks.objectives if model.training else []
        out = super().compute_loss(model, inputs, return_outputs or bool(objectives), num_items_in_batch)
        if objectives:
            loss, outputs = out
            for objective in objectives:
                loss = objective(self, loss, model, inputs, outputs, columns)
            out = (loss, outputs) if return_outputs else loss
        if self.hooks.penalty is None or not model.training:
            return out
        penalty = self.hooks.penalty()
        scaled = getattr(self, "loss_is_scaled_for_ga", None)  # then Trainer does not divide the loss by
        if scaled is None:                                     # the accumulation steps: the penalty must be
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None)  # once per step
        if scaled:
            penalty = penalty / getattr(self, "current_gradient_accumulation_steps", 1)
        return (out[0] + penalty, out[1]) if return_outputs else out + penalty

    def save_model(self, output_dir=None, _internal_call=False):
        if self.export_model is None or _internal_call:  # checkpoints keep what Trainer trains
            return super().save_model(output_dir, _internal_call)
        if self.is_world_process_zero():
            self.export_model.save_pretrained(output_dir)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
