"""Labels are never guessed wrongly: integers are matched by value, multi-label strings need a
separator, and a single class or repeated label names are one-line errors."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest

from hf_transfer.errors import DataError, RecipeError
from hf_transfer.validate import load_recipe
from hf_transfer.train import load_splits


def write_csv(path: Path, rows: list[tuple]) -> str:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["review", "label"])
        w.writerows(rows)
    return str(path)


def recipe_for(train: str, test: str | None = None, **data) -> dict:
    files = {"train": train} | ({"test": test} if test else {})
    return {"model": {"name_or_path": "unused"},
            "data": {"path": "csv", "data_files": files, "text_column": "review", "validation_size": 0.25,
                     "test_split": "test" if test else None, **data}}


def labelled(raw: dict, role: str = "train") -> tuple[list[str], list[str]]:
    """(label names, the name of each row's encoded label) of a split."""
    loaded = load_splits(load_recipe(raw), seed=0)
    names = loaded.label_names
    split = loaded.splits[role]
    return names, [names[i] for i in split["labels"]]


def test_star_ratings_1_to_n_are_matched_by_value(tmp_path):
    rows = [(f"text {i}", 1 + i % 3) for i in range(12)]  # ratings 1, 2, 3
    train = write_csv(tmp_path / "train.csv", rows)
    test = write_csv(tmp_path / "test.csv", [("a", 1), ("b", 2), ("c", 3)])
    names, got = labelled(recipe_for(train, test), "test")
    assert names == ["1", "2", "3"] and got == ["1", "2", "3"]


def test_integer_labels_sort_as_numbers(tmp_path):
    train = write_csv(tmp_path / "train.csv", [(f"t{i}", v) for i, v in enumerate([2, 10, 1, 2, 10, 1, 1, 2])])
    names, got = labelled(recipe_for(train, validation_split=None))
    assert names == ["1", "2", "10"]


def test_ids_with_names_given_by_the_recipe_still_index_them(tmp_path):
    train = write_csv(tmp_path / "train.csv", [(f"t{i}", i % 2) for i in range(8)])
    test = write_csv(tmp_path / "test.csv", [("a", 0), ("b", 1)])
    names, got = labelled(recipe_for(train, test, label_names=["negative", "positive"]), "test")
    assert got == ["negative", "positive"]


def test_names_that_are_numbers_win_over_ids(tmp_path):
    """label_names [1, 2, 3] with values 1..3: value 1 is class '1' (id 0), never id 1."""
    rows = [(f"t{i}", 1 + i % 3) for i in range(9)]
    train = write_csv(tmp_path / "train.csv", rows)
    test = write_csv(tmp_path / "test.csv", [("a", 1), ("b", 2), ("c", 3)])
    _, got = labelled(recipe_for(train, test, label_names=["1", "2", "3"]), "test")
    assert got == ["1", "2", "3"]


def test_multi_label_strings_need_a_separator(tmp_path):
    train = write_csv(tmp_path / "train.csv", [(f"t{i}", ["pain;day", "day", "pain"][i % 3]) for i in range(9)])
    raw = recipe_for(train, problem_type="multi_label_classification")
    with pytest.raises(DataError, match=r"data.label_column: multi-label value 'pain;day'.*data.label_separator"):
        load_splits(load_recipe(raw), seed=0)
    raw["data"]["label_separator"] = ";"
    loaded = load_splits(load_recipe(raw), seed=0)
    assert loaded.label_names == ["day", "pain"]
    rows = {tuple(r) for r in loaded.splits["train"]["labels"]}
    assert rows <= {(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)} and (1.0, 1.0) in rows


def test_a_single_class_in_training_is_refused(tmp_path):
    train = write_csv(tmp_path / "train.csv", [(f"t{i}", "positive") for i in range(8)])
    with pytest.raises(DataError, match="data.label_column: the training split 'train' holds a single class"):
        load_splits(load_recipe(recipe_for(train)), seed=0)


def test_repeated_label_names_are_refused():
    with pytest.raises(RecipeError, match="data.label_names: 'a' listed twice"):
        load_recipe({"model": {"name_or_path": "m"}, "data": {"path": "csv", "label_names": ["a", "b", "a"]}})


def test_a_class_absent_from_training_is_a_warning(tmp_path, caplog):
    train = write_csv(tmp_path / "train.csv", [(f"t{i}", ["a", "b"][i % 2]) for i in range(8)])
    with caplog.at_level(logging.WARNING):
        names, _ = labelled(recipe_for(train, label_names=["a", "b", "c"]))
    assert names == ["a", "b", "c"]
    assert "'c' never occur in the training split" in caplog.text


def test_a_classlabel_column_is_read_as_ids(tmp_path):
    import datasets

    features = datasets.Features({"review": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["2", "1"])})  # names that are numbers
    ds = datasets.Dataset.from_dict({"review": ["x", "y", "z", "w"], "label": [0, 1, 0, 1]}, features=features)
    ds.to_parquet(tmp_path / "train.parquet")
    raw = {"model": {"name_or_path": "unused"},
           "data": {"path": "parquet", "data_files": {"train": str(tmp_path / "train.parquet")},
                    "text_column": "review", "test_split": None, "validation_size": 0.5}}
    loaded = load_splits(load_recipe(raw), seed=0)
    assert loaded.label_names == ["2", "1"]
    both = datasets.concatenate_datasets([loaded.splits["train"], loaded.splits["validation"]])
    assert sorted(both["labels"]) == [0, 0, 1, 1]  # ids kept, not re-read as the names "0"/"1"


def test_true_false_labels_are_names_never_ids(tmp_path):
    """A CSV column of True / False is read as booleans: each is its own class, by name (True is not class id 1)."""
    rows = [(f"text {i}", ["True", "False"][i % 2]) for i in range(8)]
    train = write_csv(tmp_path / "train.csv", rows)
    test = write_csv(tmp_path / "test.csv", [("a", "True"), ("b", "False"), ("c", "True")])
    names, got = labelled(recipe_for(train, test), "test")
    assert names == ["False", "True"] and got == ["True", "False", "True"]
    _, got = labelled(recipe_for(train, test, label_names=["True", "False"]), "test")  # the recipe's order
    assert got == ["True", "False", "True"]


@pytest.mark.parametrize("cell", ["", "NA", "nan"])
def test_an_empty_label_or_text_is_named_as_missing(tmp_path, cell):
    rows = [(f"text {i}", cell if i == 3 else ["pos", "neg"][i % 2]) for i in range(8)]
    with pytest.raises(DataError, match=r"data.label_column: column 'label' of the training split 'train' has 1 of 8 "
                                        r"labels empty \(a missing value: a CSV reads"):
        load_splits(load_recipe(recipe_for(write_csv(tmp_path / "train.csv", rows), validation_split=None)), seed=0)
    test = write_csv(tmp_path / "test.csv", [("a", "pos"), ("b", cell)])  # names given: the encoder says it
    raw = recipe_for(write_csv(tmp_path / "ok.csv", rows[:3] + rows[4:]), test, label_names=["neg", "pos"])
    with pytest.raises(DataError, match="data.label_column: a label in split 'test' is empty"):
        load_splits(load_recipe(raw), seed=0)


def test_an_empty_text_is_named_as_missing(tiny_bert, tmp_path):
    from hf_transfer import finetune
    from tests.tiny import text_recipe

    rows = [("", "positive")] + [(f"good {i}", ["positive", "negative"][i % 2]) for i in range(7)]
    files = {"train": write_csv(tmp_path / "train.csv", rows), "test": write_csv(tmp_path / "test.csv", rows[1:])}
    recipe = text_recipe(tiny_bert, files, tmp_path / "out")
    with pytest.raises(DataError, match="data.text_column: a text in column 'review' is empty \\(a missing value"):
        finetune(recipe)
