"""Learning curves (recipe `curve`): validation, the nested stratified subsets, the examples-needed reading,
and the tiny model end to end (files, intervals, --overwrite / --resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from hf_transfer import finetune
from hf_transfer.cli import main
from hf_transfer.errors import OutputError, RecipeError
from hf_transfer.folder import lock_path, staging_dir
from hf_transfer.runs.curve import examples_needed
from hf_transfer.tasks.subsets import share, subset_indices, too_small
from hf_transfer.validate import load_recipe
from tests.test_lost_work import _failing_in, snapshot
from tests.tiny import text_recipe

MINIMAL = {"model": {"name_or_path": "m"}, "data": {"path": "csv"}}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("curve, message", [
    ({"fractions": []}, "curve.fractions: list at least one fraction"),
    ({"fractions": [0.1, 0]}, "curve.fractions[1]: must be in (0, 1], got 0.0"),
    ({"fractions": [1.5]}, "curve.fractions[0]: must be in (0, 1], got 1.5"),
    ({"fractions": [0.5, "all"]}, "curve.fractions[1]: expected float, got 'all'"),
    ({"fractions": [0.1, 0.5, 0.1]}, "curve.fractions: 0.1 listed twice"),
    ({"fractions": 0.5}, "curve.fractions: expected list, got 0.5"),
    ({"fraction": -0.5}, "curve.fraction: must be in (0, 1], got -0.5"),
    ({"sizes": [10]}, "curve.sizes: unknown key (allowed: fractions, fraction)"),
    ([0.1, 1.0], "curve: expected a mapping, got [0.1, 1.0]"),
])
def test_curve_errors_are_one_line_and_name_the_key(curve, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(MINIMAL | {"curve": curve})
    assert str(info.value) == message


@pytest.mark.parametrize("extra, message", [
    ({"cv": {"folds": 2}}, "curve: not available with cv"),
    ({"hub": {"push": True, "repo_id": "me/x"}}, "curve: not available with hub.push"),
    ({"data": {"path": "csv", "streaming": True}, "training": {"max_steps": 2}},
     "curve: not available with data.streaming"),
])
def test_curve_refused_with_what_cuts_the_training_split_otherwise(extra, message):
    with pytest.raises(RecipeError, match=f"^{message}"):
        load_recipe(MINIMAL | {"curve": {}} | extra)


def test_curve_defaults_and_overrides():
    assert load_recipe(MINIMAL | {"curve": {}}).curve.fractions == [0.05, 0.1, 0.25, 0.5, 1.0]
    recipe = load_recipe(MINIMAL, ["curve.fractions=[0.2, 1]", "seeds=[1, 2]", "compare=[scratch]"])
    assert recipe.curve.fractions == [0.2, 1.0] and recipe.curve.fraction is None
    assert load_recipe(MINIMAL).curve is None
    assert load_recipe(MINIMAL, {"curve": {"fractions": [0.1, 1.0]}}).curve.fractions == [0.1, 1.0]  # the Python API


# --------------------------------------------------------------------------- the subsets


@given(st.lists(st.integers(0, 4), min_size=1, max_size=120), st.lists(st.floats(0.01, 1.0), min_size=2, max_size=5),
       st.integers(0, 2**32 - 1))
def test_subsets_are_nested_stratified_and_keep_every_class(strata, fractions, seed):
    n = len(strata)
    counts = {c: strata.count(c) for c in set(strata)}
    previous = set()
    for fraction in sorted(fractions):
        rows = subset_indices(strata, n, fraction, seed)
        assert len(set(rows)) == len(rows) and list(rows) == sorted(rows)
        assert previous <= set(rows)  # nested: a smaller fraction's rows are among a larger one's
        kept = {c: sum(strata[i] == c for i in rows) for c in counts}
        for c, count in counts.items():  # stratified: each class keeps its own share, at least one row
            assert kept[c] == share(count, fraction) and 1 <= kept[c] <= count
            assert abs(kept[c] - fraction * count) <= 0.5 or kept[c] == 1
        assert set(too_small(strata, fraction)) == {c for c, count in counts.items() if fraction * count < 0.5}
        previous = set(rows)
    assert len(subset_indices(strata, n, 1.0, seed)) == n


def test_subsets_differ_by_seed_and_unstratified_subsets_nest_too():
    strata = [0] * 50 + [1] * 50
    assert set(subset_indices(strata, 100, 0.2, 0)) != set(subset_indices(strata, 100, 0.2, 1))
    small, large = subset_indices(None, 100, 0.1, 3), subset_indices(None, 100, 0.3, 3)
    assert (len(small), len(large)) == (10, 30) and set(small) <= set(large)
    assert too_small([0] * 98 + [1, 1], 0.1) == [1] and too_small(None, 0.01) == []
    rare = np.asarray([0] * 98 + [1, 1])[subset_indices([0] * 98 + [1, 1], 100, 0.1, 0)]
    assert (rare == 1).sum() == 1 and (rare == 0).sum() == 10  # the rare class keeps one row


# --------------------------------------------------------------------------- examples needed


def test_examples_needed_interpolates_in_log_examples():
    examples, values = [10, 100, 1000], [0.5, 0.7, 0.9]
    found = examples_needed(examples, values, 0.8)
    assert found["status"] == "reached" and found["needed"] == pytest.approx(np.sqrt(100 * 1000))
    assert examples_needed(examples, values, 0.7)["needed"] == pytest.approx(100)
    first = examples_needed(examples, values, 0.4)
    assert first == {"needed": 10.0, "status": "at the smallest point"}
    never = examples_needed(examples, values, 0.95)
    assert never["needed"] is None and never["status"] == "not reached"
    assert (never["best"], never["best_examples"]) == (0.9, 1000)


def test_examples_needed_follows_lower_is_better_and_takes_the_first_crossing():
    loss = examples_needed([10, 100, 1000], [2.0, 1.0, 0.5], 1.5, greater=False)
    assert loss["status"] == "reached" and loss["needed"] == pytest.approx(np.sqrt(10 * 100))
    bumpy = examples_needed([10, 100, 1000], [0.5, 0.8, 0.6], 0.6)  # reaches 0.6 first between 10 and 100
    assert bumpy["needed"] < 100


# --------------------------------------------------------------------------- end to end on the tiny model


def test_a_curve_over_two_seeds_writes_points_table_figure_and_intervals(tiny_bert, sentiment_files, tmp_path, caplog):
    out = tmp_path / "o"
    recipe = text_recipe(tiny_bert, sentiment_files, out)
    recipe |= {"curve": {"fractions": [1.0, 0.25]}, "compare": ["scratch", "majority"], "seeds": [3, 5]}
    with caplog.at_level("INFO", logger="hf_transfer"):
        result = finetune(recipe)
    assert "2 fractions (N = 11, 43 of 43 training rows) x 2 trained runs (main, scratch) x 2 seeds = 8 training " \
           "runs, plus baselines that train nothing (majority)" in caplog.text  # the plan, before the first run
    curve = json.loads((out / "curve.json").read_text())
    assert result.metrics == curve and curve["seeds"] == [3, 5] and curve["training_runs"] == 8
    assert [p["fraction"] for p in curve["points"]] == [0.25, 1.0]
    assert [p["examples_per_seed"] for p in curve["points"]] == [[11, 11], [43, 43]]
    for point in curve["points"]:
        folder = out / f"fraction-{point['fraction']:g}"
        for seed in (3, 5):
            saved = yaml.safe_load((folder / f"seed-{seed}/recipe.yaml").read_text())
            assert saved["curve"]["fraction"] == point["fraction"] and saved["seeds"] is None
            scratch = json.loads((folder / f"seed-{seed}/compare/scratch/metrics.json").read_text())
            assert scratch["train_examples"] == point["examples"]  # every variant trains on the point's rows
        assert (folder / "report.json").is_file()
    runs = {r["name"]: r for r in curve["runs"]}
    assert list(runs) == ["main", "scratch", "majority"]
    for name, r in runs.items():
        for i, p in enumerate(r["points"]):
            report = json.loads((out / f"fraction-{curve['points'][i]['fraction']:g}/report.json").read_text())
            row = next(x for x in report["runs"] if x["name"] == name)
            assert p["mean"] == pytest.approx(row["interval"]["mean"]) and row["interval"]["seeds"] == 2
            assert p["half_width"] == pytest.approx(row["interval"]["half_width"])
            assert p["low"] <= p["mean"] <= p["high"]
    assert [(m["run"], m["examples"]) for m in curve["matches"]] == [("main", 11), ("main", 43)]
    md = (out / "curve.md").read_text()
    assert "| N | fraction | main (pretrained) | scratch | majority |" in md
    for i, n in enumerate((11, 43)):
        cells = [f"{r['points'][i]['mean']:.4f} ± {r['points'][i]['half_width']:.4f}" for r in runs.values()]
        assert md.count(f"| {n} | {curve['points'][i]['fraction']:g} | ") == 1 and all(c in md for c in cells)
    assert md.count("- scratch ") == 2 and "mean over seeds 3, 5" in md
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "Learning curve" in html and "data:image/png;base64," in html and "N = 11 (fraction 0.25)" in html


def test_curve_overwrite_failing_in_a_later_point_keeps_the_previous_run_and_resume_keeps_points(
        tiny_bert, sentiment_files, tmp_path, monkeypatch, capsys):
    from hf_transfer.runs import curve

    out = tmp_path / "run"
    recipe = text_recipe(tiny_bert, sentiment_files, out) | {"curve": {"fractions": [0.5, 1.0]}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["finetune", str(path)]) == 0
    assert json.loads((out / "curve.json").read_text())["runs"][0]["points"][0]["half_width"] is not None
    with pytest.raises(OutputError, match="is not empty; pass --overwrite"):
        finetune(recipe)
    before = snapshot(out)
    with monkeypatch.context() as patched:
        _failing_in(patched, curve, lambda r: r.curve.fraction == 1.0)
        assert main(["finetune", str(path), "training.learning_rate=0.02", "--overwrite"]) == 2
    assert "failing on purpose" in capsys.readouterr().err
    assert snapshot(out) == before  # not a new first point beside the old last one
    assert not staging_dir(out).exists() and not lock_path(out).exists()

    (out / "fraction-1/report.json").unlink()  # as if stopped before the last point's report
    stamp = (out / "fraction-0.5/metrics.json").stat().st_mtime_ns
    finetune(recipe, resume=True)
    assert (out / "fraction-0.5/metrics.json").stat().st_mtime_ns == stamp  # the finished point is kept
    assert (out / "fraction-1/report.json").is_file()

    assert main(["finetune", str(path), "training.learning_rate=0.02", "--overwrite"]) == 0
    for point in ("fraction-0.5", "fraction-1"):
        saved = yaml.safe_load((out / point / "recipe.yaml").read_text())
        assert saved["training"]["learning_rate"] == 0.02 and saved["training"]["output_dir"] == str(out / point)
    assert str(staging_dir(out)) not in (out / "curve.json").read_text()
    assert not staging_dir(out).exists() and not lock_path(out).exists()
