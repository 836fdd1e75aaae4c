"""Metrics: one local implementation (never `evaluate`'s Hub scripts), and the per-class details of metrics.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_transfer.tasks.classification import class_details, score

ROOT = Path(__file__).resolve().parents[1]


def test_metrics_are_the_same_online_and_never_import_evaluate():
    """With the Hub reachable as far as the code can tell (HF_HUB_OFFLINE=0), every problem type's metrics
    are computed without importing `evaluate` (blocked here), and equal the figures worked out by hand."""
    code = (
        "import sys, json; sys.modules['evaluate'] = None\n"
        "import numpy as np\n"
        "from hf_transfer.tasks.classification import score\n"
        "single = score('single_label_classification', np.eye(3)[[0, 1, 1, 2]], np.array([0, 0, 1, 2]))\n"
        "multi = score('multi_label_classification', np.array([[1., -1.], [1., 1.], [-1., 1.]]),"
        " np.array([[1., 0.], [1., 0.], [0., 1.]]))\n"
        "reg = score('regression', np.array([1., 2., 3.]), np.array([1., 2., 4.]))\n"
        "flat = score('regression', np.array([2., 2., 2.]), np.array([1., 2., 4.]))\n"
        "print(json.dumps({'single': single, 'multi': multi, 'reg': reg, 'flat': flat}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["single"]["accuracy"] == 0.75
    assert got["single"]["recall_macro"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert got["single"]["precision_macro"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert got["multi"]["exact_match"] == pytest.approx(2 / 3)
    assert got["multi"]["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1))  # tp 3, fp 1, fn 0
    assert got["reg"]["mse"] == pytest.approx(1 / 3)
    assert 0.9 < got["reg"]["pearsonr"] < 1 and got["reg"]["spearmanr"] == pytest.approx(1.0)
    # constant predictions: no correlation to measure, reported as 0 (metric_for_best_model finds the key)
    assert got["flat"] == {"mse": pytest.approx(5 / 3), "pearsonr": 0.0, "spearmanr": 0.0}


def test_class_details_single_label():
    details = class_details("single_label_classification", np.eye(3)[[0, 1, 1, 2]], np.array([0, 0, 1, 2]),
                            ["a", "b", "c"])
    assert details["confusion_matrix"]["labels"] == ["a", "b", "c"]
    assert details["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert details["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert details["per_class"]["b"]["precision"] == 0.5 and details["per_class"]["b"]["recall"] == 1.0


def test_class_details_keep_a_class_never_seen_and_handle_multi_label_and_regression():
    unseen = class_details("single_label_classification", np.eye(3)[[0, 1]], np.array([0, 1]), ["a", "b", "c"])
    assert unseen["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert len(unseen["confusion_matrix"]["matrix"]) == 3
    multi = class_details("multi_label_classification", np.array([[1., -1.], [1., 1.], [-1., 1.]]),
                          np.array([[1., 0.], [1., 0.], [0., 1.]]), ["x", "y"])
    assert multi["confusion_matrix"]["matrix"] == [[[1, 0], [0, 2]], [[1, 1], [0, 1]]]  # [[tn, fp], [fn, tp]]
    assert multi["per_class"]["y"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert class_details("regression", np.array([[1.0]]), np.array([1.0]), None) is None


def test_metrics_json_holds_per_class_details_that_agree_with_the_scalars(finished_run):
    out, _ = finished_run
    metrics = json.loads((out / "metrics.json").read_text())
    for role, prefix in (("validation", "eval"), ("test", "test")):
        scores, details = metrics[role], metrics["per_class"][role]
        assert all(isinstance(v, (int, float)) for v in scores.values())  # the terminal and logs stay scalar
        matrix = np.array(details["confusion_matrix"]["matrix"])
        labels = details["confusion_matrix"]["labels"]  # label-id order (metrics.json sorts the per_class keys)
        assert labels == ["negative", "positive"] and set(details["per_class"]) == set(labels)
        assert matrix.sum() == scores[f"{prefix}_samples"]
        assert np.trace(matrix) / matrix.sum() == pytest.approx(scores[f"{prefix}_accuracy"])
        recalls = [c["recall"] for c in details["per_class"].values()]
        assert np.mean(recalls) == pytest.approx(scores[f"{prefix}_recall_macro"])
        assert {n: c["support"] for n, c in details["per_class"].items()} == dict(zip(labels, matrix.sum(axis=1).tolist()))
