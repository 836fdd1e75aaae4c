"""The `training` section: checked against `transformers.TrainingArguments`' own fields (or the task's
subclass of it), not re-modelled. Types and enum choices come from the class's hints, ranges from
TRAINING_RANGES; tokens are refused, `bf16: auto` is kept for precision.resolve_bf16, and every
`report_to` integration must be one transformers knows and is installed here. Also the recipe's
`early_stopping_patience`, which needs the evaluation and the metric that `training` sets.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any

from hf_transfer.errors import RecipeError
from hf_transfer.recipe.typed import INT32_MAX, check_range, check_value

SECRET_FIELDS = ("hub_token",)  # would be pickled into checkpoints' training_args.bin

# training keys -> their range (check_range's keywords); every float is also finite (recipe/typed.py)
_COUNT = {"low": 1, "high": INT32_MAX}
TRAINING_RANGES: dict[str, dict[str, Any]] = {
    "learning_rate": {"low": 0, "low_open": True},
    "num_train_epochs": {"high": INT32_MAX},  # > 0 unless max_steps > 0: _check_training_steps
    "per_device_train_batch_size": _COUNT,
    "per_device_eval_batch_size": _COUNT,
    "gradient_accumulation_steps": _COUNT,
    "eval_accumulation_steps": _COUNT,
    "weight_decay": {"low": 0},
    "warmup_steps": {"low": 0, "high": INT32_MAX},
    "warmup_ratio": {"low": 0, "high": 1},
    "max_grad_norm": {"low": 0},
    "adam_beta1": {"low": 0, "high": 1, "high_open": True},
    "adam_beta2": {"low": 0, "high": 1, "high_open": True},
    "adam_epsilon": {"low": 0},
    "label_smoothing_factor": {"low": 0, "high": 1},
    "eval_steps": {"low": 0, "low_open": True, "high": INT32_MAX},
    "save_steps": {"low": 0, "low_open": True, "high": INT32_MAX},
    "logging_steps": {"low": 0, "low_open": True, "high": INT32_MAX},
    "dataloader_num_workers": {"low": 0, "high": 1024},
    "seed": {"low": 0, "high": 2**32 - 1},  # numpy's seed range
    "data_seed": {"low": 0, "high": 2**32 - 1},
}


def check_training(data: Any, arguments: type) -> dict[str, Any]:
    """The `training` section against `arguments` (the task's TrainingArguments class): its fields, their
    types, enum choices and ranges, the step count and the reporting integrations."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"training: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(arguments) if f.init}
    hints = typing.get_type_hints(arguments)
    out = {}
    for key, value in data.items():
        if key not in fields:
            raise RecipeError(f"training.{key}: not a transformers.{arguments.__name__} field")
        if key in SECRET_FIELDS and value:
            raise RecipeError(
                f"training.{key}: never put tokens in a recipe; set HF_TOKEN or run `hf auth login`"
            )
        if key == "bf16" and value == "auto":  # resolved when training starts (precision.resolve_bf16)
            out[key] = value
            continue
        out[key] = check_value(value, hints.get(key, Any), f"training.{key}")
        _check_choice(out[key], hints.get(key, Any), f"training.{key}")
        if key in TRAINING_RANGES and isinstance(out[key], (int, float)) and not isinstance(out[key], bool):
            check_range(out[key], f"training.{key}", **TRAINING_RANGES[key])
    _check_training_steps(out)
    _check_report_to(out.get("report_to"))
    return out


# report_to names that transformers' get_available_reporting_integrations() never lists (Trainer checks them)
UNLISTED_INTEGRATIONS = ("flyte", "kubeflow")


def _check_report_to(value: Any) -> None:
    """training.report_to: every integration named is one transformers knows and is installed here (a
    missing one would fail after the model has loaded)."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = [value] if isinstance(value, str) else list(value or [])
    installed = get_available_reporting_integrations()
    for name in (n for n in names if n not in ("none", "all")):
        if name not in INTEGRATION_TO_CALLBACK:
            raise RecipeError(f"training.report_to: unknown integration {name!r} (transformers knows: "
                              f"{', '.join(INTEGRATION_TO_CALLBACK)}, or none / all)")
        if name not in installed and name not in UNLISTED_INTEGRATIONS:
            raise RecipeError(f"training.report_to: {name} is not installed here (installed integrations: "
                              f"{', '.join(installed) or 'none'}); install it or use report_to: none")


def _check_choice(value: Any, hint: Any, path: str) -> None:
    """A string for an `Enum | str` field (eval_strategy, lr_scheduler_type, optim ...): one of the enum's values."""
    choices = [m.value for a in typing.get_args(hint) if isinstance(a, type) and issubclass(a, enum.Enum) for m in a]
    if choices and isinstance(value, str) and value not in choices:
        raise RecipeError(f"{path}: expected one of {', '.join(map(str, choices))}, got {value!r}")


def _check_training_steps(training: dict[str, Any]) -> None:
    """max_steps: -1 (train num_train_epochs) or >= 1; then num_train_epochs > 0 (0 or -1 would save an
    untrained head as a finished run)."""
    steps = training.get("max_steps", -1)
    if steps != -1:
        if not 1 <= steps <= INT32_MAX:
            raise RecipeError(f"training.max_steps: must be -1 (train num_train_epochs) or in [1, {INT32_MAX}], got {steps!r}")
        return
    epochs = training.get("num_train_epochs")
    if epochs is not None and not epochs > 0:
        raise RecipeError(f"training.num_train_epochs: must be > 0 (or set training.max_steps >= 1), got {epochs!r}")


def check_early_stopping(raw: dict[str, Any], training: dict[str, Any]) -> int | None:
    """`early_stopping_patience`: >= 1, and needs evaluation and a metric to watch."""
    patience = check_value(raw.get("early_stopping_patience"), int | None, "early_stopping_patience")
    if patience is None:
        return None
    check_range(patience, "early_stopping_patience", low=1, high=INT32_MAX)
    if training.get("eval_strategy", "epoch") == "no":
        raise RecipeError(
            f"early_stopping_patience: needs evaluation, but training.eval_strategy is 'no' (got patience {patience})"
        )
    if "metric_for_best_model" in training and training["metric_for_best_model"] is None:
        raise RecipeError("early_stopping_patience: needs a metric, but training.metric_for_best_model is null")
    return patience
