"""The transfer report's files: report.json, report.md (a table of every run's metric ± its 95% interval,
the gain over scratch and the verdict) and curves.png (the validation metric per epoch of every run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hf_transfer.outputs import intervals

TRAINED = ("pretrained", "linear_probe", "scratch")  # row kinds that train; other rows are baselines


JSON = "report.json"


def read(out: Path) -> dict[str, Any]:
    return json.loads((Path(out) / JSON).read_text(encoding="utf-8"))


def write(report: dict[str, Any], out: Path) -> None:
    (out / JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    plot_curves(report, out / "curves.png")


def report_markdown(report: dict[str, Any]) -> str:
    metric, split, unit = report["metric"], report["split"], report["gain_unit"]
    seeds = report.get("seeds") or []
    over = f"mean over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else "one seed"
    lines = [
        "# Transfer report",
        "",
        f"Headline: {split} {metric} ({over}) ± its {report['confidence']:.0%} interval; gain over scratch in "
        f"{unit}, paired on the same {split} examples.",
        "",
        f"| run | kind | strategy | validation {metric} | test {metric} | gain over scratch | verdict | vs main "
        "| train time (s) | trainable params |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        value = {s: _fmt(r[s]) for s in ("validation", "test")}
        if r.get("interval"):
            value[split] = _pm(r["interval"]["mean"], r["interval"]["half_width"])
        gain = r["gain_over_scratch"]
        gain_text = "—" if gain is None else f"{gain:+.2f}" + (
            f" ± {(r['gain_interval'][1] - r['gain_interval'][0]) / 2:.2f}" if r.get("gain_interval") else "")
        verdict = {"negative transfer": "**negative transfer**", None: "—"}.get(r["verdict"], r["verdict"])
        if r.get("collapsed"):
            verdict += " **collapsed**"
        seconds = f"{r['train_seconds']:.1f}" + (" (cached features)" if r["cached_features"] else "")
        lines.append(
            f"| {r['name']} | {r['kind']} | {r['strategy'] or '—'} | {value['validation']} | {value['test']} "
            f"| {gain_text} | {verdict} | {_versus(r.get('vs_main'), unit)} | {seconds} | {r['trainable_parameters']:,} |"
        )
    lines += ["", _headline(report)]
    lines += _all_metrics(report)
    lines += _target_table(report)
    collapsed = [r["name"] for r in report["runs"] if r.get("collapsed")]
    if collapsed:
        lines += ["", f"**Collapsed** ({', '.join(collapsed)}): one class predicted for almost every example; "
                      "see `collapse` in their metrics.json for what to try."]
    lines += ["", intervals.method(len(seeds) or 1, split) + " Verdict: gain over scratch or negative transfer "
              "when the interval of the gain lies above or below 0, else no significant difference; vs main: "
              f"the run minus the main run ({unit}), better or worse likewise. A run without saved predictions "
              "(predictions.npz) gets no interval and no verdict."]
    lines.append("")
    lines.append("Validation curves: `curves.png` (mean over seeds). Train time: per seed, including feature "
                 "extraction for cached probes.")
    return "\n".join(lines) + "\n"


def _fmt(v, spec=".4f") -> str:
    return "—" if v is None else format(v, spec)


def _pm(mean: float, half: float, spec=".4f") -> str:
    return f"{format(mean, spec)} ± {format(half, spec)}"


def _versus(diff: dict | None, unit: str) -> str:
    if diff is None:
        return "—"
    scale = 100 if unit == "points" else 1
    return f"{scale * diff['mean']:+.2f} ± {scale * diff['half_width']:.2f}, {diff['verdict']}"


def _headline(report: dict[str, Any]) -> str:
    main, unit = report["runs"][0], report["gain_unit"]
    if main["gain_over_scratch"] is None:
        return "No scratch run to compare with."
    if main["gain_interval"] is None:
        return f"The main run against scratch: {main['gain_over_scratch']:+.2f} {unit} (no interval: no saved predictions)."
    low, high = main["gain_interval"]
    span = f"{main['gain_over_scratch']:+.2f} {unit}, 95% interval [{low:+.2f}, {high:+.2f}]"
    if report["verdict"] == "gain":
        return f"Transfer helps: the main run beats scratch by {span}."
    if report["verdict"] == "negative transfer":
        return f"**Negative transfer**: the pretrained run is worse than scratch ({span})."
    return f"No significant difference between the main run and scratch ({span}: the interval contains 0)."


def _target_table(report: dict[str, Any]) -> list[str]:
    """Domain adaptation runs: the metric on the labelled target split, the one the adaptation is for."""
    runs, metric, unit = report["runs"], report["metric"], report["gain_unit"]
    if all(r.get("target") is None for r in runs):
        return []
    lines = ["", f"Target domain (the labelled `domain.target` split; {metric}, mean ± "
                 f"{report['confidence']:.0%} interval; vs main paired on the same target examples):", "",
             f"| run | target {metric} | vs main |", "|---|---|---|"]
    for r in runs:
        found = r.get("target_interval")
        value = _pm(found["mean"], found["half_width"]) if found else _fmt(r.get("target"))
        lines.append(f"| {r['name']} | {value} | {_versus(r.get('target_vs_main'), unit)} |")
    return lines


def _all_metrics(report: dict[str, Any]) -> list[str]:
    keys = sorted({k for r in report["runs"] for k, v in (r.get("intervals") or {}).items() if v})
    if not keys:
        return []
    lines = ["", f"All {report['split']} metrics (mean ± {report['confidence']:.0%} interval):", "",
             "| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for r in report["runs"]:
        found = r.get("intervals") or {}
        cells = [_pm(found[k]["mean"], found[k]["half_width"]) if found.get(k) else "—" for k in keys]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return lines


def plot_curves(report: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend and open figures stay as they are

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
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
