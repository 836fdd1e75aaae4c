"""The notebooks run top to bottom, offline: on the tiny model by default, on the real default when slow."""

import json
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from tests.tiny import text_recipe

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ROOT = NOTEBOOKS.parent

# notebook -> parameters that make it run in seconds on the tiny model (values after the parameters cell)
TINY = {
    "quickstart_text.ipynb": lambda recipe, out: {
        "recipe": recipe, "overrides": {"training.output_dir": str(out / "quickstart"), "verify": False}},
    "strategies_text.ipynb": lambda recipe, out: {
        "recipe": recipe, "output_root": str(out / "strategies"), "common": {"verify": False}},
}
# the real offline default, shortened: 8 steps per run, 64 evaluation rows (make test-slow)
REAL = {
    "quickstart_text.ipynb": lambda out: {"overrides": {
        "training.output_dir": str(out / "quickstart"), "training.max_steps": 8,
        "data.max_eval_samples": 64, "training.disable_tqdm": True}},
    "strategies_text.ipynb": lambda out: {"output_root": str(out / "strategies"), "common": {
        "training.max_steps": 8, "data.max_eval_samples": 64, "training.disable_tqdm": True}},
}


def execute(name: str, params: dict, cwd: Path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items())))
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs(nb) -> str:
    return json.dumps([c.get("outputs", []) for c in nb.cells])


def test_every_notebook_is_executed_and_committed_clean():
    found = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert found == set(TINY) == set(REAL)
    for name in found:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name}: clear outputs"


@pytest.mark.parametrize("name", sorted(TINY))
def test_notebook_runs_on_the_tiny_model(name, tiny_bert, sentiment_files, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(text_recipe(tiny_bert, sentiment_files, tmp_path / "unused")))
    nb = execute(name, TINY[name](str(recipe), tmp_path), tmp_path)
    text = outputs(nb)
    assert "test_accuracy" in text or "test accuracy" in text
    if name.startswith("strategies"):
        assert "linear probe" in text and "trainable share" in text


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL))
def test_notebook_runs_on_the_offline_default(name, tmp_path):
    if not (ROOT / "assets" / "minilm-l6").is_dir():
        pytest.skip("run `make assets` first")
    nb = execute(name, REAL[name](tmp_path), ROOT)
    assert "test_accuracy" in outputs(nb) or "test accuracy" in outputs(nb)
