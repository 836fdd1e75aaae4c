"""Seeds and intervals (recipe `seeds`): validation, the per-seed folders, and the bootstrap / paired-difference
helpers against cases whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from transformers import EvalPrediction

from hf_transfer import finetune
from hf_transfer.errors import OutputError, RecipeError
from hf_transfer.folder import read_predictions, write_predictions
from hf_transfer.outputs import intervals
from hf_transfer.runs.compare import build_report
from hf_transfer.tasks import resolve
from hf_transfer.tasks.classification import compute_metrics_fn, confusion_scores
from hf_transfer.validate import load_recipe
from tests.tiny import text_recipe

MINIMAL = {"model": {"name_or_path": "m"}, "data": {"path": "csv"}}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("seeds, message", [
    (42, "seeds: expected a list of distinct non-negative integers, got 42"),
    ([], "seeds: list at least one seed"),
    ([1, "two"], "seeds[1]: expected a non-negative integer, got 'two'"),
    ([1.5], "seeds[0]: expected a non-negative integer, got 1.5"),
    ([True], "seeds[0]: expected a non-negative integer, got True"),
    ([0, -1], "seeds[1]: must be >= 0, got -1"),
    ([2**32], "seeds[0]: must be <= 4294967295, got 4294967296"),
    ([3, 4, 3], "seeds: 3 listed twice"),
])
def test_seeds_errors_are_one_line_and_name_the_key(seeds, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(MINIMAL | {"seeds": seeds})
    assert str(info.value) == message


@pytest.mark.parametrize("extra, message", [
    ({"cv": {"folds": 2}}, "seeds: not available with cv"),
    ({"hub": {"push": True, "repo_id": "me/x"}}, "seeds: not available with hub.push"),
])
def test_seeds_refused_where_a_run_cannot_repeat(extra, message):
    with pytest.raises(RecipeError, match=f"^{message}"):
        load_recipe(MINIMAL | {"seeds": [1, 2]} | extra)


def test_seeds_accepted_with_compare_and_from_an_override():
    recipe = load_recipe(MINIMAL | {"compare": ["scratch"]}, ["seeds=[0, 7, 42]"])
    assert recipe.seeds == [0, 7, 42] and load_recipe(MINIMAL).seeds is None


# --------------------------------------------------------------------------- the helpers, known answers


def _scores(predicted: np.ndarray, labels: np.ndarray, n_rows: int = 200):
    """(labels, {metric: values}) of class predictions, as build_report scores one seed of one run."""
    logits = np.eye(2)[predicted]
    return labels, confusion_scores(logits, labels, intervals.index_rows(len(labels), n_rows))


def test_the_fast_scores_equal_the_tasks_metric_function_on_every_resample():
    rng = np.random.default_rng(3)
    score = compute_metrics_fn("single_label_classification")
    for n, k in ((60, 2), (9, 4)):
        logits, labels = rng.normal(size=(n, k)), rng.integers(0, k, n)
        rows = intervals.index_rows(n, 50)
        fast = confusion_scores(logits, labels, rows)
        slow = intervals.looped(lambda p, y: score(EvalPrediction(p, y)))(logits, labels, rows)
        for key in ("accuracy", "f1_macro", "precision_macro", "recall_macro"):
            np.testing.assert_allclose(fast[key], slow[key], atol=1e-12)


def test_resamples_are_fixed_and_paired_by_size():
    a, b = intervals.index_rows(30), intervals.index_rows(30)
    assert a.shape == (intervals.RESAMPLES + 1, 30) and (a == b).all() and (a[0] == np.arange(30)).all()
    assert not (intervals.index_rows(30)[1:] == intervals.index_rows(30, seed=1)[1:]).all()


def _paired(a, b):
    from hf_transfer.runs.compare import _paired

    return _paired(a, b, "accuracy", True)


def test_identical_predictions_differ_by_exactly_zero():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 80)
    predicted = rng.integers(0, 2, 80)
    diff = _paired([_scores(predicted, labels)], [_scores(predicted.copy(), labels)])
    assert (diff["low"], diff["mean"], diff["high"]) == (0.0, 0.0, 0.0)
    assert intervals.verdict(diff, "gain", "negative transfer") == "no significant difference"


def test_right_where_the_other_is_wrong_is_a_significant_gain_and_the_reverse_negative_transfer():
    labels = np.tile([0, 1], 40)
    right, wrong = labels.copy(), 1 - labels
    gain = _paired([_scores(right, labels)], [_scores(wrong, labels)])
    assert gain["low"] == gain["high"] == 1.0  # every resample: accuracy 1 against 0
    assert intervals.verdict(gain, "gain", "negative transfer") == "gain"
    worse = _paired([_scores(wrong, labels)], [_scores(right, labels)])
    assert intervals.verdict(worse, "gain", "negative transfer") == "negative transfer"


def test_a_clearly_worse_run_is_negative_transfer_and_a_small_gap_is_not_significant():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.9, labels, 1 - labels)  # about 90% right
    bad = np.where(rng.random(300) < 0.6, labels, 1 - labels)  # about 60% right
    diff = _paired([_scores(bad, labels)], [_scores(good, labels)])
    assert diff["high"] < 0 and intervals.verdict(diff, "gain", "negative transfer") == "negative transfer"
    close = good.copy()
    close[np.flatnonzero(close == labels)[:2]] ^= 1  # two more mistakes than `good`
    diff = _paired([_scores(close, labels)], [_scores(good, labels)])
    assert diff["low"] < 0 < diff["high"]  # a paired interval of 2 mistakes in 300 contains 0
    assert intervals.verdict(diff) == "no significant difference"


def test_runs_on_different_examples_are_not_paired():
    labels = np.tile([0, 1], 10)
    other = labels.copy()
    other[0] = 1 - other[0]
    assert _paired([_scores(labels, labels)], [_scores(labels, other)]) is None


def test_the_interval_adds_the_seed_spread_with_a_t_quantile():
    from scipy import stats

    points = np.array([0.70, 0.80, 0.90])
    flat = np.tile(points[:, None], (1, 50))  # no test-sample spread: the t interval over seeds alone
    found = intervals.interval(points, flat)
    half = stats.t.ppf(0.975, 2) * points.std(ddof=1) / np.sqrt(3)
    assert found["mean"] == pytest.approx(0.8) and found["half_width"] == pytest.approx(half)
    one = intervals.interval([0.8], [np.linspace(0.7, 0.9, 101)])  # one seed: the bootstrap alone
    assert one["half_width"] == pytest.approx(intervals.Z * np.linspace(0.7, 0.9, 101).std(ddof=1))
    both = intervals.interval(points, flat + np.linspace(-0.1, 0.1, 50))
    assert both["half_width"] > found["half_width"]


def test_predictions_round_trip_through_the_folder(tmp_path):
    logits, labels = np.arange(6.0).reshape(3, 2), np.array([1, 0, 1])
    write_predictions(tmp_path, {"test": (logits, labels), "validation": ((logits, logits[:, :1]), labels),
                                 "unlabelled": (logits, None)})
    found = read_predictions(tmp_path / "predictions.npz")
    assert set(found) == {"test", "validation"}
    assert (found["test"][0] == logits).all() and (found["test"][1] == labels).all()
    assert isinstance(found["validation"][0], tuple) and len(found["validation"][0]) == 2


# --------------------------------------------------------------------------- end to end on the tiny model


def test_two_seeds_write_per_seed_folders_and_a_report_of_means_with_intervals(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "o"
    recipe = text_recipe(tiny_bert, sentiment_files, out)
    recipe |= {"compare": ["scratch", "majority"], "seeds": [3, 5]}
    recipe["training"]["train_sampling_strategy"] = "group_by_length"  # Trainer then evaluates in length order
    result = finetune(recipe)
    for seed in (3, 5):
        folder = out / f"seed-{seed}"
        saved = yaml.safe_load((folder / "recipe.yaml").read_text())
        assert saved["seeds"] is None and saved["training"]["seed"] == seed  # reproduces on its own
        assert (folder / "metrics.json").is_file() and (folder / "predictions.npz").is_file()
        assert (folder / "compare/scratch/metrics.json").is_file() and (folder / "report.json").is_file()
        assert (folder / "compare/majority/predictions.npz").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(result.report)) and report["seeds"] == [3, 5]
    runs = {r["name"]: r for r in report["runs"]}
    assert list(runs) == ["main", "scratch", "majority"]
    for name, r in runs.items():
        per_seed = [json.loads((out / f"seed-{s}/report.json").read_text()) for s in (3, 5)]
        values = [next(x for x in p["runs"] if x["name"] == name)["test"] for p in per_seed]
        assert r["test"] == pytest.approx(np.mean(values)) == pytest.approx(r["interval"]["mean"])
        assert r["interval"]["low"] <= r["test"] <= r["interval"]["high"] and r["interval"]["seeds"] == 2
        assert set(r["intervals"]) == {"accuracy", "f1_macro", "precision_macro", "recall_macro"}
        assert [p["seed"] for p in r["per_seed"]] == [3, 5]
    main = runs["main"]
    assert main["vs_main"] is None and runs["scratch"]["vs_main"]["verdict"] is not None
    assert runs["majority"]["vs_main"] is not None  # predictions.npz keeps the split's order: baselines pair too
    low, high = main["gain_interval"]
    expected = "gain" if low > 0 else "negative transfer" if high < 0 else "no significant difference"
    assert main["verdict"] == expected and main["negative_transfer"] == (expected == "negative transfer")
    md = (out / "report.md").read_text()
    for name, r in runs.items():
        assert f"{r['interval']['mean']:.4f} ± {r['interval']['half_width']:.4f}" in md, name
    assert "mean over seeds 3, 5" in md and f"| {expected}" in md.replace("**", "")
    assert result.metrics["test"]["test_accuracy"] == pytest.approx(
        np.mean([json.loads((out / f"seed-{s}/metrics.json").read_text())["test"]["test_accuracy"] for s in (3, 5)]))


def test_a_single_run_with_seeds_and_resume_keeps_finished_seeds(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "o"
    recipe = text_recipe(tiny_bert, sentiment_files, out) | {"seeds": [1]}
    finetune(recipe)
    assert (out / "seed-1/metrics.json").is_file() and not (out / "metrics.json").exists()
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["main"] and report["runs"][0]["interval"]["seeds"] == 1
    with pytest.raises(OutputError, match="is not empty; pass --overwrite"):
        finetune(recipe)
    stamp = (out / "seed-1/metrics.json").stat().st_mtime_ns
    finetune(recipe | {"seeds": [1, 2]}, resume=True)  # seed 1 kept, seed 2 trained
    assert (out / "seed-1/metrics.json").stat().st_mtime_ns == stamp and (out / "seed-2/metrics.json").is_file()
    assert json.loads((out / "report.json").read_text())["seeds"] == [1, 2]


def test_build_report_follows_the_intervals(tiny_bert, sentiment_files, tmp_path):
    """Hand-made predictions: a run right everywhere against one wrong everywhere is a gain; the same run
    against itself is no significant difference."""
    recipe = load_recipe(text_recipe(tiny_bert, sentiment_files, tmp_path / "o"))
    task, spec = resolve(recipe)
    labels = np.tile([0, 1], 20)
    folders = {}
    for name, predicted in (("main", labels), ("scratch", 1 - labels), ("lora", labels)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        write_predictions(folders[name], {"test": (np.eye(2)[predicted], labels)})

    def row(name, kind):
        right = 1.0 if name != "scratch" else 0.0
        return {"name": name, "kind": kind, "strategy": "full", "pretrained": kind != "scratch",
                "validation": right, "test": right, "train_seconds": 1.0, "cached_features": False,
                "trainable_parameters": 1, "output_dir": str(folders[name]), "curve": [], "collapsed": False,
                "predictions": str(folders[name] / "predictions.npz")}

    rows = [row("main", "pretrained"), row("scratch", "scratch"), row("lora", "pretrained")]
    report = build_report([rows, rows], [0, 1], task, spec)
    runs = {r["name"]: r for r in report["runs"]}
    assert runs["main"]["verdict"] == "gain" and runs["main"]["gain_interval"] == [100.0, 100.0]
    assert runs["lora"]["vs_main"]["verdict"] == "no significant difference"
    assert runs["lora"]["vs_main"]["low"] == runs["lora"]["vs_main"]["high"] == 0.0
    assert runs["scratch"]["vs_main"]["verdict"] == "worse" and runs["scratch"]["verdict"] is None
    assert report["verdict"] == "gain" and report["negative_transfer"] is False
