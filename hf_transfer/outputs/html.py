"""report.html: one self-contained page per run, read from its folder (no network: CSS inline, figures as
base64 PNG data URIs, no JavaScript).

Sections, each only where it applies: the run (model, data, strategy, parameters, time), its metrics
(validation and test, from metrics.json), training and validation curves per epoch (metrics.json's
`log_history`, the Trainer's log; the validation metric is the one the recipe selects by,
`metric_for_best_model`), entity scores per type (token classification), per-class scores and confusion
matrices (metrics.json's `per_class`), and the transfer report (recipe `compare`: report.md's table and
verdict, curves.png) when the folder has one. A learning curve's folder (runs/curve.py) gets its own page:
curve.md, curve.png, then each point's transfer report. Every text put into the page is escaped.
"""

from __future__ import annotations

import base64
import io
import re
from html import escape
from pathlib import Path
from typing import Any

from hf_transfer.folder import REPORT_HTML
from hf_transfer.outputs import curve as curve_files
from hf_transfer.outputs.card import collapse_section, files_label, multitask_line
from hf_transfer.outputs.multitask import TASK_KEY, read_run
from hf_transfer.tasks import resolve
from hf_transfer.train import FINAL_EVALUATIONS

TRANSFER_REPORT, TRANSFER_CURVES = "report.md", "curves.png"  # outputs/report.py writes them

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0 auto;
       max-width: 1100px; padding: 1.5rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f6f8fa; }
tr.selected td { font-weight: 600; } .facts td { text-align: left; }
code { background: #f6f8fa; padding: 0 0.2rem; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0 1rem; }
.warning { background: #fff8c5; border: 1px solid #d4a72c; padding: 0 0.8rem; }
"""


def write_html(out_dir: str | Path) -> Path:
    """Write report.html into a finished run's folder."""
    path = Path(out_dir) / REPORT_HTML
    path.write_text(build_html(out_dir), encoding="utf-8")
    return path


def build_html(out_dir: str | Path) -> str:
    out = Path(out_dir)
    recipe, metrics = read_run(out)
    task, spec = resolve(recipe)
    selected = recipe.training.get("metric_for_best_model")
    metric = str(selected or task.best_metric(spec)[0]).removeprefix("eval_")
    sections = [
        _run_section(recipe, metrics, metric),
        _collapse_section(metrics),
        # a multi-task run's task folder selected by another task's metric: its own headline, not marked
        _metrics_section(metrics, task, metric, marked=bool(selected or not metrics.get(TASK_KEY))),
        _curves_section(metrics.get("log_history") or [], metric),
        _entities_section(metrics) if task.entities else "",
        _classes_section(metrics.get("per_class") or {}),
        _transfer_section(out),
    ]
    return _page(out, "\n".join(s for s in sections if s))


def write_curve_html(out_dir: str | Path) -> Path:
    """report.html of a learning curve's folder: curve.md and curve.png, then every point's transfer report."""
    out = Path(out_dir)
    curve = curve_files.read(out)
    parts = markdown_html((out / curve_files.MARKDOWN).read_text(encoding="utf-8").splitlines()[1:])
    parts.insert(1, _img((out / curve_files.PNG).read_bytes(), "learning curve: metric against training examples"))
    sections = ["<section id=\"curve\">\n<h2>Learning curve</h2>\n" + "\n".join(parts) + "\n</section>"]
    for point in curve["points"]:
        folder = out / Path(point["output_dir"]).name
        section = _transfer_section(folder)
        if section:
            heading = f"N = {point['examples']:.0f} (fraction {point['fraction']:g}): transfer report"
            sections.append(section.replace("<h2>Transfer report</h2>", f"<h2>{escape(heading)}</h2>", 1))
    path = out / REPORT_HTML
    path.write_text(_page(out, "\n".join(sections)), encoding="utf-8")
    return path


def _page(out: Path, body: str) -> str:
    title = f"{out.resolve().name}: hf-transfer report"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<h1>{escape(out.resolve().name)}</h1>\n{body}\n</body>\n</html>\n")


# --------------------------------------------------------------------------- building blocks


def _table(head: list[str], rows: list[list[Any]], selected: int | None = None) -> str:
    """An HTML table; cells are escaped (floats to 4 decimals, None as an empty cell)."""
    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4f}"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else escape(str(v))

    lines = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        css = ' class="selected"' if i == selected else ""
        lines.append(f"<tr{css}>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>")
    return "\n".join(lines + ["</table>"])


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{escape(alt)}">'


def _figure(**kwargs):
    """A matplotlib Figure outside pyplot: no backend switched, no figure left open in a notebook."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _plain(text: str) -> str:
    """A label as matplotlib shows it literally (`$` would start mathtext)."""
    return str(text).replace("$", r"\$")


# --------------------------------------------------------------------------- sections


def _run_section(recipe, metrics: dict[str, Any], metric: str) -> str:
    ft, data = recipe.finetune, recipe.data
    rows = [
        ["task", recipe.task],
        ["model", recipe.model.name_or_path + ("" if recipe.model.pretrained else " (random initialisation)")],
        ["data", data.path + (f" ({files_label(data.data_files)})" if data.data_files
                              else (f" ({data.name})" if data.name else ""))],
        ["strategy", ft.strategy],
        ["model selection", f"validation {metric} (training.metric_for_best_model)"],
    ]
    if metrics.get(TASK_KEY):
        rows[-1:] = [["multi-task", multitask_line(metrics[TASK_KEY]).removeprefix("- Multi-task: ")]]
    if metrics.get("trainable_parameters") and metrics.get("total_parameters"):
        t, n = metrics["trainable_parameters"], metrics["total_parameters"]
        rows.append(["trainable parameters", f"{t:,} of {n:,} ({100 * t / n:.2f}%)"])
    train = metrics.get("train") or {}
    if train.get("train_runtime") is not None:
        rows.append(["training time", f"{train['train_runtime']:.1f} s"])
    if train.get("epoch") is not None:
        rows.append(["epochs", f"{train['epoch']:g}"])
    facts = "\n".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<section id="run">\n<h2>Run</h2>\n<table class="facts">\n{facts}\n</table>\n</section>'


def _collapse_section(metrics: dict[str, Any]) -> str:
    """The card's warning about collapsed predictions."""
    text = collapse_section(metrics)
    return '<div class="warning">\n' + "\n".join(markdown_html(text.splitlines())) + "\n</div>" if text else ""


def _metrics_section(metrics: dict[str, Any], task, metric: str, marked: bool = True) -> str:
    """Rows: the task's named metrics (and the loss) that the run reports; columns: the evaluated splits."""
    roles = [(role, prefix) for role, prefix in FINAL_EVALUATIONS.items() if metrics.get(role)]
    if not roles:
        return ""
    reported = {k.removeprefix(prefix + "_") for role, prefix in roles for k in metrics[role]}
    names = [n for n in [*task.metric_names, metric, "loss"] if n in reported]
    names = list(dict.fromkeys(names))
    label = {n: task.metric_names[n][1] if n in task.metric_names else n for n in names}
    rows = [[label[n] + (" (metric_for_best_model)" if n == metric and marked else "")]
            + [metrics[role].get(f"{prefix}_{n}") for role, prefix in roles] for n in names]
    selected = names.index(metric) if metric in names and marked else None
    return ("<section id=\"metrics\">\n<h2>Metrics</h2>\n"
            + _table(["metric", *(role for role, _ in roles)], rows, selected) + "\n</section>")


def epoch_points(history: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(epoch, value) of `key` in the Trainer's log, the first per epoch (a final evaluation logs again)."""
    found: dict[float, float] = {}
    for entry in history:
        if key in entry and "epoch" in entry:
            found.setdefault(float(entry["epoch"]), float(entry[key]))
    return sorted(found.items())


def _curves_section(history: list[dict[str, Any]], metric: str) -> str:
    losses = {"training loss": epoch_points(history, "loss"), "validation loss": epoch_points(history, "eval_loss")}
    scores = epoch_points(history, f"eval_{metric}")
    if not scores and not any(losses.values()):
        return ""
    fig = _figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
    for name, points in losses.items():
        if points:
            left.plot(*zip(*points), marker="o", label=name)
    left.set_title("loss")
    if scores:
        right.plot(*zip(*scores), marker="o", color="tab:green", label=f"validation {metric}")
    right.set_title(_plain(f"validation {metric} (metric_for_best_model)"))
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.tight_layout()
    return ("<section id=\"curves\">\n<h2>Training curves</h2>\n"
            + _img(_png(fig), f"training and validation loss and validation {metric} per epoch") + "\n</section>")


_ENTITY = re.compile(r"^(?P<type>.+)_(?P<score>precision|recall|f1)$")


def _entities_section(metrics: dict[str, Any]) -> str:
    """Token classification: precision / recall / F1 per entity type and split (seqeval's `<type>_<score>`)."""
    parts = []
    for role, prefix in FINAL_EVALUATIONS.items():
        per_type: dict[str, dict[str, float]] = {}
        for key, value in (metrics.get(role) or {}).items():
            m = _ENTITY.match(key.removeprefix(prefix + "_"))
            if m and m["type"] != "overall":
                per_type.setdefault(m["type"], {})[m["score"]] = value
        if per_type:
            rows = [[kind, s.get("precision"), s.get("recall"), s.get("f1")] for kind, s in sorted(per_type.items())]
            parts.append(f"<h3>{escape(role)}</h3>\n" + _table(["entity type", "precision", "recall", "F1"], rows))
    if not parts:
        return ""
    return "<section id=\"entities\">\n<h2>Entities by type</h2>\n" + "\n".join(parts) + "\n</section>"


def _classes_section(per_class: dict[str, dict[str, Any]]) -> str:
    """Per-class precision / recall / F1 / support and the confusion matrix of each evaluated split."""
    parts = []
    for role in (r for r in FINAL_EVALUATIONS if r in per_class):
        found = per_class[role]
        scores = found.get("per_class") or {}
        names = (found.get("confusion_matrix") or {}).get("labels") or list(scores)  # label-id order
        rows = [[n, *(scores[n][k] for k in ("precision", "recall", "f1", "support"))] for n in names if n in scores]
        parts.append(f"<h3>{escape(role)}</h3>\n" + _table(["class", "precision", "recall", "F1", "support"], rows))
        if found.get("confusion_matrix"):
            parts.append(_confusion(found["confusion_matrix"], role))
    if not parts:
        return ""
    return "<section id=\"classes\">\n<h2>Per-class scores and confusion matrices</h2>\n" + "\n".join(parts) + "\n</section>"


def _confusion(confusion: dict[str, Any], role: str) -> str:
    import numpy as np

    labels, matrix = [str(n) for n in confusion["labels"]], np.asarray(confusion["matrix"])
    if matrix.ndim == 3:  # multi-label: [[tn, fp], [fn, tp]] per label
        rows = [[name, *(int(v) for v in m.ravel())] for name, m in zip(labels, matrix)]
        return f"<p>Confusion per label ({escape(role)})</p>\n" + _table(["label", "tn", "fp", "fn", "tp"], rows)
    n = len(labels)
    size = min(max(3.5, 0.45 * n + 1.5), 12)
    fig = _figure(figsize=(size + 1.2, size))
    ax = fig.subplots()
    shown = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), [_plain(x) for x in labels], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), [_plain(x) for x in labels], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{role}: confusion matrix")
    if n <= 25:
        top = matrix.max() or 1
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _img(_png(fig), f"{role} confusion matrix (rows: true label, columns: predicted label)")


def _transfer_section(out: Path) -> str:
    """The transfer report (recipe `compare`): report.md's table and verdict, and curves.png, as written."""
    report = out / TRANSFER_REPORT
    if not report.is_file():
        return ""
    parts = markdown_html(report.read_text(encoding="utf-8").splitlines()[1:])  # its own title goes
    curves = out / TRANSFER_CURVES
    if curves.is_file():
        parts.append(_img(curves.read_bytes(), "validation curves of the compared runs"))
    return "<section id=\"compare\">\n<h2>Transfer report</h2>\n" + "\n".join(parts) + "\n</section>"


def _inline(text: str) -> str:
    text = escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def markdown_html(lines: list[str]) -> list[str]:
    """The markdown our reports write (paragraphs, pipe tables, **bold**, `code`) as HTML blocks."""
    blocks: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *rows = table
            blocks.append("<table>\n<tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>\n"
                          + "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
                          + "\n</table>")
            table.clear()

    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):  # the separator row
                table.append([_inline(c) for c in cells])
            continue
        flush()
        if line.startswith("#"):
            blocks.append(f"<h3>{_inline(line.lstrip('# '))}</h3>")
        elif line.strip():
            blocks.append(f"<p>{_inline(line)}</p>")
    flush()
    return blocks
