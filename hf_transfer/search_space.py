"""The `tune` section's search space: which recipe keys a trial sets, and the recipe of one trial.

A space maps dotted recipe keys (a bare name means `training.<name>`) to a list of choices or a range
{low, high, log, step}. Every choice and both bounds of every range are validated as the key they set,
so a bad space is refused before the first trial; `tune_variant` writes one trial's recipe (a searched
`finetune.strategy` keeps only the options it has); `in_space` says whether a value lies in an entry (the
recipe's own values start a search). runs/tune.py (Optuna) and runs/raytune.py (Ray Tune) sample from it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Callable

from hf_transfer.errors import RecipeError
from hf_transfer.recipe.schema import TuneConfig
from hf_transfer.recipe.typed import build, check_range, check_value
from hf_transfer.recipe.yaml import apply_override
from hf_transfer.strategies import STRATEGIES

SEARCH_ONLY = ("tune", "rank")  # sections a trial's recipe does not carry
# Keys no trial may set: trials are compared on one validation split by one metric, each in its own folder
# (a searched training.output_dir was overwritten by the trial's folder, unsaid).
FIXED = {
    "training.output_dir": "each trial writes its own folder (trials/trial-<n>)",
    "training.metric_for_best_model": "it is the metric trials are compared on",
    "training.greater_is_better": "it is the direction trials are compared in",
    "data": "the data and its splits are what trials are compared on (of the data keys, class_weights and "
            "max_train_samples may be searched)",
    "hub": "trials are not pushed; with hub.push in the recipe, tune --train-best pushes the best run",
    **{section: "it shapes the run, not a trial's training: run it on the best recipe" for section in ("cv", "curve")},
}  # a key without a section is a training key: `seeds`, `compare`, `tasks`, `verify` are no TrainingArguments field
SEARCHED_DATA = ("data.class_weights", "data.max_train_samples")


def _space_key(key: str) -> str:
    """`learning_rate` -> `training.learning_rate`; dotted keys stay."""
    return key if "." in key else f"training.{key}"


def _strategy_fields(name: str) -> set[str] | None:
    return {f.name for f in dataclasses.fields(STRATEGIES[name].options)} if name in STRATEGIES else None


def tune_variant(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The recipe of one trial: `raw` (without its tune and rank sections) with `params` (dotted keys)
    applied. A searched `finetune.strategy` keeps only the recipe's finetune options that it has, and a
    searched option applies only when the trial's strategy has it."""
    out = copy.deepcopy({k: v for k, v in raw.items() if k not in SEARCH_ONLY})
    finetune = dict(out.get("finetune") or {})
    strategy = params.get("finetune.strategy", finetune.get("strategy", "full"))
    fields = _strategy_fields(strategy)
    if fields is not None and strategy != finetune.get("strategy", "full"):
        finetune = {k: v for k, v in finetune.items() if k in fields}
    finetune["strategy"] = strategy
    out["finetune"] = finetune
    for key, value in params.items():
        option = key.removeprefix("finetune.")
        if key.startswith("finetune.") and fields is not None and option not in fields:
            continue  # an option of another searched strategy
        apply_override(out, key, value)
    return out


def integer_range(spec: dict[str, Any]) -> bool:
    """A `tune.space` range of integers: both bounds (and a step, if any) are integers."""
    return all(isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool) for k in ("low", "high")) \
        and isinstance(spec.get("step") or 1, int)


def _same(value: Any, choice: Any) -> bool:
    return isinstance(value, bool) == isinstance(choice, bool) and value == choice


def in_space(value: Any, spec: Any) -> bool:
    """Whether `value` is one of a list's choices, or inside a range (on its integers or steps)."""
    if isinstance(spec, list):
        return any(_same(value, choice) for choice in spec)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not spec["low"] <= value <= spec["high"]:
        return False
    step = spec.get("step") or (1 if integer_range(spec) else None)
    return step is None or math.isclose((value - spec["low"]) / step, round((value - spec["low"]) / step))


def _space_points(key: str, value: Any) -> list[Any]:
    """The values of one space entry to validate: its choices, or a range's bounds (checked here)."""
    where = f"tune.space.{key}"
    if isinstance(value, list):
        if not value:
            raise RecipeError(f"{where}: list at least one choice")
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
            raise RecipeError(f"{where}: choices are numbers, strings, booleans or null, got {value!r}")
        return value
    if not isinstance(value, dict) or not {"low", "high"} <= value.keys() or not value.keys() <= {"low", "high", "log", "step"}:
        raise RecipeError(f"{where}: expected a list of choices or a range {{low, high, log, step}}, got {value!r}")
    low, high = (check_value(value[k], float, f"{where}.{k}") for k in ("low", "high"))
    if not low < high:
        raise RecipeError(f"{where}: low must be below high, got {value['low']!r} and {value['high']!r}")
    if check_value(value.get("log", False), bool, f"{where}.log") and low <= 0:
        raise RecipeError(f"{where}.low: a log range needs low > 0, got {value['low']!r}")
    step = check_value(value.get("step"), float | None, f"{where}.step")
    check_range(step, f"{where}.step", low=0, low_open=True)
    if value.get("log") and step is not None:
        raise RecipeError(f"{where}.step: not available with log: true")
    return [value["low"], value["high"]]


def build_tune(raw: dict[str, Any], validate: Callable[[dict[str, Any]], Any]) -> TuneConfig | None:
    """The `tune` section; every choice and both bounds of every range validated as the key they set, by
    `validate` (the recipe validator, handed in: it builds this section too)."""
    if raw.get("tune") is None:
        return None
    tune = build(TuneConfig, raw["tune"], "tune")
    tune.space = {_space_key(k): v for k, v in tune.space.items()}
    base = (raw.get("finetune") or {}).get("strategy", "full")
    strategies = tune.space.get("finetune.strategy", [base])
    for key in sorted(tune.space, key=lambda k: k != "finetune.strategy"):  # strategies first: options need them
        for point in _space_points(key, tune.space[key]):
            _check_point(raw, key, point, strategies, validate)
    return tune


def _check_point(raw: dict[str, Any], key: str, value: Any, strategies: list[Any], validate) -> None:
    why = FIXED.get(key, FIXED.get(key.split(".")[0]))
    if why and key not in SEARCHED_DATA:
        raise RecipeError(f"tune.space.{key}: not searched: {why}")
    option = key.removeprefix("finetune.")
    owners = [s for s in strategies if key == "finetune.strategy" or not key.startswith("finetune.")
              or option in (_strategy_fields(s) or set())]
    if not owners:
        raise RecipeError(f"tune.space.{key}: not an option of strategy {', '.join(map(repr, strategies))}")
    for strategy in owners if key.startswith("finetune.") and key != "finetune.strategy" else [None]:
        params = {key: value} if strategy is None else {"finetune.strategy": strategy, key: value}
        try:
            validate(tune_variant(raw, params))
        except RecipeError as err:
            raise RecipeError(f"tune.space.{key}: {err}") from None
