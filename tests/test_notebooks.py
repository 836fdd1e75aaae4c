"""The notebooks run top to bottom, offline: on tiny models built in code by default, on the real offline
defaults (shortened) when slow. Each looks at its data and class balance before training, keeps the
Trainer's progress bar, prints the test accuracy its run recorded and shows the report's figures inline."""

import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from tests.tiny import TONES, save_tiny_audio_model, speech_recipe, text_recipe, write_audio_data
from tests.tiny_vision import CLASSES, save_tiny_timm, vision_recipe, write_imagefolder

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ROOT = NOTEBOOKS.parent


def quickstart(recipe, out, **overrides):
    return {**({"recipe": recipe} if recipe else {}),
            "overrides": {"training.output_dir": str(out / "run"), **overrides}}


def strategies(recipe, out, **common):
    return {**({"recipe": recipe} if recipe else {}), "output_root": str(out / "strategies"), "common": common}


# notebook -> (its parameters, (recipe file or None, output root, overrides) -> values put after its
# parameters cell; output root -> {prefix of its printed test accuracy: the folder of that run})
NOTEBOOK = {
    "quickstart_text.ipynb": (quickstart, lambda out: {"": out / "run"}),
    "quickstart_vision.ipynb": (quickstart, lambda out: {"": out / "run"}),
    "quickstart_speech.ipynb": (quickstart, lambda out: {"": out / "run"}),
    "strategies_text.ipynb": (strategies, lambda out: {f"{name}: ": out / "strategies" / name.replace(" ", "-")
                                                       for name in ("full", "lora", "linear probe")}),
}
# modality -> (class names, test rows) of the tiny data (every class equally often)
TINY = {"text": (["negative", "positive"], 16), "vision": (CLASSES, 12), "speech": (sorted(TONES), 6)}
# the real offline defaults, shortened: 8 steps per run, 64 evaluation rows (make test-slow)
SHORT = {"training.max_steps": 8, "data.max_eval_samples": 64}
ASSETS = {"text": "minilm-l6", "vision": "efficientnet-lite0", "speech": "whisper-tiny-en"}


def modality(name: str) -> str:
    return name.removesuffix(".ipynb").rsplit("_", 1)[1]


def execute(name: str, params: dict, cwd: Path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items())))
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def cell(nb, tag: str):
    found = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(found) == 1, f"one cell tagged {tag!r}"
    return found[0]


def text(c) -> str:
    """Everything a cell showed, as one string (streams, text/plain, text/html)."""
    parts = []
    for o in c.get("outputs", []):
        parts.append(o.get("text", ""))
        parts += [o.get("data", {}).get(kind, "") for kind in ("text/plain", "text/html")]
    return "\n".join(parts)


def pngs(c) -> int:
    return sum("image/png" in o.get("data", {}) for o in c.get("outputs", []))


def result_table(c) -> dict[str, dict[str, float]]:
    """The cell's result, a DataFrame, from its text/plain: {row: {column: number}}. pandas puts two spaces or
    more between columns, so names with one space in them (`Ankle boot`, `linear probe`) stay whole."""
    [plain] = [o["data"]["text/plain"] for o in c.outputs if o.output_type == "execute_result"]
    head, *lines = plain.splitlines()
    columns, rows = re.split(r"\s{2,}", head.strip()), {}
    for line in lines:
        name, *values = re.split(r"\s{2,}", line.strip())
        if len(values) == len(columns):
            rows[name] = dict(zip(columns, map(float, values)))
    return rows


def check(nb, name: str, runs: dict[str, Path], classes: list[str] | None, test_rows: int) -> None:
    """What every notebook must show, checked against what its runs recorded in their folders."""
    metrics = {prefix: json.loads((out / "metrics.json").read_text()) for prefix, out in runs.items()}
    first = next(iter(metrics.values()))
    support = {k: v["support"] for k, v in first["per_class"]["test"]["per_class"].items()}
    classes = classes or first["per_class"]["test"]["confusion_matrix"]["labels"]
    # the data, before training: split sizes, and a look at the rows / images / clips
    look = cell(nb, "data")
    assert f"'test': {test_rows}" in text(look) and str(classes) in text(look)
    if modality(name) == "vision":
        assert pngs(look) == 1 and re.search(r"images: \d+x\d+ pixels", text(look))
    if modality(name) == "speech":
        seconds = result_table(look)
        assert set(seconds) == {"train", "validation", "test"} and seconds["test"]["count"] == test_rows
        assert 0 < seconds["train"]["min"] <= seconds["train"]["max"] < 10
        listen = cell(nb, "listen")
        assert pngs(listen) == 1 and text(listen).count("<audio") == min(3, len(classes))
    if modality(name) == "text":
        assert "<th>label</th>" in text(look) and re.search(r"<td>\w[^<]{20,}", text(look))  # rows of text
    # class balance: a chart and a table whose test column is the support the run measured
    balance = cell(nb, "balance")
    counts = result_table(balance)
    assert list(counts) == classes and pngs(balance) == 1
    assert {k: int(v["test"]) for k, v in counts.items()} == support and sum(support.values()) == test_rows
    assert re.search(r"most frequent class in training: .+; always answering it scores test accuracy", text(balance))
    # training with the progress bar on, and the test accuracy the run recorded
    train = text(cell(nb, "train"))
    assert "<progress" in train, "the Trainer's notebook progress bar"
    for prefix, m in metrics.items():
        assert f"{prefix}test accuracy: {m['test']['test_accuracy']:.4f}" in train
    # the report's figures inline (curves and confusion matrices) and the per-class scores
    figures = cell(nb, "figures")
    assert pngs(figures) >= (2 if name.startswith("strategies") else 3)
    per_class = result_table(cell(nb, "per-class"))
    assert list(per_class) == classes
    if not name.startswith("strategies"):
        assert "test confusion matrix" in text(figures) and "training and validation loss" in text(figures)
        assert {k: v["f1"] for k, v in per_class.items()} == pytest.approx(
            {k: v["f1"] for k, v in first["per_class"]["test"]["per_class"].items()}, abs=1e-3)
        assert any(c in text(cell(nb, "pipeline")) for c in classes)


def test_every_notebook_is_executed_and_committed_clean():
    found = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert found == set(NOTEBOOK) and {modality(n) for n in found} == set(TINY) == set(ASSETS)
    for name in found:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name}: clear outputs"
        params = cell(nb, "parameters").source
        assert "disable_tqdm" not in params, f"{name}: keep the Trainer's progress bar"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """modality -> (model folder, data files) built in code."""
    root = tmp_path_factory.mktemp("tiny-notebooks")
    return {"vision": (save_tiny_timm(root / "timm", "test_resnet"), write_imagefolder(root / "images")),
            "speech": (save_tiny_audio_model(root / "whisper", "whisper"), write_audio_data(root / "tones")["csv"])}


@pytest.mark.parametrize("name", sorted(NOTEBOOK))
def test_notebook_runs_on_a_tiny_model(name, request, tiny_data, tmp_path):
    kind = modality(name)
    if kind == "text":
        raw = text_recipe(request.getfixturevalue("tiny_bert"), request.getfixturevalue("sentiment_files"), tmp_path)
    else:
        raw = {"vision": vision_recipe, "speech": speech_recipe}[kind](*tiny_data[kind], tmp_path)
    del raw["training"]["disable_tqdm"]  # the notebooks show the progress bar
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    params, runs = NOTEBOOK[name]
    nb = execute(name, params(str(recipe), tmp_path, verify=False), tmp_path)
    classes, test_rows = TINY[kind]
    check(nb, name, runs(tmp_path), classes, test_rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOK))
def test_notebook_runs_on_the_offline_default(name, tmp_path):
    if not (ROOT / "assets" / ASSETS[modality(name)]).is_dir():
        pytest.skip("prepare the offline assets first (make assets, assets-vision, assets-speech)")
    params, runs = NOTEBOOK[name]
    nb = execute(name, params(None, tmp_path, **SHORT), ROOT)
    check(nb, name, runs(tmp_path), None, SHORT["data.max_eval_samples"])
