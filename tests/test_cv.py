"""k-fold cross-validation (recipe `cv:`): stratified, disjoint folds; one run per fold; mean ± std."""

import csv
import json
import statistics
from collections import Counter

import numpy as np
import pytest

from hf_transfer import finetune
from hf_transfer.runs import cv
from hf_transfer.tasks.subsets import fold_indices
from hf_transfer.validate import load_recipe
from hf_transfer.errors import OutputError, RecipeError
from hf_transfer.train import load_splits
from tests.tiny import multitask_recipe, text_recipe, write_multitask_csv
from tests.tiny_vision import save_tiny_timm, vision_recipe, write_imagefolder


def test_folds_are_stratified_disjoint_and_cover_the_rows():
    rng = np.random.default_rng(0)
    strata = list(rng.choice(3, size=100, p=[0.6, 0.3, 0.1]))
    held = fold_indices(100, strata, 4, seed=7)
    assert len(held) == 4
    assert sorted(np.concatenate(held).tolist()) == list(range(100))  # disjoint and covering
    total = Counter(strata)
    for fold in held:
        counts = Counter(strata[i] for i in fold)
        for c, n in total.items():
            assert abs(counts[c] - n / 4) < 1, (c, counts)
    assert [f.tolist() for f in held] == [f.tolist() for f in fold_indices(100, strata, 4, seed=7)]
    assert [f.tolist() for f in held] != [f.tolist() for f in fold_indices(100, strata, 4, seed=8)]


def _reviews(split):
    return sorted(split["review"])


def test_fold_recipes_hold_out_each_fold_once(tiny_bert, sentiment_files, tmp_path):
    raw = text_recipe(tiny_bert, sentiment_files, tmp_path) | {"cv": {"folds": 3, "seed": 1}}
    rows = list(csv.DictReader(open(sentiment_files["train"], encoding="utf-8")))
    held = []
    for i in range(3):
        splits = load_splits(cv.fold_recipe(load_recipe(raw), tmp_path, i), seed=0).splits
        train, val = _reviews(splits["train"]), _reviews(splits["validation"])
        assert not set(train) & set(val) and len(train) + len(val) == len(rows)
        assert Counter(splits["validation"]["labels"]) == Counter({0: len(rows) // 6, 1: len(rows) // 6})
        assert len(splits["test"]) == 16  # every fold sees the whole test split
        held += val
    assert sorted(held) == sorted(r["review"] for r in rows)


def test_multitask_folds_stratify_on_the_first_task(tiny_bert, tmp_path):
    files = write_multitask_csv(tmp_path / "d")
    raw = multitask_recipe(tiny_bert, files, tmp_path) | {"cv": {"folds": 2, "fold": 0}}
    splits = load_splits(load_recipe(raw), seed=0).splits
    sentiment = [int(row[0]) for row in splits["validation"]["labels"]]
    assert Counter(sentiment) == Counter({0: 12, 1: 12})


def test_cv_run_writes_every_fold_and_mean_std(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "cv"
    raw = text_recipe(tiny_bert, sentiment_files, out) | {"cv": {"folds": 2}}
    result = finetune(raw)
    summary = json.loads((out / "cv.json").read_text())
    assert result.metrics == summary and (out / "cv.md").is_file()
    assert [r["fold"] for r in summary["runs"]] == [0, 1]
    for role, prefix in (("validation", "eval"), ("test", "test")):
        per_fold = [json.loads((out / f"fold-{i}" / "metrics.json").read_text())[role] for i in range(2)]
        for key in (f"{prefix}_accuracy", f"{prefix}_f1_macro", f"{prefix}_loss"):
            values = [m[key] for m in per_fold]
            assert summary[role][key]["values"] == values
            assert summary[role][key]["mean"] == pytest.approx(statistics.fmean(values))
            assert summary[role][key]["std"] == pytest.approx(statistics.stdev(values))
        assert f"{prefix}_runtime" not in summary[role]
    assert summary["validation"]["eval_samples"]["values"] == [24, 24]
    saved = load_recipe(out / "fold-1" / "recipe.yaml")
    assert (saved.cv.folds, saved.cv.fold) == (2, 1)
    assert "| accuracy |" in (out / "cv.md").read_text()

    with pytest.raises(OutputError, match="--overwrite"):  # nothing saved is replaced without it
        finetune(raw)
    again = finetune(raw, resume=True)  # finished folds are read back, not trained again
    assert again.trainer is None and again.metrics["validation"] == summary["validation"]


def test_cv_runs_on_vision(tmp_path):
    files = write_imagefolder(tmp_path / "img", n_train=4)
    model = save_tiny_timm(tmp_path / "resnet", "test_resnet")
    out = tmp_path / "cv"
    raw = vision_recipe(model, files, out) | {"cv": {"folds": 2}}
    raw["training"]["max_steps"] = 1
    summary = finetune(raw).metrics
    assert summary["validation"]["eval_samples"]["values"] == [6, 6]  # 12 images, 3 classes
    assert len(summary["test"]["test_accuracy"]["values"]) == 2
    assert (out / "fold-0" / "config.json").is_file() and (out / "fold-1" / "model.safetensors").is_file()


@pytest.mark.parametrize("change, message", [
    ({"folds": 1}, r"^cv.folds: must be at least 2"),
    ({"folds": "three"}, r"^cv.folds: expected int"),
    ({"folds": 3, "fold": 3}, r"^cv.fold: must be between 0 and 2"),
    ({"folds": 3, "shuffle": True}, r"^cv.shuffle: unknown key"),
    ({"seed": 1}, r"^cv.folds: required key is missing"),
])
def test_cv_schema_errors_name_the_key(change, message, tiny_bert, sentiment_files, tmp_path):
    with pytest.raises(RecipeError, match=message):
        load_recipe(text_recipe(tiny_bert, sentiment_files, tmp_path) | {"cv": change})


def test_cv_refuses_compare(tiny_bert, sentiment_files, tmp_path):
    raw = text_recipe(tiny_bert, sentiment_files, tmp_path) | {"cv": {"folds": 2}, "compare": ["majority"]}
    with pytest.raises(RecipeError, match=r"^cv: not available with compare"):
        load_recipe(raw)
