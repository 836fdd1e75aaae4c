"""End-to-end runs of the real entry points on a tiny model: 2 steps per strategy."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_transfer import finetune
from hf_transfer.errors import DataError, OutputError
from tests.tiny import text_recipe

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["good great drug", "awful terrible pain", "the drug was fine", "worst day bad"]


def predictions(clf):
    return [r["label"] for r in clf(SENTENCES)]


def in_memory_labels(result):
    model, tok = (result.trainer.export_model or result.trainer.model).eval(), result.trainer.processing_class
    with torch.no_grad():
        logits = model(**tok(SENTENCES, return_tensors="pt", padding=True)).logits
    id2label = (model.base_model.model if hasattr(model, "peft_config") else model).config.id2label
    return [id2label[i] for i in logits.argmax(-1).tolist()]


@pytest.mark.parametrize("strategy", [
    {"strategy": "full"},
    {"strategy": "partial", "freeze": "backbone"},
    {"strategy": "partial", "freeze": 1},
])
def test_api_run_saves_a_model_that_reloads_with_pipeline(strategy, tiny_bert, sentiment_files, tmp_path):
    from transformers import pipeline

    out = tmp_path / "out"
    result = finetune(text_recipe(tiny_bert, sentiment_files, out, **strategy))
    assert result.output_dir == out
    for name in ("model.safetensors", "config.json", "tokenizer.json", "recipe.yaml", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"train", "validation", "test", "trainable_parameters", "total_parameters"} <= set(metrics)
    assert 0 <= metrics["test"]["test_accuracy"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    clf = pipeline("text-classification", model=str(out), device="cpu")
    assert predictions(clf) == in_memory_labels(result)


def test_frozen_weights_unchanged_and_trainable_moved(tiny_bert, sentiment_files, tmp_path):
    before = load_file(tiny_bert / "model.safetensors")
    out = tmp_path / "out"
    finetune(text_recipe(tiny_bert, sentiment_files, out, strategy="partial", freeze=1))
    after = load_file(out / "model.safetensors")
    frozen = [k for k in before if k.startswith(("embeddings.", "encoder.layer.0."))]
    moved = [k for k in before if k.startswith("encoder.layer.1.") and k.endswith("weight")]
    assert frozen and moved
    for k in frozen:
        assert torch.equal(before[k], after[f"bert.{k}"]), k
    assert all(not torch.equal(before[k], after[f"bert.{k}"]) for k in moved)


def test_lora_saves_adapter_and_head_that_reload(tiny_bert, sentiment_files, tmp_path):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoConfig, AutoTokenizer, pipeline

    out = tmp_path / "out"
    result = finetune(text_recipe(tiny_bert, sentiment_files, out, strategy="lora", r=4, merge=True))
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    saved = load_file(out / "adapter_model.safetensors")
    assert any("classifier" in k for k in saved) and any("lora_A" in k for k in saved)
    config = AutoConfig.from_pretrained(out)
    model = AutoPeftModelForSequenceClassification.from_pretrained(
        out, num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id
    )
    clf = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(out), device="cpu")
    expected = in_memory_labels(result)
    assert predictions(clf) == expected
    merged = pipeline("text-classification", model=str(out / "merged"), device="cpu")
    assert predictions(merged) == expected


@pytest.mark.parametrize("problem_type, label_column, key", [
    ("multi_label_classification", ["is_good", "is_bad"], "test_f1_macro"),
    ("regression", "score", "test_mse"),
])
def test_multi_label_and_regression(problem_type, label_column, key, tiny_bert, sentiment_files, tmp_path):
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["data"] |= {"problem_type": problem_type, "label_column": label_column, "label_names": None}
    result = finetune(recipe)
    assert key in result.metrics["test"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == problem_type
    if problem_type == "regression":
        assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    else:
        assert config["id2label"] == {"0": "is_good", "1": "is_bad"}


def test_validation_split_is_carved_when_absent(tiny_bert, sentiment_files, tmp_path):
    result = finetune(text_recipe(tiny_bert, sentiment_files, tmp_path / "out"))
    assert result.metrics["validation"]["eval_samples_per_second"] > 0
    n_val = round(48 * 0.1)
    assert len(result.trainer.train_dataset) == 48 - n_val


def test_existing_output_is_not_overwritten_without_flag(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        finetune(text_recipe(tiny_bert, sentiment_files, out))
    assert (out / "precious.txt").read_text() == "keep me"


def test_data_errors_name_the_problem(tiny_bert, sentiment_files, tmp_path):
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "a")
    recipe["data"]["text_column"] = "body"
    with pytest.raises(DataError, match="data.text_column: column 'body' not in split 'train'"):
        finetune(recipe)
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "b")
    recipe["data"]["label_names"] = ["negative", "neutral"]
    with pytest.raises(DataError, match="label 'positive' in split 'train' is not one of label_names"):
        finetune(recipe)
    recipe = text_recipe(tiny_bert, {"train": str(tmp_path / "missing.csv")}, tmp_path / "c")
    with pytest.raises(DataError, match="data.data_files.train: file not found"):
        finetune(recipe)


def test_missing_model_folder_is_a_clear_error(sentiment_files, tmp_path):
    from hf_transfer.errors import ModelError

    recipe = text_recipe(tmp_path / "no-model", sentiment_files, tmp_path / "out")
    with pytest.raises(ModelError, match="model.name_or_path: cannot load"):
        finetune(recipe)


def _write_recipe(recipe, path):
    import yaml

    path.write_text(yaml.safe_dump(recipe))
    return path


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_cli_finetune_end_to_end(tiny_bert, sentiment_files, tmp_path):
    path = _write_recipe(text_recipe(tiny_bert, sentiment_files, tmp_path / "out"), tmp_path / "r.yaml")
    exe = Path(sys.executable).with_name("hf-transfer")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "hf_transfer"]
    proc = subprocess.run([*cmd, "finetune", str(path), "finetune.strategy=lora", "finetune.r=2"],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout[proc.stdout.rindex("{\n  \"output_dir\""):])
    assert "test_accuracy" in summary["test"]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert "trainable parameters" in proc.stderr


def test_accelerate_launch_script_end_to_end(tiny_bert, sentiment_files, tmp_path):
    path = _write_recipe(text_recipe(tiny_bert, sentiment_files, tmp_path / "out"), tmp_path / "r.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(ROOT / "accelerate_configs/cpu.yaml"), str(ROOT / "scripts/finetune.py"), str(path)],
        capture_output=True, text=True, env=_env(), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_data_files_takes_a_list_of_files_per_split_as_datasets_does(tiny_bert, sentiment_files, tmp_path):
    """`data_files: {train: [a.csv, b.csv]}` reads both files, in order: the run equals one on the whole file (a
    list was refused before); the card names both; a missing file of a list and an empty list are one line."""
    from hf_transfer.errors import RecipeError

    lines = Path(sentiment_files["train"]).read_text(encoding="utf-8").splitlines(keepends=True)
    half = len(lines) // 2
    (tmp_path / "a.csv").write_text("".join(lines[:half]), encoding="utf-8")
    (tmp_path / "b.csv").write_text(lines[0] + "".join(lines[half:]), encoding="utf-8")
    parts = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    whole = finetune(text_recipe(tiny_bert, sentiment_files, tmp_path / "whole")).metrics
    split = finetune(text_recipe(tiny_bert, sentiment_files | {"train": parts}, tmp_path / "split")).metrics
    scores = [{k: v for k, v in m["test"].items() if not k.endswith(("runtime", "per_second"))} for m in (whole, split)]
    assert scores[0] == scores[1] and split["train"]["train_loss"] == whole["train"]["train_loss"]
    assert "train: a.csv + b.csv, test: test.csv" in (tmp_path / "split" / "README.md").read_text(encoding="utf-8")
    recipe = text_recipe(tiny_bert, sentiment_files | {"train": [parts[0], str(tmp_path / "c.csv")]}, tmp_path / "c")
    with pytest.raises(DataError, match=r"^data.data_files.train: file not found: .*c\.csv$"):
        finetune(recipe)
    with pytest.raises(RecipeError, match=r"^data.data_files.train: empty; name a file, a glob or a list of them$"):
        finetune(text_recipe(tiny_bert, sentiment_files | {"train": []}, tmp_path / "d"))


def test_a_finetuned_run_as_the_base_keeps_its_head_by_label_name_or_gets_a_new_one(tiny_bert, sentiment_files,
                                                                                     tmp_path):
    """Sequential transfer, from a finished run: the same labels in another order keep the trained head, its rows
    following data.label_names (they were read by position: predictions swapped, test accuracy 1.0 -> 0.0); a
    label set of another size gets a new head (it was refused: 'ignore_mismatched_sizes')."""
    import csv

    first = text_recipe(tiny_bert, sentiment_files, tmp_path / "first")
    first["training"].update(max_steps=30, learning_rate=5e-3)
    trained = finetune(first).metrics["test"]["test_accuracy"]
    assert trained == 1.0
    second = text_recipe(tmp_path / "first", sentiment_files, tmp_path / "second")
    second["data"]["label_names"] = ["positive", "negative"]
    second["training"].update(max_steps=1, learning_rate=1e-9)  # the head as it came
    assert finetune(second).metrics["test"]["test_accuracy"] == trained
    with open(sentiment_files["train"], newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    for i, row in enumerate(rows[1:]):
        row[1] = "neutral" if i % 3 == 0 else row[1]
    with open(tmp_path / "three.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    third = text_recipe(tmp_path / "first", {"train": str(tmp_path / "three.csv")}, tmp_path / "third")
    third["data"]["label_names"] = ["negative", "neutral", "positive"]
    assert finetune(third).trainer.model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    unnamed = Path(shutil.copytree(tmp_path / "first", tmp_path / "unnamed"))  # a config naming no architecture
    config = json.loads((unnamed / "config.json").read_text())
    del config["architectures"]
    (unnamed / "config.json").write_text(json.dumps(config))
    third["model"]["name_or_path"], third["training"]["output_dir"] = str(unnamed), str(tmp_path / "fourth")
    assert finetune(third).trainer.model.config.num_labels == 3


def test_tab_separated_files_read_as_their_csv_twins(tiny_bert, sentiment_files, tmp_path):
    """GLUE's own format: .tsv files are read with a tab (before: one column named 'review<TAB>label...')."""
    import csv

    from hf_transfer.errors import DataError
    from hf_transfer.train import load_splits
    from hf_transfer.validate import load_recipe

    tsv = {}
    for split, path in sentiment_files.items():
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        tsv[split] = str(tmp_path / f"{split}.tsv")
        with open(tsv[split], "w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter="\t").writerows(rows)
    plain = load_splits(load_recipe(text_recipe(tiny_bert, sentiment_files, tmp_path / "a")), seed=0).splits
    tabbed = load_splits(load_recipe(text_recipe(tiny_bert, tsv, tmp_path / "b")), seed=0).splits
    assert set(plain) == set(tabbed) and all(plain[s].to_list() == tabbed[s].to_list() for s in plain)
    with pytest.raises(DataError, match=r"^data.data_files: .*train.tsv is tab-separated \(.tsv\) but .*test.csv is "
                                        r"not; give files of one kind$"):
        load_splits(load_recipe(text_recipe(tiny_bert, {"train": tsv["train"], "test": sentiment_files["test"]},
                                            tmp_path / "c")), seed=0)
    misnamed = tmp_path / "train.csv"
    shutil.copy(tsv["train"], misnamed)
    with pytest.raises(DataError, match=r"^data.label_column: column 'label' not in split 'train' \(columns: "
                                        r"review\tlabel\tscore\tis_good\tis_bad\); the file is tab-separated: "
                                        r"name it .tsv$"):
        load_splits(load_recipe(text_recipe(tiny_bert, {"train": str(misnamed)}, tmp_path / "d")), seed=0)


def test_a_base_model_that_is_a_folder_of_runs_or_a_file_is_named_as_such(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.errors import ModelError

    runs = tmp_path / "cv"
    shutil.copytree(tiny_bert, runs / "fold-0")
    shutil.copytree(tiny_bert, runs / "fold-1")
    for base, says in ((runs, f"{runs} holds no model itself; its sub-folders do: {runs / 'fold-0'}, "
                              f"{runs / 'fold-1'}"),  # before: 'holds no config.json'
                       (Path(sentiment_files["test"]), "a file, not a model folder")):  # before: 'not a valid JSON file'
        with pytest.raises(ModelError, match=r"^model.name_or_path: cannot load .* from '.*': (.*)$") as err:
            finetune(text_recipe(base, sentiment_files, tmp_path / "out"))
        assert str(err.value).endswith(": " + says)


def test_a_folder_named_as_a_data_file_is_refused_naming_a_glob(tiny_bert, sentiment_files, tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    shutil.copy(sentiment_files["train"], folder / "a.csv")
    # before: "cannot read .../reviews: FileNotFoundError: Unable to find '.../reviews'" of a folder that exists
    with pytest.raises(DataError, match=rf"^data.data_files.train: {folder} is a folder; name its files, e.g. "
                                        rf"{folder}/\*.csv$"):
        finetune(text_recipe(tiny_bert, {"train": str(folder)}, tmp_path / "out"))
    recipe = text_recipe(tiny_bert, {"train": f"{folder}/*.csv", "test": sentiment_files["test"]}, tmp_path / "out")
    assert finetune(recipe).metrics["test"]["test_samples"] == 16  # the glob it names reads
