"""`verify` (reload as a Hub user would, in a process without hf_transfer) and `predict`."""

import ast
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from hf_transfer import finetune
from hf_transfer.cli import main
from hf_transfer.errors import HfTransferError, VerifyError
from hf_transfer.outputs.hubuser import FolderError, load_pipeline
from hf_transfer.outputs.verify import hub_user_task
from hf_transfer.tasks import TASKS
from hf_transfer.outputs.predict import predict
from hf_transfer.outputs.verify import compare, verify
from tests.tiny import text_recipe

LABELS = ["negative", "positive"]
TEXT_TASK = hub_user_task(TASKS["text-classification"])


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def runs(tiny_bert, sentiment_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip")
    logs = Lines()
    logger = logging.getLogger("hf_transfer.runs.single")
    logger.addHandler(logs)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        recipe = text_recipe(tiny_bert, sentiment_files, root / "full")
        recipe["verify"] = True  # the automatic check after training
        finetune(recipe)
    finally:
        logger.removeHandler(logs)
        logger.setLevel(old_level)
    finetune(text_recipe(tiny_bert, sentiment_files, root / "lora", strategy="lora", r=2))
    return {"full": root / "full", "lora": root / "lora", "logs": logs.lines}


def copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def test_verify_runs_after_training_and_reproduces_the_metrics(runs):
    [line] = [ln for ln in runs["logs"] if ln.startswith("verify:")]
    assert "reloads with transformers.pipeline (text-classification)" in line
    assert re.search(r"validation: \d+ metrics reproduced", line) and re.search(r"test: \d+ metrics reproduced", line)


def test_verify_lora_reloads_through_autopeftmodel_exactly(runs):
    result = verify(runs["lora"])
    assert result.loader == "peft.AutoPeftModelForSequenceClassification"
    metrics = json.loads((runs["lora"] / "metrics.json").read_text())
    assert set(result.compared) == {"validation", "test"}
    for role, prefix in (("validation", "eval"), ("test", "test")):
        pairs = result.compared[role]
        assert set(pairs) >= {"accuracy", "f1_macro", "precision_macro", "recall_macro"}
        for key, (saved, reloaded) in pairs.items():
            assert saved == metrics[role][f"{prefix}_{key}"] and reloaded == saved  # exact, no tolerance


def test_pipeline_logits_are_bit_identical_to_the_trainers(runs, tmp_path):
    """Why verify needs no tolerance: same batches, same padding, same kernels as Trainer.predict."""
    import numpy as np
    from transformers import Trainer, TrainingArguments

    from hf_transfer.tasks import text_classification as text
    from hf_transfer.validate import load_recipe
    from hf_transfer.outputs.hubuser import logits
    from hf_transfer.tasks import resolve
    from hf_transfer.tasks.data import load_data

    recipe = load_recipe(runs["lora"] / "recipe.yaml")
    task, spec = resolve(recipe)
    splits = load_data(recipe.data, text.input_columns(spec), recipe.training["seed"], task.labeler(spec)).splits
    pipe = load_pipeline(runs["lora"], hub_user_task(task), "cpu", LABELS)
    batch = recipe.training["per_device_eval_batch_size"]
    got = logits(pipe, list(splits["test"]["review"]), batch, truncation=True, max_length=recipe.model.max_length)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=batch, use_cpu=True, report_to="none")
    trainer = Trainer(model=pipe.model, args=args, data_collator=text.collator(pipe.tokenizer))
    expected = trainer.predict(text.preprocess(splits, pipe.tokenizer, spec)["test"]).predictions
    assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_verify_fails_loudly_when_the_head_was_not_saved(runs, tmp_path, capsys):
    folder = copy(runs["full"], tmp_path)
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")},
              folder / "model.safetensors", metadata={"format": "pt"})
    assert main(["verify", str(folder)]) == 2
    [err] = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]  # one line, no traceback
    assert err.startswith("hf-transfer: error: ")
    assert "weights missing from the saved model (classifier.bias, classifier.weight)" in err


def test_corrupted_id2label_is_caught_on_reload(runs, tmp_path):
    folder = copy(runs["full"], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "LABEL_0", "1": "LABEL_1"}
    config["label2id"] = {"LABEL_0": 0, "LABEL_1": 1}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FolderError, match=r"id2label is \['LABEL_0', 'LABEL_1'\], expected the run's labels"):
        load_pipeline(folder, TEXT_TASK, "cpu", LABELS)


def test_lora_head_not_saved_is_caught_on_reload(runs, tmp_path):
    folder = copy(runs["lora"], tmp_path)
    weights = load_file(folder / "adapter_model.safetensors")
    save_file({k: v for k, v in weights.items() if "classifier" not in k}, folder / "adapter_model.safetensors")
    with pytest.raises(FolderError, match=r"no head \(classifier or score, the adapter's modules_to_save\) was saved"):
        load_pipeline(folder, TEXT_TASK, "cpu", LABELS)


def test_lora_weights_that_do_not_load_are_caught(runs, tmp_path):
    folder = copy(runs["lora"], tmp_path)
    weights = load_file(folder / "adapter_model.safetensors")
    renamed = {k.replace(".query.", ".querx."): v for k, v in weights.items()}  # no longer matches a layer
    assert renamed.keys() != weights.keys()
    save_file(renamed, folder / "adapter_model.safetensors")
    with pytest.raises(FolderError, match="the adapter is not applied on reload"):
        load_pipeline(folder, TEXT_TASK, "cpu", LABELS)


def test_compare_is_exact_by_default():
    saved = {"test_accuracy": 0.75, "test_f1_macro": 0.5}
    assert compare(saved, {"accuracy": 0.75, "f1_macro": 0.5}, "test", 0.0)["accuracy"] == (0.75, 0.75)
    with pytest.raises(VerifyError, match="test_accuracy is 0.7500000001 after reloading but 0.75 in metrics.json"):
        compare(saved, {"accuracy": 0.7500000001}, "test", 0.0)
    compare(saved, {"accuracy": 0.7500000001}, "test", 1e-6)
    with pytest.raises(VerifyError, match="no test_mse"):
        compare(saved, {"mse": 1.0}, "test", 0.0)


def test_verify_refuses_an_unfinished_folder(tmp_path):
    with pytest.raises(VerifyError, match="no metrics.json; not a finished hf-transfer run"):
        verify(tmp_path)


def test_the_hub_user_side_never_imports_hf_transfer():
    source = (Path(__file__).parents[1] / "hf_transfer" / "outputs" / "hubuser.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert "hf_transfer" not in imported and imported <= {
        "json", "sys", "pathlib", "contextlib", "transformers", "peft", "torch", "safetensors", "numpy", "datasets",
        "huggingface_hub"}  # transformers' own dependency


def test_predict_texts_and_a_file_with_top_k(runs, tmp_path):
    from transformers import pipeline

    lines = tmp_path / "reviews.txt"
    lines.write_text("awful terrible pain\n\nthe drug was fine\n")
    items, results = predict(runs["full"], ["good great drug", str(lines)], top_k=2, batch_size=2)
    assert items == ["good great drug", "awful terrible pain", "the drug was fine"]
    assert all([r["label"] for r in row] in (LABELS, LABELS[::-1]) for row in results)
    assert all(row[0]["score"] >= row[1]["score"] for row in results)
    plain = pipeline("text-classification", model=str(runs["full"]), device="cpu")(items)
    assert [row[0]["label"] for row in results] == [p["label"] for p in plain]


def test_predict_cli_prints_labels_and_scores(runs, capsys):
    assert main(["predict", str(runs["lora"]), "good great drug", "worst day bad", "--top-k", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[0].endswith("\tgood great drug")
    assert all("negative" in ln and "positive" in ln for ln in out)
    assert main(["predict", str(runs["full"]), "good", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["input"] == "good" and row["predictions"][0]["label"] in LABELS


def test_predict_reads_the_text_column_of_a_table(runs, sentiment_files, tmp_path, capsys):
    import csv
    from types import SimpleNamespace

    import pandas as pd

    from hf_transfer.outputs.predict import shown_input, table_texts

    rows = list(csv.DictReader(open(sentiment_files["test"], encoding="utf-8")))
    texts = [r["review"] for r in rows]
    items, results = predict(runs["full"], [sentiment_files["test"], "good great drug"])
    assert items == [*texts, "good great drug"]  # before: the header line, then each raw line with its labels
    assert results == predict(runs["full"], [*texts, "good great drug"])[1]
    frame = pd.DataFrame(rows)
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    for table in ("t.jsonl", "t.parquet", "t.tsv"):
        assert predict(runs["full"], [str(tmp_path / table)])[0] == texts, table
    assert predict(runs["full"], [str(tmp_path / "t.parquet")], text_column="label")[0] == [r["label"] for r in rows]
    spec = SimpleNamespace(data=SimpleNamespace(text_column="review", text_pair_column="label"))
    pairs = table_texts(Path(sentiment_files["test"]), spec, None)
    assert pairs[0] == {"text": texts[0], "text_pair": rows[0]["label"]}
    assert shown_input(pairs[0]) == f"{texts[0]}\t{rows[0]['label']}"
    capsys.readouterr()  # what loading the models printed
    # one line naming what is wrong
    assert main(["predict", str(runs["full"]), sentiment_files["test"], "--text-column", "nope"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"hf-transfer: error: predict: {sentiment_files['test']}: no column 'nope' (--text-column; the table's "
        "columns: review, label, score, is_good, is_bad)")
    holes = tmp_path / "holes.csv"
    holes.write_text("review,label\ngood,positive\n,negative\n")
    assert main(["predict", str(runs["full"]), str(holes)]) == 2
    assert capsys.readouterr().err.startswith(
        f"hf-transfer: error: predict: {holes}: data.text_column: a text in column 'review' is empty")
    plain = copy(runs["full"], tmp_path)  # a model folder without a recipe: which column is the text?
    (plain / "recipe.yaml").unlink()
    (plain / "metrics.json").unlink()
    assert main(["predict", str(plain), sentiment_files["test"]]) == 2
    assert capsys.readouterr().err.strip() == (
        f"hf-transfer: error: predict: {sentiment_files['test']} is a table with columns review, label, score, "
        "is_good, is_bad; name the one to classify with --text-column")
    # from Python: a DataFrame is one table (before: its column names were classified as texts)
    assert predict(runs["full"], frame)[0] == texts
    with pytest.raises(HfTransferError, match=r"^predict: the table: no column 'review' \(data.text_column; the "
                                              r"table's columns: label\); name another with text_column=$"):
        predict(runs["full"], frame[["label"]])
    one = tmp_path / "one.csv"
    frame[["review"]].to_csv(one, index=False)
    assert predict(plain, [str(one)])[0] == texts  # its one text column


def test_predict_on_a_folder_that_is_not_a_model(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "text"]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def test_predict_has_an_input_reader_for_every_task_the_hub_user_side_loads():
    from hf_transfer.outputs.predict import READERS
    from hf_transfer.tasks import TASKS
    from hf_transfer.tasks.inputs import file_inputs

    assert set(READERS) == {task.pipeline_task for task in TASKS.values()}
    with pytest.raises(Exception, match="input file not found: nope.png"):
        file_inputs(["nope.png"], (".png",), "image")
