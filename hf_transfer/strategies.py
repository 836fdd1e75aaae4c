"""Fine-tuning strategies: which parameters train, found generically for any backbone.

`STRATEGIES` maps the recipe's `finetune.strategy` to a function `(model, cfg) -> model`.
Blocks are found as the `nn.ModuleList` whose length is the config's number of layers (the
largest ModuleList when the config does not say), never by attribute paths or name patterns.
"""

from __future__ import annotations

import logging
from typing import Callable

from torch import nn

from hf_transfer.config import FullConfig, LoraConfig, PartialConfig
from hf_transfer.errors import ModelError

log = logging.getLogger(__name__)


def backbone_of(model: nn.Module) -> nn.Module:
    """The pretrained body: `base_model` for transformers models, the model itself otherwise."""
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) and base is not model else model


def find_blocks(module: nn.Module) -> nn.ModuleList:
    """The repeated blocks of a backbone (e.g. BERT's encoder.layer)."""
    config = getattr(module, "config", None)
    n_layers = getattr(config, "num_hidden_layers", None) if config is not None else None
    lists = [m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if n_layers:
        matching = [m for m in lists if len(m) == n_layers]
        if matching:
            return max(matching, key=lambda m: sum(p.numel() for p in m.parameters()))
    if not lists:
        raise ModelError(f"finetune: no repeated blocks found in {module.__class__.__name__}")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def head_parameter_names(model: nn.Module) -> set[str]:
    backbone = backbone_of(model)
    body = {id(p) for p in backbone.parameters()} if backbone is not model else set()
    return {n for n, p in model.named_parameters() if id(p) not in body}


def _freeze_backbone(model: nn.Module) -> None:
    backbone = backbone_of(model)
    if backbone is model:
        raise ModelError(f"finetune.freeze: cannot tell backbone from head in {model.__class__.__name__}")
    for p in backbone.parameters():
        p.requires_grad_(False)


def _freeze_first_blocks(model: nn.Module, n: int) -> None:
    """Freeze the stem (embeddings: everything registered before the blocks) and blocks[:n]."""
    backbone = backbone_of(model)
    blocks = find_blocks(backbone)
    if not 0 <= n <= len(blocks):
        raise ModelError(f"finetune.freeze: {n} blocks asked, the backbone has {len(blocks)}")
    block_params = {id(p) for p in blocks.parameters()}
    for p in backbone.parameters():  # registration order: stem, blocks, then post-block layers
        if id(p) in block_params:
            break
        p.requires_grad_(False)
    for block in list(blocks)[:n]:
        for p in block.parameters():
            p.requires_grad_(False)


def apply_full(model: nn.Module, cfg: FullConfig) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def apply_partial(model: nn.Module, cfg: PartialConfig) -> nn.Module:
    apply_full(model, FullConfig())
    if cfg.freeze == "backbone":
        _freeze_backbone(model)
    else:
        _freeze_first_blocks(model, cfg.freeze)
    return model


def _linear_names(module: nn.Module) -> list[str]:
    """Names (last component) of the Linear layers inside the blocks: the LoRA fallback."""
    names = {n.rsplit(".", 1)[-1] for n, m in find_blocks(module).named_modules() if isinstance(m, nn.Linear)}
    return sorted(names)


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    import peft
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = cfg.target_modules or DEFAULTS.get(model_type) or _linear_names(backbone_of(model))
    heads = sorted({n.split(".")[0] for n in head_parameter_names(model)})
    peft_cfg = peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        modules_to_save=heads,
    )
    try:
        return peft.get_peft_model(model, peft_cfg)
    except ValueError as err:
        raise ModelError(f"finetune.target_modules: {str(err).splitlines()[0]}") from None


STRATEGIES: dict[str, Callable[[nn.Module, object], nn.Module]] = {
    "full": apply_full,
    "partial": apply_partial,
    "lora": apply_lora,
}


def apply_strategy(model: nn.Module, cfg) -> nn.Module:
    model = STRATEGIES[cfg.strategy](model, cfg)
    trainable, total = count_parameters(model)
    log.info(
        "strategy %s: trainable parameters %s / %s (%.2f%%)",
        cfg.strategy, f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1),
    )
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    def numel(p) -> int:  # DeepSpeed ZeRO-3 leaves an empty local shard; ds_numel is the full size
        return getattr(p, "ds_numel", None) or p.numel()

    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    return trainable, sum(numel(p) for p in model.parameters())
