"""What a run does to hold less memory, where its strategy's record asks for it (strategies/base.py):

- `ReturnFreedMemory` (`return_freed_memory`, the PEFT strategies): on a CPU, glibc's mmap threshold fixed at
  1 MiB when training begins, so freed activations go back to the kernel;
- `FrozenLinearsInBf16` (`frozen_linears_in_bf16`, LoRA): under bf16 autocast the frozen linears are stored in
  the bf16 that autocast computes with anyway.

BENCHMARKS.md (LoRA memory) gives what each saves and costs.
"""

from __future__ import annotations

import os

from transformers import TrainerCallback

from hf_transfer.recipe.schema import Recipe
from hf_transfer.strategies import STRATEGIES

M_MMAP_THRESHOLD, MMAP_THRESHOLD = -3, 1 << 20  # glibc's mallopt parameter; 1 MiB


def return_freed_memory(args) -> bool:
    """CPU training on glibc: blocks of 1 MiB or more (activations, their gradients) go back to the kernel
    when freed. By default glibc's mmap threshold rises past the activations' size after the first free, so
    from then on they come from the heap and, once freed, stay resident. BERT-base, batch 8 x 128: LoRA's
    peak RSS -10 to -20 %, at 1.4-1.5x the step time (BENCHMARKS.md, LoRA memory). A threshold the user set
    (MALLOC_MMAP_THRESHOLD_, GLIBC_TUNABLES) wins. Returns whether it was set."""
    import ctypes
    import sys

    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if (args.device.type != "cpu" or not sys.platform.startswith("linux")
            or "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in tunables):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl's mallopt ignores the parameter)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


class ReturnFreedMemory(TrainerCallback):
    """`return_freed_memory` when training begins: for the strategies whose record asks for it (PEFT)."""

    def on_train_begin(self, args, state, control, **kwargs):
        return_freed_memory(args)


def frozen_linears(model) -> list:
    """The nn.Linear layers whose parameters are all frozen and belong to no other kind of module (a
    weight tied to an embedding, as Whisper's output projection is, stays as it is)."""
    from torch import nn

    shared = {id(p) for m in model.modules() if not isinstance(m, nn.Linear) for p in m.parameters(recurse=False)}
    return [m for m in model.modules() if isinstance(m, nn.Linear)
            and all(not p.requires_grad and id(p) not in shared for p in m.parameters(recurse=False))]


class FrozenLinearsInBf16(TrainerCallback):
    """Under bf16 autocast (not DeepSpeed / FSDP, which manage the weights' dtype), the frozen linears are
    stored in bf16 from the start of training and in fp32 again at its end: autocast casts them to bf16 at
    every call anyway, so training computes the same numbers. Stored in bf16 they take half the memory,
    and autocast no longer makes a bf16 copy of each at every call, which it keeps for the backward beside
    the fp32 weight (a frozen weight gets no cast cache): LoRA on BERT-base, batch 8 x 128, peak RSS
    2,310 -> 1,987 MB (BENCHMARKS.md, LoRA memory)."""

    def __init__(self):
        self.layers: list = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None or not args.bf16 or args.fp16 or args.deepspeed or args.fsdp:
            return
        import torch

        self.layers = [m for m in frozen_linears(model) if m.weight.dtype == torch.float32]
        for layer in self.layers:
            layer.to(torch.bfloat16)

    def on_train_end(self, args, state, control, **kwargs):
        import torch

        for layer in self.layers:  # the dtype back: later fp32 code (outside autocast) meets fp32 weights
            layer.to(torch.float32)
        self.layers = []


def memory_callbacks(recipe: Recipe) -> list:
    """ReturnFreedMemory and FrozenLinearsInBf16 where the recipe's strategy asks for them (its record's
    `return_freed_memory`, `frozen_linears_in_bf16`)."""
    strategy = STRATEGIES[recipe.finetune.strategy]
    return ([ReturnFreedMemory()] if strategy.return_freed_memory else []) + (
        [FrozenLinearsInBf16()] if strategy.frozen_linears_in_bf16(recipe.finetune) else [])
