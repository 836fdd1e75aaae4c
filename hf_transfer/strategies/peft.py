"""The PEFT strategies: one table of PEFT methods (lora, ia3, adalora, loha, lokr), built on PEFT's own registries.

A row names the method's PEFT type; its config class, its parameter prefix and its default target modules
per architecture are read from PEFT itself (`PEFT_TYPE_TO_CONFIG_MAPPING`, `PEFT_TYPE_TO_PREFIX_MAPPING`,
`TRANSFORMERS_MODELS_TO_<TYPE>_TARGET_MODULES_MAPPING`). Without a default for the architecture, the
Linear layers and 1x1 convolutions inside the blocks are adapted. The classification head is trained
and saved too (`modules_to_save`). Adding a method: its options dataclass and one row of PEFT_METHODS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal

from torch import nn
from transformers import TrainerCallback

from hf_transfer.errors import ModelError, RecipeError
from hf_transfer.folder import MERGED
from hf_transfer.recipe.typed import INT32_MAX, check_range
from hf_transfer.anatomy import block_layer_names, head_parameter_names
from hf_transfer.strategies.base import Hooks, Strategy

log = logging.getLogger(__name__)


def _check(cfg, ranks=(), dropouts=(), positive=(), steps=()) -> None:
    """Ranges of a method's options (a rank: >= 1; a dropout: in [0, 1); alpha: > 0; a step count: >= 0)."""
    for key in ranks:
        check_range(getattr(cfg, key), f"finetune.{key}", low=1, high=INT32_MAX)
    for key in dropouts:
        check_range(getattr(cfg, key), f"finetune.{key}", low=0, high=1, high_open=True)
    for key in positive:
        check_range(getattr(cfg, key), f"finetune.{key}", low=0, low_open=True, high=INT32_MAX)
    for key in steps:
        check_range(getattr(cfg, key), f"finetune.{key}", low=0, high=INT32_MAX)


@dataclass
class LoraConfig:
    strategy: Literal["lora"] = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    """Dropout on the adapters' input: PEFT's default, 0. Above 0 each adapted layer keeps its own dropped copy
    of the input and a mask for the backward pass (BERT-base, batch 8 x 128, query + value: 0.1 costs 108 MB
    of peak RSS, BENCHMARKS.md)."""
    target_modules: list[str] | str | None = None
    """None: PEFT's default for the architecture, else every linear layer of the backbone."""
    merge: bool = False
    """Also save the adapter merged into a plain model under `merged/`."""
    use_dora: bool = False
    """DoRA: weight-decomposed LoRA (PEFT's `use_dora`)."""

    def __post_init__(self) -> None:
        _check(self, ranks=("r",), dropouts=("dropout",), positive=("alpha",))


@dataclass
class IA3Config:
    strategy: Literal["ia3"] = "ia3"
    target_modules: list[str] | str | None = None
    """None: PEFT's default for the architecture."""
    feedforward_modules: list[str] | str | None = None
    merge: bool = False


@dataclass
class AdaLoraConfig:
    strategy: Literal["adalora"] = "adalora"
    init_r: int = 12
    target_r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    tinit: int = 0
    """Steps before rank pruning starts."""
    tfinal: int = 0
    """Steps at the end with the ranks fixed."""
    deltaT: int = 1
    """Steps between two rank re-allocations."""
    target_modules: list[str] | str | None = None
    merge: bool = False

    def __post_init__(self) -> None:
        _check(self, ranks=("init_r", "target_r", "deltaT"), dropouts=("dropout",), positive=("alpha",),
               steps=("tinit", "tfinal"))
        if self.target_r > self.init_r:
            raise RecipeError(f"finetune.target_r: must be <= init_r ({self.init_r}), got {self.target_r}")


@dataclass
class LoHaConfig:
    strategy: Literal["loha"] = "loha"
    r: int = 8
    alpha: int = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    merge: bool = False

    def __post_init__(self) -> None:
        _check(self, ranks=("r",), dropouts=("rank_dropout", "module_dropout"), positive=("alpha",))


@dataclass
class LoKrConfig:
    strategy: Literal["lokr"] = "lokr"
    r: int = 8
    alpha: int = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    merge: bool = False

    def __post_init__(self) -> None:
        _check(self, ranks=("r",), dropouts=("rank_dropout", "module_dropout"), positive=("alpha",))


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class PeftMethod:
    """One PEFT method: the recipe's options and how they become PEFT's config."""

    name: str
    """The recipe's `finetune.strategy` value."""
    options: type
    peft_type: str
    """PEFT's PeftType name (its registries give the config class, the prefix, the default targets)."""
    kwargs: Callable[[Any], dict[str, Any]]
    """Recipe options -> keyword arguments of PEFT's config class (besides target_modules, modules_to_save)."""
    schedule: bool = False
    """The method changes its ranks during training (AdaLoRA): a callback keeps its budget."""
    reload_best: bool = True
    """Whether a checkpoint loads back into the live model (AdaLoRA's pruned ranks do not)."""
    frozen_linears_in_bf16: Callable[[Any], bool] = lambda options: False
    """Whether the adapted model computes the same under bf16 autocast with its frozen linears stored in bf16
    (Strategy.frozen_linears_in_bf16): LoRA adds its adapters' output to the frozen layer's; DoRA reads the
    frozen weight itself, and a merge would write the bf16-rounded weights into `merged/`."""


PEFT_METHODS = (
    PeftMethod("lora", LoraConfig, "LORA", lambda c: dict(
        r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, use_dora=c.use_dora),
        frozen_linears_in_bf16=lambda c: not (c.use_dora or c.merge)),
    PeftMethod("ia3", IA3Config, "IA3", lambda c: dict(feedforward_modules=c.feedforward_modules)),
    # total_step is a placeholder here; AdaLoraBudget sets the real one when training starts
    PeftMethod("adalora", AdaLoraConfig, "ADALORA", lambda c: dict(
        init_r=c.init_r, target_r=c.target_r, lora_alpha=c.alpha, lora_dropout=c.dropout, tinit=c.tinit,
        tfinal=c.tfinal, deltaT=c.deltaT, total_step=c.tinit + c.tfinal + 1), schedule=True, reload_best=False),
    PeftMethod("loha", LoHaConfig, "LOHA", lambda c: dict(
        r=c.r, alpha=c.alpha, rank_dropout=c.rank_dropout, module_dropout=c.module_dropout)),
    PeftMethod("lokr", LoKrConfig, "LOKR", lambda c: dict(
        r=c.r, alpha=c.alpha, rank_dropout=c.rank_dropout, module_dropout=c.module_dropout)),
)


def peft_config_class(peft_type: str):
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[peft_type]]


def default_targets(peft_type: str) -> dict[str, Any]:
    """PEFT's default target modules of the method, per model_type."""
    from peft import utils

    return getattr(utils, f"TRANSFORMERS_MODELS_TO_{peft_type}_TARGET_MODULES_MAPPING", {})


def _submodule(model: nn.Module, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def wrap(model: nn.Module, cfg, method: PeftMethod, task_type: str | None = None) -> nn.Module:
    """Wrap `model` with a PEFT method; the classification head is trained and saved too. `task_type`: the
    task record's PEFT TaskType (SEQ_CLS, TOKEN_CLS); None: SEQ_CLS for a text model, else a plain PeftModel."""
    import peft

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = cfg.target_modules or (None if model_type in default_targets(method.peft_type) else block_layer_names(model))
    # modules_to_save: the modules holding the head (PEFT adds it by itself only for text tasks);
    # a bare parameter (e.g. a weighted layer sum) is not a module PEFT can copy
    heads = sorted({n.rsplit(".", 1)[0] for n in head_parameter_names(model)})
    heads = [h for h in heads if isinstance(_submodule(model, h), nn.Module)]
    # SEQ_CLS's wrapper forwards input_ids; audio and vision models take other inputs: plain PeftModel.
    if task_type is None and getattr(model, "main_input_name", None) == "input_ids":
        task_type = "SEQ_CLS"
    try:
        peft_cfg = peft_config_class(method.peft_type)(
            task_type=peft.TaskType[task_type] if task_type else None,
            target_modules=targets,
            modules_to_save=heads,
            **method.kwargs(cfg),
        )
        return peft.get_peft_model(model, peft_cfg)
    except ValueError as err:
        raise ModelError(f"finetune.target_modules: {str(err).splitlines()[0]}") from None


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


def finish(trainer, cfg, out) -> None:
    """After the adapter is saved: `merged/` (merge: true), and the base model's config with the run's
    labels and head class beside the adapter (for AutoPeftModel users and pipeline())."""
    if cfg.merge:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / MERGED))
        trainer.processing_class.save_pretrained(str(out / MERGED))
    base = trainer.model.base_model.model
    base.config.architectures = [type(base).__name__]  # the head class (not the backbone's)
    base.config.save_pretrained(str(out))


def _strategy(method: PeftMethod) -> Strategy:
    def hooks(model, cfg, args, hooks: Hooks) -> None:
        if method.schedule:
            hooks.callbacks.append(AdaLoraBudget(model))

    return Strategy(
        name=method.name, options=method.options, apply=lambda model, cfg, task_type=None: wrap(model, cfg, method, task_type),
        hooks=hooks, peft=True, reload_best=method.reload_best, finish=finish, return_freed_memory=True,
        frozen_linears_in_bf16=method.frozen_linears_in_bf16,
    )


STRATEGIES = {m.name: _strategy(m) for m in PEFT_METHODS}
