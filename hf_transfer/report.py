"""The transfer report: what pretraining buys, measured against the same recipe without it.

Recipe key `compare` lists runs to set beside the main one. Built-in names:
`scratch` (same recipe, `model.pretrained: false`), `linear_probe` (`finetune: {strategy: partial,
freeze: backbone}`) and `majority` (predict the most frequent training label; no training). An
entry `{name: {dotted.key: value, ...}}` adds overrides — to a built-in, or to the recipe for a new
variant (e.g. `lora: {finetune.strategy: lora, training.learning_rate: 5e-4}`; setting
`finetune.strategy` starts that section afresh). Each variant trains into `<output_dir>/compare/<name>`.

Writes `report.json`, `report.md` and `curves.png` (validation metric per epoch) into the output
folder; states each pretrained run's gain over scratch and flags negative transfer.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from hf_transfer.errors import RecipeError

log = logging.getLogger(__name__)

BUILTIN: dict[str, dict[str, Any]] = {
    "scratch": {"model.pretrained": False},
    "linear_probe": {"finetune.strategy": "partial", "finetune.freeze": "backbone"},
    "majority": {},
}


def _entries(compare: list) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, entry in enumerate(compare):
        if isinstance(entry, str):
            name, overrides = entry, {}
        elif len(entry) == 1:
            name, overrides = next(iter(entry.items()))
        else:
            raise RecipeError(f"compare[{i}]: a mapping entry must have one key (the run's name)")
        if isinstance(entry, str) and name not in BUILTIN:
            raise RecipeError(
                f"compare[{i}]: unknown run {name!r} (built-in: {', '.join(BUILTIN)}; "
                "other runs need overrides: {name: {key: value}})"
            )
        if name == "majority" and overrides:
            raise RecipeError(f"compare[{i}].majority: takes no overrides")
        if name in {n for n, _ in out}:
            raise RecipeError(f"compare[{i}]: run {name!r} listed twice")
        out.append((name, {**BUILTIN.get(name, {}), **overrides}))
    return out


def variant_raw(raw: dict[str, Any], name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The raw recipe of one comparison run."""
    from hf_transfer.config import apply_override

    raw = copy.deepcopy(raw)
    raw.pop("compare", None)
    for section in ("vision", "speech"):  # Recipe.to_dict() writes them as null
        if raw.get(section, 0) is None:
            raw.pop(section)
    if "finetune.strategy" in overrides:
        raw["finetune"] = {}
    out = raw.setdefault("training", {}) or {}
    raw["training"] = out
    base = out.get("output_dir") or "outputs/run"
    out["output_dir"] = str(Path(base) / "compare" / name)
    for key, value in overrides.items():
        apply_override(raw, key, value)
    return raw


def check_compare(raw: dict[str, Any], compare: list) -> None:
    """Validate every comparison run as a recipe of its own (errors name the run)."""
    from hf_transfer.config import validate

    for name, overrides in _entries(compare):
        if name == "majority":
            continue
        try:
            validate(variant_raw(raw, name, overrides))
        except RecipeError as err:
            raise RecipeError(f"compare.{name}: {err}") from None


def _headline(recipe) -> tuple[str, bool]:
    from hf_transfer.metrics import best_metric

    return best_metric(recipe.data.problem_type)


def majority_metrics(recipe) -> dict[str, dict[str, float]]:
    """Metrics of a constant prediction: the majority class (per label for multi-label; the mean
    for regression), taken from the training split."""
    import numpy as np
    from transformers import EvalPrediction

    from hf_transfer.metrics import compute_metrics_fn
    from hf_transfer.train import load_splits

    seed = recipe.training.get("seed", 42)
    splits = load_splits(recipe, seed).splits
    train = np.asarray(splits["train"]["labels"], dtype=float)
    if recipe.data.problem_type == "regression":
        constant = np.array([train.mean()])
    elif recipe.data.problem_type == "multi_label_classification":
        constant = np.where(train.mean(axis=0) >= 0.5, 1.0, -1.0)
    else:
        counts = np.bincount(train.astype(int))
        constant = np.eye(len(counts))[counts.argmax()]
    compute = compute_metrics_fn(recipe.data.problem_type)
    out = {}
    for role, prefix in (("validation", "eval"), ("test", "test")):
        if role in splits:
            refs = np.asarray(splits[role]["labels"])
            logits = np.tile(constant, (len(refs), 1))
            out[role] = {f"{prefix}_{k}": v for k, v in compute(EvalPrediction(logits, refs)).items()}
    return out


def _row(name: str, kind: str, recipe, result) -> dict[str, Any]:
    metric, _ = _headline(recipe)
    m = result.metrics
    features = m.get("cached_features") or {}
    curve: dict[float, float] = {}  # epoch -> value; the first per epoch (the last is the final evaluate)
    for e in result.trainer.state.log_history:
        if f"eval_{metric}" in e and "epoch" in e:
            curve.setdefault(e["epoch"], e[f"eval_{metric}"])
    return {
        "name": name,
        "kind": kind,
        "strategy": recipe.finetune.strategy,
        "pretrained": recipe.model.pretrained,
        "validation": m["validation"].get(f"eval_{metric}"),
        "test": m.get("test", {}).get(f"test_{metric}"),
        "train_seconds": round(m["train"]["train_runtime"] + features.get("seconds", 0.0), 1),
        "cached_features": bool(features),
        "trainable_parameters": m["trainable_parameters"],
        "output_dir": str(result.output_dir),
        "curve": sorted(curve.items()),
    }


def _gain(row: dict, scratch: dict | None, greater: bool, split: str) -> float | None:
    if scratch is None or row[split] is None or scratch[split] is None:
        return None
    diff = row[split] - scratch[split] if greater else scratch[split] - row[split]
    return round(100 * diff, 2) if greater else diff


def write_report(recipe, result, overwrite: bool = False) -> dict[str, Any]:
    """Run the comparison runs of `recipe.compare`, write report.json / report.md / curves.png."""
    from hf_transfer.config import load_recipe
    from hf_transfer.train import run

    out = result.output_dir
    metric, greater = _headline(recipe)
    raw = recipe.to_dict()
    raw["training"]["output_dir"] = str(out)  # variants go under <out>/compare/
    kind = "linear_probe" if recipe.finetune.strategy == "partial" and recipe.finetune.freeze == "backbone" else "pretrained"
    rows = [_row("main", kind if recipe.model.pretrained else "scratch", recipe, result)]
    for name, overrides in _entries(recipe.compare):
        if name == "majority":
            maj = majority_metrics(recipe)
            rows.append({
                "name": name, "kind": "majority", "strategy": None, "pretrained": False,
                "validation": maj["validation"].get(f"eval_{metric}"),
                "test": maj.get("test", {}).get(f"test_{metric}"),
                "train_seconds": 0.0, "cached_features": False, "trainable_parameters": 0,
                "output_dir": None, "curve": [],
            })
            continue
        variant = load_recipe(variant_raw(raw, name, overrides))
        log.info("transfer report: running %r", name)
        res = run(variant, overwrite=overwrite)
        strategy = variant.finetune
        kind = (
            "scratch" if not variant.model.pretrained
            else "linear_probe" if strategy.strategy == "partial" and strategy.freeze == "backbone"
            else "pretrained"
        )
        rows.append(_row(name, kind, variant, res))
        del res
    split = "test" if all(r["test"] is not None for r in rows) else "validation"
    scratch = next((r for r in rows if r["kind"] == "scratch"), None)
    for r in rows:
        r["gain_over_scratch"] = _gain(r, scratch, greater, split) if r["kind"] in ("pretrained", "linear_probe") else None
        r["negative_transfer"] = r["gain_over_scratch"] is not None and r["gain_over_scratch"] <= 0
    if not result.trainer.is_world_process_zero():
        return {}
    report = {
        "metric": metric,
        "split": split,
        "gain_unit": "points" if greater else f"{metric} reduction",
        "negative_transfer": rows[0]["negative_transfer"],
        "runs": rows,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    plot_curves(report, out / "curves.png")
    return report


def report_markdown(report: dict[str, Any]) -> str:
    metric, split = report["metric"], report["split"]
    lines = [
        "# Transfer report",
        "",
        f"Headline: {split} {metric}; gain over scratch in {report['gain_unit']}.",
        "",
        f"| run | kind | strategy | validation {metric} | test {metric} | gain over scratch | train time (s) | trainable params |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def fmt(v, spec=".4f"):
        return "—" if v is None else format(v, spec)

    for r in report["runs"]:
        gain = r["gain_over_scratch"]
        gain_text = "—" if gain is None else f"{gain:+.2f}" + (" **negative transfer**" if r["negative_transfer"] else "")
        seconds = f"{r['train_seconds']:.1f}" + (" (cached features)" if r["cached_features"] else "")
        lines.append(
            f"| {r['name']} | {r['kind']} | {r['strategy'] or '—'} | {fmt(r['validation'])} | {fmt(r['test'])} "
            f"| {gain_text} | {seconds} | {r['trainable_parameters']:,} |"
        )
    main = report["runs"][0]
    lines.append("")
    if main["gain_over_scratch"] is None:
        lines.append("No scratch run to compare with.")
    elif report["negative_transfer"]:
        lines.append(f"**Negative transfer**: the pretrained run does not beat scratch ({main['gain_over_scratch']:+.2f}).")
    else:
        lines.append(f"Transfer helps: the main run beats scratch by {main['gain_over_scratch']:+.2f} {report['gain_unit']}.")
    lines.append("")
    lines.append("Validation curves: `curves.png`. Train time includes feature extraction for cached probes.")
    return "\n".join(lines) + "\n"


def plot_curves(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in report["runs"]:
        if r["curve"]:
            xs, ys = zip(*r["curve"])
            ax.plot(xs, ys, marker="o", label=f"{r['name']} ({r['kind']})")
        elif r["kind"] == "majority" and r["validation"] is not None:
            ax.axhline(r["validation"], linestyle="--", color="grey", label="majority")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {report['metric']}")
    ax.set_title("Transfer report: validation curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
