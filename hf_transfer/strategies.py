"""Fine-tuning strategies: which parameters train, found generically for any backbone.

`STRATEGIES` maps the recipe's `finetune.strategy` to a function `(model, cfg) -> model`.
Blocks are found as the `nn.ModuleList` whose length is the config's number of layers (the
largest ModuleList when the config does not say), never by attribute paths or name patterns.
"""

from __future__ import annotations

import logging
from typing import Callable

from torch import nn

from hf_transfer.errors import ModelError
from hf_transfer.schema import (
    AdaLoraConfig,
    FullConfig,
    IA3Config,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    PartialConfig,
    StagedConfig,
)

log = logging.getLogger(__name__)


def _hf_base(model: nn.Module) -> nn.Module | None:
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) and base is not model else None


def _timm_model(model: nn.Module) -> nn.Module | None:
    """The timm model in `model` (itself or a wrapper around it), or None for other models."""
    if _hf_base(model) is not None:
        return None
    return next((m for m in model.modules() if _is_timm(m)), None)


def _is_timm(module: nn.Module) -> bool:
    return hasattr(module, "pretrained_cfg") and callable(getattr(module, "get_classifier", None))


def _inner_hf_model(model: nn.Module) -> nn.Module | None:
    """A body kept under another name than `base_model_prefix` (e.g. WhisperForAudioClassification's
    `encoder`): the one child that is a transformers model."""
    from transformers import PreTrainedModel

    inner = [m for m in model.children() if isinstance(m, PreTrainedModel)]
    return inner[0] if len(inner) == 1 else None


def backbone_of(model: nn.Module) -> nn.Module:
    """The pretrained body: `base_model` for transformers models, the timm model for timm (its head
    is told apart by `get_classifier()`), the model itself otherwise."""
    return _hf_base(model) or _timm_model(model) or _inner_hf_model(model) or model


def _timm_blocks(model: nn.Module) -> nn.ModuleList:
    """timm's own ordered grouping (the one its layer-wise LR decay uses): stem, blocks..., head.

    ResNet gives its four stages (layer1..layer4), ViT its transformer blocks, EfficientNet its
    stages. Models without `group_matcher`: their top-level children that hold parameters.
    """
    head = {id(p) for p in model.get_classifier().parameters()}
    try:
        from timm.models import group_modules

        matcher = model.group_matcher(coarse=True)
        groups = [[model.get_submodule(n) for n in names] for names in group_modules(model, matcher).values()]
        if "stem" in matcher:
            groups = groups[1:]
    except (AttributeError, NotImplementedError):
        groups = [[child] for child in model.children()]
    def body(m: nn.Module) -> bool:  # holds parameters outside the classifier
        return any(id(p) not in head for p in m.parameters())

    blocks = [nn.ModuleList([m for m in g if body(m)]) for g in groups]
    blocks = [b for b in blocks if len(b)]
    if not blocks:
        raise ModelError(f"finetune: no blocks found in {model.__class__.__name__}")
    return nn.ModuleList(blocks)


def find_blocks(module: nn.Module) -> nn.ModuleList:
    """The repeated blocks of a backbone (e.g. BERT's encoder.layer; timm: see `_timm_blocks`)."""
    if _is_timm(module):
        return _timm_blocks(module)
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
    timm_model = _timm_model(model)
    if timm_model is not None:
        head = {id(p) for p in timm_model.get_classifier().parameters()}
        return {n for n, p in model.named_parameters() if id(p) in head}
    backbone = backbone_of(model)
    body = {id(p) for p in backbone.parameters()} if backbone is not model else set()
    return {n for n, p in model.named_parameters() if id(p) not in body}


def _freeze_backbone(model: nn.Module, key: str = "finetune.freeze") -> None:
    """Freeze everything but the head (transformers: outside `base_model`; timm: `get_classifier()`)."""
    head = head_parameter_names(model)
    names = [n for n, _ in model.named_parameters()]
    if not head or len(head) == len(names):
        raise ModelError(f"{key}: cannot tell backbone from head in {model.__class__.__name__}")
    for n, p in model.named_parameters():
        if n not in head:
            p.requires_grad_(False)


def _stay_in_eval(module: nn.Module, args) -> None:
    if module.training:
        module.eval()


def keep_frozen_backbone_in_eval(model: nn.Module) -> None:
    """A frozen backbone runs in eval mode while the head trains: no dropout noise on fixed weights,
    no batch-norm statistics drifting. (A pre-forward hook, since Trainer calls model.train() each step.)"""
    backbone_of(model).register_forward_pre_hook(_stay_in_eval)


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
    """Everything trains that the model loader left trainable (it may keep a fixed position table
    or, for speech, the convolutional feature encoder frozen)."""
    return model


def apply_partial(model: nn.Module, cfg: PartialConfig) -> nn.Module:
    apply_full(model, FullConfig())
    if cfg.freeze == "backbone":
        _freeze_backbone(model)
        keep_frozen_backbone_in_eval(model)
    else:
        _freeze_first_blocks(model, cfg.freeze)
    return model


def _adaptable(module: nn.Module) -> bool:
    """Linear layers and 1x1 (pointwise, ungrouped) convolutions."""
    if isinstance(module, nn.Conv2d):
        return module.kernel_size == (1, 1) and module.groups == 1
    return isinstance(module, nn.Linear)


def _block_layer_names(model: nn.Module) -> list[str]:
    """Full names of the Linear layers and 1x1 convs inside the blocks: the LoRA fallback."""
    inside = {id(m) for m in find_blocks(backbone_of(model)).modules()}
    return sorted(n for n, m in model.named_modules() if id(m) in inside and _adaptable(m))


def apply_staged(model: nn.Module, cfg: StagedConfig) -> nn.Module:
    """Stage 0 (head only); hf_transfer.staged.StagedUnfreezing unfreezes the rest during training."""
    from hf_transfer.staged import stage_plan

    stage_plan(cfg, len(find_blocks(backbone_of(model))))  # checks the schedule against the model
    apply_full(model, FullConfig())
    _freeze_backbone(model, "finetune.strategy")
    return model


def _submodule(model: nn.Module, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _peft(model: nn.Module, cfg, config_cls: str, mapping: str, **options) -> nn.Module:
    """Wrap `model` with a PEFT method; the classification head is trained and saved too."""
    import peft
    from peft import utils

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    known = model_type in getattr(utils, mapping, {})
    targets = cfg.target_modules or (None if known else _block_layer_names(model))
    # modules_to_save: the modules holding the head (PEFT adds it by itself only for text tasks);
    # a bare parameter (e.g. a weighted layer sum) is not a module PEFT can copy
    heads = sorted({n.rsplit(".", 1)[0] for n in head_parameter_names(model)})
    heads = [h for h in heads if isinstance(_submodule(model, h), nn.Module)]
    # SEQ_CLS's wrapper forwards input_ids; audio and vision models take other inputs: plain PeftModel.
    text_model = getattr(model, "main_input_name", None) == "input_ids"
    peft_cfg_cls = getattr(peft, config_cls)
    try:
        peft_cfg = peft_cfg_cls(
            task_type=peft.TaskType.SEQ_CLS if text_model else None,
            target_modules=targets,
            modules_to_save=heads,
            **options,
        )
        return peft.get_peft_model(model, peft_cfg)
    except ValueError as err:
        raise ModelError(f"finetune.target_modules: {str(err).splitlines()[0]}") from None


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    return _peft(
        model, cfg, "LoraConfig", "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING",
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, use_dora=cfg.use_dora,
    )


def apply_ia3(model: nn.Module, cfg: IA3Config) -> nn.Module:
    return _peft(
        model, cfg, "IA3Config", "TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING",
        feedforward_modules=cfg.feedforward_modules,
    )


def apply_adalora(model: nn.Module, cfg: AdaLoraConfig) -> nn.Module:
    """`total_step` is a placeholder here; hf_transfer.hooks sets the real one when training starts."""
    return _peft(
        model, cfg, "AdaLoraConfig", "TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING",
        init_r=cfg.init_r, target_r=cfg.target_r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        tinit=cfg.tinit, tfinal=cfg.tfinal, deltaT=cfg.deltaT, total_step=cfg.tinit + cfg.tfinal + 1,
    )


def apply_loha(model: nn.Module, cfg: LoHaConfig) -> nn.Module:
    return _peft(
        model, cfg, "LoHaConfig", "TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING",
        r=cfg.r, alpha=cfg.alpha, rank_dropout=cfg.rank_dropout, module_dropout=cfg.module_dropout,
    )


def apply_lokr(model: nn.Module, cfg: LoKrConfig) -> nn.Module:
    return _peft(
        model, cfg, "LoKrConfig", "TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING",
        r=cfg.r, alpha=cfg.alpha, rank_dropout=cfg.rank_dropout, module_dropout=cfg.module_dropout,
    )


STRATEGIES: dict[str, Callable[[nn.Module, object], nn.Module]] = {
    "full": apply_full,
    "partial": apply_partial,
    "lora": apply_lora,
    "staged": apply_staged,
    "ia3": apply_ia3,
    "adalora": apply_adalora,
    "loha": apply_loha,
    "lokr": apply_lokr,
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
