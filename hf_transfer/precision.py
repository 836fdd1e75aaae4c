"""The precision a run trains in: the launcher's mixed precision, and `training.bf16: auto` resolved
against the hardware (bf16 autocast where a GPU or this CPU computes bf16 natively, fp32 elsewhere).
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def launcher_precision(training: dict[str, Any]) -> dict[str, bool]:
    """The launcher's mixed precision (`accelerate launch` / its config) unless the recipe sets its own:
    DeepSpeed takes bf16/fp16 from the launcher, and Trainer refuses a TrainingArguments that disagrees."""
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher in ("bf16", "fp16") and not {"bf16", "fp16"} & training.keys():
        return {launcher: True}
    return {}


def resolve_bf16(training: dict[str, Any]) -> dict[str, Any]:
    """`training.bf16: auto`: bf16 autocast where the hardware computes bf16 natively (a GPU that supports it; a
    CPU with AVX512-BF16 or AMX, by torch's own checks), else fp32; the launcher's mixed precision or the
    recipe's `fp16` wins. On such a CPU the text default trains 1.45x faster at the same test accuracy
    (BENCHMARKS.md); elsewhere bf16 on a CPU is emulated and far slower."""
    if training.get("bf16") != "auto":
        return training
    out = {k: v for k, v in training.items() if k != "bf16"}
    if out.get("fp16") or os.environ.get("ACCELERATE_MIXED_PRECISION", "no") != "no":
        return out
    out["bf16"] = native_bf16()
    if out["bf16"] and not has_accelerator() and not _SAID:
        log.info("training.bf16: auto -> bf16 autocast (this CPU computes bf16 natively)")
        _SAID.append(True)  # once a process: the arguments are built more than once a run
    return out


_SAID: list[bool] = []


def native_bf16() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if has_accelerator():
        return False
    cpu = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in cpu if check is not None)


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
