"""What a strategy is: one record of what it trains and what it adds to the Trainer.

`hf_transfer.strategies.STRATEGIES` holds one `Strategy` per `finetune.strategy` value; the recipe's
`finetune` section is built from its `options` class. `Hooks` are the Trainer extras strategies and
objectives ask for (optimizer groups, callbacks, loss terms), consumed by `TransferTrainer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn


@dataclass(frozen=True)
class Strategy:
    name: str
    """The recipe's `finetune.strategy` value."""
    options: type
    """Dataclass of the `finetune` section for this strategy."""
    apply: Callable[[nn.Module, Any], nn.Module]
    """(model, options) -> the model to train (parameters frozen, adapters added); a PEFT strategy's also
    takes the task's PEFT TaskType (model, options, task_type)."""
    hooks: Callable[[nn.Module, Any, Any, Hooks], None] | None = None
    """(model, options, TrainingArguments, hooks): add the strategy's optimizer groups and callbacks."""
    head_only: Callable[[Any], bool] = lambda options: False
    """Whether only the head trains (a linear probe): the backbone's features cannot adapt."""
    peft: bool = False
    """The model is wrapped by PEFT (one head: no multi-task)."""
    reload_best: bool = True
    """Whether Trainer may reload the best checkpoint at the end (load_best_model_at_end)."""
    finish: Callable[[Any, Any, Any], None] | None = None
    """(trainer, options, folder): after the model is saved by Trainer, on the main process."""
    frozen_linears_in_bf16: Callable[[Any], bool] = lambda options: False
    """(options) -> whether, under bf16 autocast, the frozen nn.Linear layers are stored in bf16 while training
    (memory.FrozenLinearsInBf16). Autocast casts their weights to bf16 at every call anyway, so the step
    computes the same numbers with half the weight memory and no per-call bf16 copies kept for the backward
    (LoRA on BERT-base: peak RSS -14 %). Only where the frozen weights never leave the process (no merge)."""
    return_freed_memory: bool = False
    """CPU training gives freed blocks of 1 MiB or more back to the kernel (memory.ReturnFreedMemory): the
    activations glibc would keep resident. LoRA on BERT-base: peak RSS -10 to -20 %, what holds it under 0.6x
    full fine-tuning's, at 1.4-1.5x the step time (each freed block is unmapped, the next faults in fresh
    pages; BENCHMARKS.md, LoRA memory); a user's MALLOC_MMAP_THRESHOLD_ wins. Off for full fine-tuning,
    whose weight-sized gradients and AdamW temporaries would fault in again every step."""


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
    metrics: dict = field(default_factory=dict)
    """Counts an objective adds to metrics.json (e.g. `unlabelled_examples`)."""


def _numel(p) -> int:  # DeepSpeed ZeRO-3 leaves an empty local shard; ds_numel is the full size
    return getattr(p, "ds_numel", None) or p.numel()


def trained_modules(model: nn.Module, depth: int = 2) -> dict[str, int]:
    """Trainable parameters per module, named to `depth` levels below the model (PEFT's wrapper levels
    skipped): which parts trained, e.g. {"model.decoder": 29_000_000} when a Whisper encoder is frozen."""
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            parts = name.removeprefix("base_model.model.").split(".")
            key = ".".join(parts[:depth] if len(parts) > depth else parts[:-1] or parts)
            out[key] = out.get(key, 0) + _numel(p)
    return out


def count_parameters(model: nn.Module) -> tuple[int, int]:
    numel = _numel
    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    return trainable, sum(numel(p) for p in model.parameters())
