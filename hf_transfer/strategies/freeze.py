"""Strategies `full` (everything the loader left trainable) and `partial` (a frozen backbone: only the
head trains, a linear probe; or the embeddings and the first N blocks frozen)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from hf_transfer.recipe.typed import INT32_MAX, check_range
from hf_transfer.anatomy import (
    freeze_backbone, freeze_encoder, freeze_first_blocks, keep_frozen_backbone_in_eval,
)
from hf_transfer.strategies.base import Strategy


@dataclass
class FullConfig:
    strategy: Literal["full"] = "full"
    layer_decay: float | None = None
    """Layer-wise LR decay: LR = learning_rate × layer_decay^(depth from the top); head at learning_rate."""
    l2sp: float = 0.0
    """L2-SP: add l2sp/2 · ||w − w_pretrained||² over the backbone's weights to the loss."""

    def __post_init__(self) -> None:
        check_range(self.layer_decay, "finetune.layer_decay", low=0, low_open=True)
        check_range(self.l2sp, "finetune.l2sp", low=0)


@dataclass
class PartialConfig:
    strategy: Literal["partial"] = "partial"
    freeze: Literal["backbone", "encoder"] | int = "backbone"
    """`backbone`: only the head trains (linear probe); `encoder`: the encoder of an encoder-decoder model
    (Whisper) freezes, the decoder trains; N: embeddings + the first N blocks (of the encoder) freeze."""
    cache_features: bool | None = None
    """Linear probe on cached backbone features (computed once, on disk). null: whenever possible."""
    l2sp: float = 0.0
    """L2-SP (see full); only the unfrozen backbone weights are pulled back."""

    def __post_init__(self) -> None:
        if self.freeze not in ("backbone", "encoder"):
            check_range(self.freeze, "finetune.freeze", low=0, high=INT32_MAX)
        check_range(self.l2sp, "finetune.l2sp", low=0)


def apply_full(model: nn.Module, cfg: FullConfig) -> nn.Module:
    """Everything trains that the model loader left trainable (it may keep a fixed position table
    or, for speech, the convolutional feature encoder frozen)."""
    return model


def apply_partial(model: nn.Module, cfg: PartialConfig) -> nn.Module:
    if cfg.freeze == "backbone":
        freeze_backbone(model)
        keep_frozen_backbone_in_eval(model)
    elif cfg.freeze == "encoder":
        freeze_encoder(model)
    else:
        freeze_first_blocks(model, cfg.freeze)
    return model


FULL = Strategy(name="full", options=FullConfig, apply=apply_full)
PARTIAL = Strategy(name="partial", options=PartialConfig, apply=apply_partial,
                   head_only=lambda cfg: cfg.freeze == "backbone")
