"""Fine-tuning strategies: which parameters train and what the Trainer adds for them.

`STRATEGIES` holds one record (`Strategy`, see base.py) per `finetune.strategy` value: full and partial
(freeze.py), staged unfreezing (staged.py) and the PEFT methods (peft.py, one table). Layer-wise LR
decay and L2-SP are options of several strategies (layers.py); the cached-feature linear probe is
partial's fast path (probe.py). Adding a PEFT method: a row of peft.PEFT_METHODS.
"""

from __future__ import annotations

import logging

from torch import nn

from hf_transfer.strategies import freeze, peft, staged
from hf_transfer.strategies.base import Hooks, Strategy, count_parameters, trained_modules
from hf_transfer.strategies.layers import option_hooks

log = logging.getLogger(__name__)

_PEFT = peft.STRATEGIES
STRATEGIES: dict[str, Strategy] = {
    s.name: s for s in (freeze.FULL, freeze.PARTIAL, _PEFT["lora"], staged.STAGED, *_PEFT.values())
}


def apply_strategy(model: nn.Module, cfg, peft_task_type: str | None = None, pretrained: bool = True) -> nn.Module:
    """The model with the recipe's `finetune` section applied; logs the trainable share. `peft_task_type`:
    the task record's PEFT TaskType, for PEFT strategies; `pretrained`: false for random initialisation,
    which every strategy but full would keep frozen or adapt (one warning)."""
    strategy = STRATEGIES[cfg.strategy]
    if not pretrained and strategy is not freeze.FULL:
        log.warning("model.pretrained is false: finetune.strategy %s keeps random weights frozen or adapts them; "
                    "'finetune={strategy: full}' trains every weight (compare's scratch run does)", cfg.strategy)
    model = strategy.apply(model, cfg, peft_task_type) if strategy.peft else strategy.apply(model, cfg)
    trainable, total = count_parameters(model)
    log.info(
        "strategy %s: trainable parameters %s / %s (%.2f%%)",
        cfg.strategy, f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1),
    )
    return model


def trainer_hooks(model: nn.Module, cfg, args) -> Hooks:
    """The Trainer extras that the `finetune` section `cfg` asks for."""
    hooks = Hooks()
    option_hooks(model, cfg, hooks)
    strategy = STRATEGIES[cfg.strategy]
    if strategy.hooks is not None:
        strategy.hooks(model, cfg, args, hooks)
    return hooks


__all__ = ["STRATEGIES", "Strategy", "Hooks", "apply_strategy", "trainer_hooks", "count_parameters",
           "trained_modules"]
