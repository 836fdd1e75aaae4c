"""A collapsed run (one class predicted for almost every example) is flagged in the log, metrics.json,
the transfer report and the model card, with what to try."""

from __future__ import annotations

import json
import logging

from hf_transfer import finetune
from hf_transfer.outputs.card import write_card
from hf_transfer.tasks.classification import COLLAPSE_SHARE, diagnose
from tests.tiny import text_recipe


def test_diagnose_flags_only_splits_at_or_above_the_threshold():
    metrics = {"validation": {"eval_top_prediction_share": 0.96}, "test": {"test_top_prediction_share": 0.6}}
    flag = diagnose(metrics)
    assert flag["splits"] == {"validation": 0.96} and flag["threshold"] == COLLAPSE_SHARE
    assert "training.learning_rate" in flag["hint"] and "data.class_weights" in flag["hint"]
    assert diagnose({"validation": {"eval_top_prediction_share": 0.94}}) is None


def test_a_collapsed_run_is_flagged_everywhere(tiny_bert, sentiment_files, tmp_path, caplog):
    out = tmp_path / "out"
    recipe = text_recipe(tiny_bert, sentiment_files, out)
    recipe["training"] |= {"learning_rate": 1e-12}  # the new head never moves: every example gets one class
    recipe["compare"] = ["majority"]
    with caplog.at_level(logging.WARNING, logger="hf_transfer.train"):
        result = finetune(recipe)
    shares = {role: result.metrics[role][f"{p}_top_prediction_share"] for role, p in (("validation", "eval"),
                                                                                          ("test", "test"))}
    assert max(shares.values()) >= COLLAPSE_SHARE, shares
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["collapse"]["splits"] and "collapsed predictions" in caplog.text
    assert "**collapsed**" in (out / "report.md").read_text()
    write_card(out)  # the card of a run (normally written after training; verify is off in the tiny recipe)
    assert "## Warning: collapsed predictions" in (out / "README.md").read_text()


def test_a_run_that_learned_is_not_flagged(tiny_bert, sentiment_files, tmp_path):
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["training"] |= {"max_steps": 40, "eval_steps": 40, "save_steps": 40, "learning_rate": 5e-3}
    result = finetune(recipe)
    assert "collapse" not in result.metrics, result.metrics["test"]
