"""The runs of a transfer report (recipe `compare`): names, overrides and the recipe of each.

Built-in runs that train: `scratch` (the same recipe from random initialisation, `model.pretrained: false`,
with every weight trained, `finetune: {strategy: full}`: frozen or adapted random weights are no baseline)
and `linear_probe` (`finetune: {strategy: partial, freeze: backbone}`); a task adds runs that train
nothing (its record's `baselines`, e.g. `majority`). An entry `{name: {dotted.key: value, ...}}` adds
overrides — to a built-in, or to the recipe for a new variant (setting `finetune.strategy` starts that
section afresh).
Each variant trains into `<output_dir>/compare/<name>`.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from hf_transfer.errors import RecipeError
from hf_transfer.recipe.yaml import apply_override

PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
"""A run's name is a folder name under <output_dir>/compare: no separators, no `..`."""

MAIN = "main"  # the recipe's own run, in reports and curves

BUILTIN: dict[str, dict[str, Any]] = {
    "scratch": {"model.pretrained": False, "finetune.strategy": "full"},
    "linear_probe": {"finetune.strategy": "partial", "finetune.freeze": "backbone"},
}


def entries(compare: list, baselines) -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides) of every `compare` entry; `baselines`: the task's runs without training (e.g.
    majority), which take no overrides."""
    out = []
    for i, entry in enumerate(compare):
        if isinstance(entry, str):
            name, overrides = entry, {}
        elif len(entry) == 1:
            name, overrides = next(iter(entry.items()))
        else:
            raise RecipeError(f"compare[{i}]: a mapping entry must have one key (the run's name)")
        if not PLAIN_NAME.match(name):
            raise RecipeError(f"compare[{i}]: run name {name!r} must be a plain name (letters, digits, _ or -)")
        if name == MAIN:
            raise RecipeError(f"compare[{i}]: {MAIN!r} names the recipe's own run in the report; choose another name")
        if isinstance(entry, str) and name not in BUILTIN and name not in baselines:
            raise RecipeError(
                f"compare[{i}]: unknown run {name!r} (built-in: {', '.join([*BUILTIN, *baselines])}; "
                "other runs need overrides: {name: {key: value}})"
            )
        if name in baselines and overrides:
            raise RecipeError(f"compare[{i}].{name}: takes no overrides")
        if name in {n for n, _ in out}:
            raise RecipeError(f"compare[{i}]: run {name!r} listed twice")
        out.append((name, {**BUILTIN.get(name, {}), **overrides}))
    return out


def variant_raw(raw: dict[str, Any], name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The raw recipe of one comparison run."""
    raw = copy.deepcopy(raw)
    raw.pop("compare", None)
    if "finetune.strategy" in overrides:
        raw["finetune"] = {}
    out = raw.setdefault("training", {}) or {}
    raw["training"] = out
    base = out.get("output_dir") or "outputs/run"
    out["output_dir"] = str(Path(base) / "compare" / name)
    for key, value in overrides.items():
        apply_override(raw, key, value)
    return raw
