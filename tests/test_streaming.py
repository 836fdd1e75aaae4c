"""data.streaming: the training split read as a datasets.IterableDataset (data larger than the disk).

A tiny BERT trains max_steps steps from csv files streamed by `load_dataset(..., streaming=True)`,
evaluates on validation / test rows held in memory, and saves; what a stream cannot do is refused in one line.
"""

import json

import pytest

from hf_transfer import finetune
from hf_transfer.errors import DataError, RecipeError
from hf_transfer.validate import load_recipe
from tests.tiny import FILLER, NEGATIVE, POSITIVE, text_recipe, write_sentiment_csv


def streaming_recipe(model, files, out, **data):
    recipe = text_recipe(model, files, out)
    recipe["data"] |= {"streaming": True, "shuffle_buffer": 16, "max_eval_samples": 8, **data}
    recipe["training"] |= {"max_steps": 3, "eval_steps": 3, "save_steps": 3}
    return recipe


@pytest.mark.parametrize("labels, metric", [
    ({}, "test_accuracy"),
    ({"problem_type": "regression", "label_column": "score", "label_names": None}, "test_mse"),
    ({"problem_type": "multi_label_classification", "label_column": ["is_good", "is_bad"], "label_names": None},
     "test_exact_match"),
])
def test_a_streamed_csv_trains_max_steps_evaluates_and_saves(labels, metric, tiny_bert, tmp_path):
    import datasets

    files = write_sentiment_csv(tmp_path / "data", n_train=40, n_test=12)
    result = finetune(streaming_recipe(tiny_bert, files, tmp_path / "out", **labels))
    trainer, metrics, out = result.trainer, result.metrics, result.output_dir
    assert isinstance(trainer.train_dataset, datasets.IterableDataset)  # never materialised
    assert trainer.state.global_step == 3
    # no validation split in the files: the stream's first max_eval_samples rows; test: its first 8 of 12
    assert metrics["validation"]["eval_samples"] == 8 and metrics["test"]["test_samples"] == 8
    assert {metric, "test_loss"} <= set(metrics["test"])
    assert json.loads((out / "metrics.json").read_text())["test"] == metrics["test"]
    assert (out / "model.safetensors").is_file() and (out / "checkpoints" / "checkpoint-3").is_dir()
    saved = load_recipe(out / "recipe.yaml")
    assert saved.data.streaming and saved.data.shuffle_buffer == 16


def test_label_names_come_from_a_classlabel_feature(monkeypatch):
    """A stream with a ClassLabel column needs no data.label_names; the shuffle is seeded."""
    import datasets

    from hf_transfer.tasks import data, resolve

    features = datasets.Features({"review": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})

    def rows(n, start=0):
        return lambda: ({"review": f"row {i}", "label": i % 2} for i in range(start, start + n))

    streams = datasets.IterableDatasetDict({
        "train": datasets.IterableDataset.from_generator(rows(30), features=features),
        "validation": datasets.IterableDataset.from_generator(rows(20, 100), features=features),
    })
    monkeypatch.setattr(data, "load_raw", lambda cfg: streams)
    recipe = load_recipe({"model": {"name_or_path": "unused"}, "training": {"max_steps": 1},
                          "data": {"path": "unused", "streaming": True, "text_column": "review",
                                   "max_eval_samples": 5, "shuffle_buffer": 10}})
    task, spec = resolve(recipe)

    def loaded(seed):
        return data.load_data(recipe.data, task.input_columns(spec), seed, labeler=task.labeler(spec))

    first = loaded(0)
    assert first.label_names == ["negative", "positive"]
    assert first.splits["validation"]["labels"] == [0, 1, 0, 1, 0]  # the first 5 rows, in memory
    train = list(first.splits["train"])
    assert sorted(r["review"] for r in train) == sorted(f"row {i}" for i in range(30))  # all rows, shuffled
    assert [r["review"] for r in train] != [f"row {i}" for i in range(30)]
    assert [r["review"] for r in loaded(0).splits["train"]] == [r["review"] for r in train]  # same seed, same order
    assert all(r["labels"] == int(r["review"].split()[1]) % 2 for r in train)


def test_what_runs_each_epoch_runs_every_tenth_of_max_steps_on_a_stream(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.trainer import training_arguments

    recipe = streaming_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    for key in ("eval_strategy", "eval_steps", "save_steps"):
        recipe["training"].pop(key)
    recipe["training"]["max_steps"] = 50
    args = training_arguments(load_recipe(recipe), tmp_path / "out")
    assert (args.eval_strategy, args.save_strategy, args.logging_strategy) == ("steps",) * 3
    assert (args.eval_steps, args.save_steps, args.logging_steps) == (5, 5, 5)
    recipe["training"] |= {"eval_steps": 7, "save_steps": 14}  # the recipe's own steps win
    args = training_arguments(load_recipe(recipe), tmp_path / "out")
    assert (args.eval_steps, args.save_steps, args.logging_steps) == (7, 14, 7)
    recipe["training"] |= {"eval_strategy": "epoch", "logging_strategy": "epoch"}  # and its own strategies
    args = training_arguments(load_recipe(recipe), tmp_path / "out")
    assert (args.eval_strategy, args.save_strategy, args.logging_strategy) == ("epoch",) * 3


def test_a_stream_without_label_names_is_one_line(tiny_bert, tmp_path):
    files = write_sentiment_csv(tmp_path / "data", n_train=10, n_test=4)
    recipe = streaming_recipe(tiny_bert, files, tmp_path / "out")
    recipe["data"].pop("label_names")
    with pytest.raises(DataError, match=r"^data.label_names: required with data.streaming \(a stream cannot be "
                                        r"scanned for its labels\) unless column 'label' is a ClassLabel$"):
        finetune(recipe)
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("change, message", [
    ({"training": {"max_steps": -1}}, r"^training.max_steps: required with data.streaming"),
    ({"task": "token-classification"}, r"^data.streaming: supported for text-classification, not token-classification$"),
    ({"data": {"class_weights": "auto"}}, r"^data.class_weights: not available with data.streaming"),
    ({"compare": ["majority"]}, r"^compare: not available with data.streaming"),
    ({"cv": {"folds": 2}}, r"^cv: not available with data.streaming"),
    ({"data": {"shuffle_buffer": 0}}, r"^data.shuffle_buffer: "),
])
def test_what_a_stream_cannot_do_is_refused_in_one_line(change, message, tmp_path):
    recipe = streaming_recipe("some/model", {"train": "t.csv"}, tmp_path / "out")
    for section, value in change.items():
        recipe[section] = recipe.get(section, {}) | value if isinstance(value, dict) else value
    with pytest.raises(RecipeError, match=message) as err:
        load_recipe(recipe)
    assert "\n" not in str(err.value)


def _uneven_reviews(folder, n_train=40, n_test=12) -> dict[str, str]:
    """Reviews of 2 to 12 words: batches padded to different lengths."""
    import csv
    import random

    rng, files = random.Random(0), {}
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["review", "label"])
            for i in range(n):
                words = rng.sample(POSITIVE if i % 2 == 0 else NEGATIVE, 2) + rng.sample(FILLER, rng.randint(0, 10))
                writer.writerow([" ".join(words), "positive" if i % 2 == 0 else "negative"])
        files[split] = str(folder / f"{split}.csv")
    return files


@pytest.mark.slow  # a launcher and two training processes
def test_a_stream_trains_under_two_cpu_processes(tiny_bert, tmp_path):
    """Each process reads the stream and keeps its share of every batch: Accelerate's default for streams
    (process 0 concatenates the batches of all processes) fails on batches padded to different lengths."""
    from tests.test_distributed import launch, summaries

    recipe = streaming_recipe(tiny_bert, _uneven_reviews(tmp_path / "data"), tmp_path / "work" / "out")
    recipe["training"] |= {"per_device_train_batch_size": 4, "use_cpu": True}
    (tmp_path / "work").mkdir()
    proc = launch("cpu_2proc.yaml", recipe, tmp_path / "work")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(summaries(proc.stdout)) == 1
    metrics = json.loads((tmp_path / "work" / "out" / "metrics.json").read_text())
    assert (metrics["processes"], metrics["effective_batch_size"]) == (2, 8)
    assert metrics["validation"]["eval_samples"] == metrics["test"]["test_samples"] == 8
