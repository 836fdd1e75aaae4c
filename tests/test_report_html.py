"""report.html: every run writes one self-contained page (metrics, curves, per-class scores and confusion
matrices, the transfer report), its text escaped; the slow tier renders it in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
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
    assert "<td>Accuracy (metric_for_best_model)</td>" in page
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
    assert page.index("<td>negative</td>") < page.index("<td>&lt;script")  # label order, not metrics.json's sorted keys
    assert "&lt;b&gt;lower&lt;/b&gt;" in page and "<b>" not in page


def test_drawing_the_figures_leaves_pyplot_alone(finished_run, tmp_path, monkeypatch):
    """A notebook that fine-tunes keeps its inline backend: the report's figures never go through pyplot
    (matplotlib.use("Agg") there silenced every later plt.plot in the notebook)."""
    import matplotlib
    import matplotlib.pyplot as plt

    from hf_transfer.outputs.report import plot_curves
    from hf_transfer.runs.tune_report import plot

    def refuse(*_, **__):
        raise AssertionError("matplotlib.use called")

    monkeypatch.setattr(matplotlib, "use", refuse)
    open_before = plt.get_fignums()
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    assert len(images(write_html(out).read_text(encoding="utf-8"))) == 3
    plot_curves({"metric": "accuracy", "runs": [{"name": "full", "kind": "full", "curve": [(1.0, 0.5), (2.0, 0.7)],
                                                 "validation": 0.7}]}, tmp_path / "curves.png")
    plot({"direction": "maximize", "metric": "accuracy", "trials": [
        {"number": 0, "value": 0.6, "state": "complete", "curve": [(1.0, 0.6)]}]}, tmp_path / "tune.png")
    assert all((tmp_path / f).read_bytes().startswith(b"\x89PNG") for f in ("curves.png", "tune.png"))
    assert plt.get_fignums() == open_before


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


# --------------------------------------------------------------------------- in a browser (slow tier)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("chromium not found: `apt-get install -y chromium` (`make test-slow` installs it)")


# Appended to a copy of the page for the check only (the report itself has no JavaScript): once the page has
# loaded, it writes what the browser made of it into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => ({src: i.getAttribute("src").slice(0, 22), ok: i.complete && i.naturalWidth > 0,
                                                width: i.naturalWidth}));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({imgs, sections: [...document.querySelectorAll("section")].map(s => s.id),
    resources: performance.getEntriesByType("resource").map(r => r.name), errors: window.probeErrors});
  document.body.appendChild(out);
});
</script>"""
ERRORS = '<script>window.probeErrors = []; window.addEventListener("error", e => window.probeErrors.push(String(e.message || e.target.outerHTML)), true);</script>'


def _browser(page: Path, *flags: str) -> subprocess.CompletedProcess:
    args = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
            f"--user-data-dir={page.parent / 'profile'}", "--virtual-time-budget=10000", *flags, page.as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=180)


def browser_problems(page: Path, sections: tuple[str, ...]) -> list[str]:
    """What is wrong with the page as headless Chromium shows it, [] when nothing.

    The method: Chromium loads a copy of the page with a probe script added at the end (an `error` listener
    first, capturing failed loads) and --dump-dom prints the DOM once the page has loaded
    (--virtual-time-budget lets loading finish); the probe records, from the browser itself, whether every
    <img> decoded (`complete` and a natural width above 0: a broken data URI fails this without any console
    message), the sections present, any resource fetched (a self-contained page fetches none: data URIs are
    not fetched) and any error event. Console output is not scanned: what stderr logs varies across Chromium
    versions, while these properties do not.
    """
    text = page.read_text(encoding="utf-8")
    probe_page = page.with_name("probe-" + page.name)
    probe_page.write_text(text.replace("<head>", "<head>\n" + ERRORS, 1).replace("</body>", PROBE + "\n</body>", 1),
                          encoding="utf-8")
    run = _browser(probe_page, "--dump-dom")
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    if run.returncode != 0 or not found:
        return [f"chromium gave no probe (exit {run.returncode}): {run.stderr[-500:]}"]
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    problems = [f"image {i} did not decode ({img['src']}...)" for i, img in enumerate(seen["imgs"]) if not img["ok"]]
    problems += [f"image {i} is not a data: URI" for i, img in enumerate(seen["imgs"]) if not img["src"].startswith("data:")]
    problems += [f"section {s!r} missing" for s in sections if s not in seen["sections"]]
    problems += [f"fetched {r}" for r in seen["resources"]]
    problems += [f"error: {e}" for e in seen["errors"] or []]
    if not seen["imgs"]:
        problems.append("no images")
    return problems


def screenshot_is_blank(page: Path, shot: Path) -> str:
    """'' when Chromium's screenshot of the page shows figures: many colours, enough non-white pixels."""
    from PIL import Image

    run = _browser(page, f"--screenshot={shot}", "--window-size=1200,2000")
    if not shot.is_file():
        return f"no screenshot (exit {run.returncode}): {run.stderr[-500:]}"
    img = Image.open(shot).convert("RGB")
    pixels = img.width * img.height
    non_white = sum(n for n, rgb in img.getcolors(pixels) if min(rgb) < 245)
    colours = len(img.getcolors(pixels))
    if non_white < 0.02 * pixels or colours < 50:
        return f"blank-looking screenshot: {non_white / pixels:.1%} non-white pixels, {colours} colours"
    return ""


@pytest.mark.slow
def test_chromium_shows_the_report_with_its_figures(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    page = out / REPORT_HTML
    sections = ("run", "metrics", "curves", "classes")
    assert browser_problems(page, sections) == []
    assert screenshot_is_blank(page, tmp_path / "shot.png") == ""
    # The check can fail: a corrupted image and a missing section are both reported.
    text = page.read_text(encoding="utf-8")
    broken = tmp_path / "broken" / REPORT_HTML
    broken.parent.mkdir()
    broken.write_text(text.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAAiVBOR", 1)
                      .replace('<section id="curves">', '<section id="gone">', 1), encoding="utf-8")
    problems = browser_problems(broken, sections)
    assert any("did not decode" in p for p in problems) and "section 'curves' missing" in problems, problems
    blank = tmp_path / "blank" / REPORT_HTML
    blank.parent.mkdir()
    blank.write_text("<!DOCTYPE html><html><body><p>.</p></body></html>", encoding="utf-8")
    assert screenshot_is_blank(blank, tmp_path / "blank.png").startswith("blank-looking")
