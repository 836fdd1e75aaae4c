"""The model card's metadata and sections a Hub user expects: license and language from the recipe,
an inference-widget example, a per-evaluation results table and the framework versions of the run."""

import csv
import json
from importlib.metadata import version
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_transfer import finetune
from hf_transfer.errors import RecipeError
from hf_transfer.outputs.card import build_card
from hf_transfer.validate import load_recipe
from tests.tiny import text_recipe


def test_card_has_license_language_widget_results_and_versions(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "out"
    recipe = text_recipe(tiny_bert, sentiment_files, out)
    recipe["training"] |= {"max_steps": 4, "eval_steps": 2, "logging_steps": 1}
    recipe["hub"] = {"license": "apache-2.0", "language": ["en"]}
    finetune(recipe)
    card = ModelCard(str(build_card(out)))
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and data["language"] == ["en"]
    first = next(csv.DictReader(Path(sentiment_files["test"]).open()))["review"]
    assert data["widget"] == [{"text": first}]
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    evals = {(e["step"], e["epoch"]) for e in history if "eval_loss" in e}
    table = card.text.split("## Training results")[1].split("##")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| epoch")]
    assert len(rows) == len(evals) == 2  # steps 2 and 4; the final evaluation repeats step 4
    assert rows[0].split(" | ")[1] == "2" and rows[1].split(" | ")[1] == "4"
    assert f"- transformers {version('transformers')}" in card.text and f"- torch {version('torch')}" in card.text


def test_a_card_without_license_or_language_leaves_them_out(finished_run):
    out, _ = finished_run
    data = ModelCard(str(build_card(out))).data.to_dict()
    assert "license" not in data and "language" not in data


@pytest.mark.parametrize("hub, message", [
    ({"license": "Apache 2.0"}, "hub.license: expected a Hub license id"),
    ({"language": ["english"]}, "hub.language: expected ISO 639 codes"),
])
def test_bad_license_or_language_is_one_line(tiny_bert, sentiment_files, tmp_path, hub, message):
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "o")
    recipe["hub"] = hub
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe)


def test_the_cards_snippet_truncates_long_text_as_training_did(finished_run):
    """The saved tokenizer cuts at the run's model.max_length (16), so the card's pipeline call works on a
    text longer than the tiny model's 128 positions and scores what training saw: its first 14 words (one
    token each in the tiny word-level vocabulary) between [CLS] and [SEP]."""
    from transformers import pipeline

    out, _ = finished_run
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 16
    snippet = ModelCard(str(build_card(out))).text.split("```python\n")[1].split("```")[0]
    assert "top_k=None, truncation=True" in snippet
    clf = pipeline("text-classification", model=str(out), device="cpu")
    long = "worked wonders " * 100
    cut, short = clf(long, top_k=None, truncation=True), clf(" ".join(long.split()[:14]), top_k=None)
    assert [r["label"] for r in cut] == [r["label"] for r in short]
    assert [r["score"] for r in cut] == pytest.approx([r["score"] for r in short], abs=1e-6)
