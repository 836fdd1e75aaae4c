"""The transfer report's files: report.json, report.md (a table with the gain over scratch and the
verdict) and curves.png (the validation metric per epoch of every run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRAINED = ("pretrained", "linear_probe", "scratch")  # row kinds that train; other rows are baselines


def write(report: dict[str, Any], out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    plot_curves(report, out / "curves.png")


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
        if r.get("collapsed"):
            gain_text += " **collapsed**"
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
    collapsed = [r["name"] for r in report["runs"] if r.get("collapsed")]
    if collapsed:
        lines += ["", f"**Collapsed** ({', '.join(collapsed)}): one class predicted for almost every example; "
                      "see `collapse` in their metrics.json for what to try."]
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
        elif r["kind"] not in TRAINED and r["validation"] is not None:  # a baseline: one constant value
            ax.axhline(r["validation"], linestyle="--", color="grey", label=r["name"])
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {report['metric']}")
    ax.set_title("Transfer report: validation curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
