"""A learning curve's files (runs/curve.py): curve.json, curve.md (each run's metric ± its 95% interval at
each number of training examples N, then the examples scratch needs to match each pretrained run) and
curve.png (metric against N on a log axis, a band and error bars per run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hf_transfer.outputs.report import TRAINED

JSON, MARKDOWN, PNG = "curve.json", "curve.md", "curve.png"


def read(out: Path) -> dict[str, Any]:
    return json.loads((Path(out) / JSON).read_text(encoding="utf-8"))


def write(curve: dict[str, Any], out: Path) -> None:
    (out / JSON).write_text(json.dumps(curve, indent=2) + "\n", encoding="utf-8")
    (out / MARKDOWN).write_text(curve_markdown(curve), encoding="utf-8")
    plot(curve, out / PNG)


def _pm(point: dict[str, Any]) -> str:
    if point["mean"] is None:
        return "—"
    text = f"{point['mean']:.4f}" + ("" if point["half_width"] is None else f" ± {point['half_width']:.4f}")
    return text + (" **collapsed**" if point["collapsed"] else "")


def _label(run: dict[str, Any]) -> str:
    return run["name"] if run["name"] == run["kind"] else f"{run['name']} ({run['kind']})"


def _n(examples: float | None) -> str:
    return "—" if examples is None else f"{examples:.0f}" if float(examples).is_integer() else f"{examples:.1f}"


def curve_markdown(curve: dict[str, Any]) -> str:
    metric, split, seeds = curve["metric"], curve["split"], curve["seeds"]
    over = f"mean over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}"
    drawn = "stratified by label" if curve["stratified"] else "not stratified (no single label to stratify by)"
    runs = curve["runs"]
    lines = [
        "# Learning curve",
        "",
        f"{split.capitalize()} {metric} ({over}) ± its {curve['confidence']:.0%} interval against N, the training "
        f"examples: nested subsets of the {curve['pool']} training rows, {drawn}, drawn anew per seed; the same "
        f"validation and test split at every point. {curve['training_runs']} training runs.",
        "",
        "| N | fraction | " + " | ".join(_label(r) for r in runs) + " |",
        "|---|---|" + "---|" * len(runs),
    ]
    for i, point in enumerate(curve["points"]):
        cells = " | ".join(_pm(r["points"][i]) for r in runs)
        lines.append(f"| {_n(point['examples'])} | {point['fraction']:g} | {cells} |")
    notes = [f"fraction {p['fraction']:g} is too small to hold every class: {', '.join(map(str, p['too_small']))} "
             "kept one example each" for p in curve["points"] if p["too_small"]]
    if notes:
        lines += ["", "Note: " + "; ".join(notes) + "."]
    lines += ["", "## Examples scratch needs", ""] + match_lines(curve)
    lines += ["", "Each point's transfer report (its table, paired verdicts and intervals): "
              + ", ".join(f"`{Path(p['output_dir']).name}/report.md`" for p in curve["points"]) + ".",
              "", f"Figure: `{PNG}` (log N; the band and bars are the 95% intervals)."]
    return "\n".join(lines) + "\n"


def match_lines(curve: dict[str, Any]) -> list[str]:
    """One line per pretrained run and point: the examples scratch needs for the same mean value."""
    if curve["scratch"] is None:
        return ["No scratch run to compare with (add `scratch` to `compare`)."]
    if not curve["matches"]:
        return ["No pretrained run to compare scratch with."]
    metric, scratch = f"{curve['split']} {curve['metric']}", curve["scratch"]
    lines = []
    for m in curve["matches"]:
        at = f"{_label({'name': m['run'], 'kind': m['kind']})} at N = {_n(m['examples'])} ({metric} {m['value']:.4f})"
        if m["status"] == "reached":
            ratio = f", {m['needed'] / m['examples']:.1f}x as many" if m["examples"] else ""
            lines.append(f"- {scratch} needs ≈ {m['needed']:.0f} examples to match {at}{ratio}.")
        elif m["status"] == "at the smallest point":
            lines.append(f"- {scratch} matches {at} already at its smallest point (≤ {_n(m['needed'])} examples).")
        else:
            best = "" if m.get("best") is None else f"; its best: {m['best']:.4f} at N = {_n(m['best_examples'])}"
            lines.append(f"- {scratch} does not reach {at}: not reached within the data{best}.")
    return lines + ["", f"Read on the means, linearly in log N between the points of {scratch}'s curve (the first "
                        "point where it reaches the value); the intervals in the table say how firm each mean is."]


def plot(curve: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend and open figures stay as they are

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for r in curve["runs"]:
        found = [p for p in r["points"] if p["examples"] is not None and p["mean"] is not None]
        if not found:
            continue
        xs, ys = [p["examples"] for p in found], [p["mean"] for p in found]
        if r["kind"] not in TRAINED:  # a baseline: dashed, no band
            ax.plot(xs, ys, linestyle="--", color="grey", label=r["name"])
            continue
        line = ax.plot(xs, ys, marker="o", label=_label(r))[0]
        banded = [p for p in found if p["half_width"] is not None]
        if banded:
            bx = [p["examples"] for p in banded]
            ax.fill_between(bx, [p["low"] for p in banded], [p["high"] for p in banded], color=line.get_color(),
                            alpha=0.15, linewidth=0)
            ax.errorbar(bx, [p["mean"] for p in banded], yerr=[p["half_width"] for p in banded], fmt="none",
                        ecolor=line.get_color(), capsize=3, linewidth=1)
    ax.set_xscale("log")
    ticks = sorted({p["examples"] for p in curve["points"] if p["examples"]})
    ax.set_xticks(ticks, [_n(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training examples N (log scale)")
    ax.set_ylabel(f"{curve['split']} {curve['metric']}")
    seeds = curve["seeds"]
    over = f"mean over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
    ax.set_title(f"Learning curve ({over}, 95% intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
