"""report.html: every run writes one self-contained page (metrics, curves, per-class scores and confusion
matrices, the transfer report), its text escaped."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest

from hf_transfer import finetune
from hf_transfer.folder import REPORT_HTML
from hf_transfer.outputs.html import write_html
from tests.tiny import text_recipe

IMG = re.compile(r"<img\b[^>]*>")
SRC = re.compile(r'\bsrc="([^"]*)"')


def images(page: str) -> list[bytes]:
    """The decoded bytes of every <img> (each must be an inline PNG data URI)."""
    found = []
    for tag in IMG.findall(page):
        src = SRC.search(tag)
        assert src and src.group(1).startswith("data:image/png;base64,"), tag[:80]
        found.append(base64.b64decode(src.group(1).split(",", 1)[1], validate=True))
    return found


def assert_self_contained(page: str) -> None:
    """No script, no stylesheet link, no reference outside the page."""
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r'\b(src|href)="(?!data:)', page), "a reference outside the page"
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images(page))


def test_a_run_writes_its_report_with_metrics_curves_and_classes(finished_run):
    out, _ = finished_run
    page = (out / REPORT_HTML).read_text(encoding="utf-8")
    metrics = json.loads((out / "metrics.json").read_text())
    assert_self_contained(page)
    for section in ("run", "metrics", "curves", "classes"):
        assert f'<section id="{section}">' in page
    assert 'id="compare"' not in page and 'id="entities"' not in page  # no compare, no entities
    assert f"<td>{metrics['test']['test_accuracy']:.4f}</td>" in page  # test and validation, from metrics.json
    assert f"<td>{metrics['validation']['eval_accuracy']:.4f}</td>" in page
    assert "Accuracy (selects the best model)" in page
    assert metrics["log_history"] and any("eval_accuracy" in e for e in metrics["log_history"])
    for role in ("validation", "test"):  # a per-class table and a confusion matrix per split
        assert f"<h3>{role}</h3>" in page and f'alt="{role} confusion matrix' in page
        support = metrics["per_class"][role]["per_class"]["positive"]["support"]
        assert f"<td>positive</td><td>{metrics['per_class'][role]['per_class']['positive']['precision']:.4f}" in page
        assert f"<td>{support}</td>" in page
    assert len(images(page)) == 3  # curves, two confusion matrices
    assert "[report.html](report.html)" in (out / "README.md").read_text()  # the card links to it


def test_compare_adds_the_transfer_table_and_curves(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "out"
    recipe = text_recipe(tiny_bert, sentiment_files, out)
    recipe["training"] |= {"max_steps": -1, "num_train_epochs": 2, "eval_strategy": "epoch", "save_strategy": "epoch"}
    recipe["compare"] = ["majority"]
    finetune(recipe)
    page = (out / REPORT_HTML).read_text(encoding="utf-8")
    report = json.loads((out / "report.json").read_text())
    assert_self_contained(page)
    section = page.split('<section id="compare">', 1)[1]
    for row in report["runs"]:  # report.md's table, rendered
        assert f"<td>{row['name']}</td><td>{row['kind']}</td>" in section
    assert "<th>gain over scratch</th>" in section and "No scratch run to compare with." in section
    assert section.count("<img ") == 1 and images(section)[0] == (out / "curves.png").read_bytes()
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    assert sorted({e["epoch"] for e in history if "eval_accuracy" in e}) == [1.0, 2.0]  # two points per curve


def test_inserted_text_is_escaped(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    metrics = json.loads((out / "metrics.json").read_text())
    evil = '<script>alert("x")</script>'
    for found in metrics["per_class"].values():
        found["per_class"] = {evil if k == "positive" else k: v for k, v in found["per_class"].items()}
        found["confusion_matrix"]["labels"] = [evil if k == "positive" else k for k in found["confusion_matrix"]["labels"]]
    metrics["collapse"] = {"splits": {"test": 0.99}, "hint": "<b>lower</b> the learning rate"}
    (out / "metrics.json").write_text(json.dumps(metrics))
    page = write_html(out).read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "<td>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</td>" in page
    assert "&lt;b&gt;lower&lt;/b&gt;" in page and "<b>" not in page


def test_a_folder_without_per_class_details_or_history_gets_the_sections_that_apply(finished_run, tmp_path):
    """Regression, speech recognition, or a run from before metrics.json kept the log: metrics only."""
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    metrics = json.loads((out / "metrics.json").read_text())
    del metrics["per_class"], metrics["log_history"]
    (out / "metrics.json").write_text(json.dumps(metrics))
    page = write_html(out).read_text(encoding="utf-8")
    assert '<section id="metrics">' in page
    assert "<img" not in page and 'id="curves"' not in page and 'id="classes"' not in page

