"""`hf-transfer tune`'s outputs: tune.json, tune.md (the trials as a table, the best and the recipe's own
trial marked), tune.png (each trial's value and the best so far; the validation curves) and best.yaml, the
best trial's recipe (runs/tune.py runs the search)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hf_transfer.recipe.yaml import dump_yaml


def table(report: dict[str, Any]) -> str:
    """The trials as a Markdown table, in trial order; the best one marked."""
    keys = sorted({k for r in report["trials"] for k in r["params"]})
    lines = [f"| trial | state | {report['metric']} | seconds | " + " | ".join(keys) + " |",
             "|---" * (4 + len(keys)) + "|"]
    for r in report["trials"]:
        marks = [m for m, n in (("best", report["best"]["number"]), ("recipe", report.get("recipe_trial")))
                 if r["number"] == n]
        mark = f" ({', '.join(marks)})" if marks else ""
        value = "–" if r["value"] is None else f"{r['value']:.4f}"
        cells = [_cell(r["params"].get(k)) for k in keys]
        lines.append(f"| {r['number']}{mark} | {r['state']} | {value} | {r.get('seconds', 0):.0f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def against_recipe(report: dict[str, Any]) -> str:
    """The recipe's own trial beside the best, in words (empty when the recipe was not a trial)."""
    row = next((r for r in report["trials"] if r["number"] == report.get("recipe_trial")), None)
    if row is None:
        return ""
    sampled = sorted(set(row["params"]) - set(report.get("recipe_params") or {}))
    what = "the recipe as written" if not sampled else \
        f"the recipe's own values ({', '.join(sampled)} sampled: the recipe's lies outside the space)"
    if row["number"] == report["best"]["number"]:
        return f" The best is {what} (trial {row['number']}): no trial did better on validation."
    value = "no value" if row["value"] is None else f"{row['value']:.4f}"
    return f" Trial {row['number']}, {what}: {row['state']}, {value}."


def write(report: dict[str, Any], best_raw: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tune.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    best = report["best"]
    head = (f"# Hyper-parameter search\n\n{len(report['trials'])} trials in {report['seconds']:.0f} s "
            f"({report['backend']}: {report['direction']} {report['metric']}, pruner {report['pruner']}, "
            f"sampler seed {report['seed']}). "
            f"Best: trial {best['number']}, {best['value']:.4f}; its recipe: best.yaml.{against_recipe(report)}\n\n")
    (folder / "tune.md").write_text(head + table(report) + "\n\n![trials](tune.png)\n", encoding="utf-8")
    comment = (f"# The best trial ({best['number']}) of `hf-transfer tune`: {report['metric']} {best['value']:.4f}.\n"
               f"#   hf-transfer finetune {folder / 'best.yaml'}\n")
    (folder / "best.yaml").write_text(comment + dump_yaml(best_raw), encoding="utf-8")
    plot(report, folder / "tune.png")


def plot(report: dict[str, Any], path: Path) -> None:
    """Left: each trial's value (pruned: its last report) and the best so far; right: per-epoch curves."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend and open figures stay as they are

    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    pick = max if report["direction"] == "maximize" else min
    best, xs, ys = None, [], []
    for r in report["trials"]:
        if r["value"] is None:
            continue
        left.scatter(r["number"], r["value"], marker="o" if r["state"] == "complete" else "x",
                     color="C0" if r["state"] == "complete" else "C3")
        if r["state"] == "complete":
            best = r["value"] if best is None else pick(best, r["value"])
            xs.append(r["number"])
            ys.append(best)
        if r.get("curve"):
            right.plot(*zip(*r["curve"]), marker=".", alpha=0.7, label=f"trial {r['number']}")
    left.step(xs, ys, where="post", color="C1", label="best so far")
    left.set(xlabel="trial", ylabel=report["metric"], title="trials (x: pruned)")
    left.xaxis.get_major_locator().set_params(integer=True)
    right.set(xlabel="epoch", ylabel=report["metric"], title="validation per epoch")
    left.legend(loc="best")
    if len(report["trials"]) <= 12 and right.lines:
        right.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
