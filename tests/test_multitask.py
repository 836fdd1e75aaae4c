"""Multi-task (recipe `tasks:`): shared backbone, a head per task, per-task metrics and folders."""

import csv
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from hf_transfer import finetune
from hf_transfer.outputs.multitask import load_multitask
from hf_transfer.tasks import multitask
from hf_transfer.validate import load_recipe
from hf_transfer.errors import DataError, HubError, RecipeError, VerifyError
from hf_transfer.outputs.hub import push
from hf_transfer.outputs.verify import verify
from hf_transfer.recipe.schema import TaskConfig
from hf_transfer.train import load_splits
from hf_transfer.trainer import training_arguments
from tests.tiny import multitask_recipe, write_multitask_csv

SENTENCES = ["pain good great drug", "day awful terrible pain", "drug the was fine", "it worst day bad"]


@pytest.fixture(scope="module")
def mt_files(tmp_path_factory):
    return write_multitask_csv(tmp_path_factory.mktemp("mt-data"))


@pytest.fixture(scope="module")
def mt_run(tiny_bert, mt_files, tmp_path_factory):
    return finetune(multitask_recipe(tiny_bert, mt_files, tmp_path_factory.mktemp("mt") / "out"))


def in_memory(result, task):
    model, tok = result.trainer.model.eval(), result.trainer.processing_class
    with torch.no_grad():
        out = model(**tok(SENTENCES, return_tensors="pt", padding=True))
    logits = out.logits[[t.name for t in model.tasks].index(task)]
    return [model.heads[task].config.id2label[i] for i in logits.argmax(-1).tolist()]


def test_per_task_metrics_count_only_labelled_rows(mt_run, mt_files):
    rows = list(csv.DictReader(open(mt_files["test"], encoding="utf-8")))
    test = mt_run.metrics["test"]
    for task in ("sentiment", "topic"):
        for name in ("accuracy", "f1_macro", "precision_macro", "recall_macro"):
            assert 0 <= test[f"test_{task}_{name}"] <= 1, (task, name)
        assert f"eval_{task}_accuracy" in mt_run.metrics["validation"]
    assert test["test_sentiment_samples"] == len(rows)
    assert test["test_topic_samples"] == sum(1 for r in rows if r["topic"]) < len(rows)


def test_each_task_folder_reloads_with_pipeline_and_predicts_as_the_multitask_model(mt_run):
    from transformers import pipeline

    out = mt_run.output_dir
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    labels = {"sentiment": ["negative", "positive"], "topic": ["day", "drug", "other", "pain"]}  # `it`: 1 row -> other
    for task, names in labels.items():
        config = json.loads((out / task / "config.json").read_text())
        assert list(config["id2label"].values()) == names
        clf = pipeline("text-classification", model=str(out / task), device="cpu")
        assert [r["label"] for r in clf(SENTENCES)] == in_memory(mt_run, task), task


def test_saved_multitask_model_rebuilds_with_one_shared_backbone(mt_run):
    rebuilt = load_multitask(mt_run.output_dir)
    tok = mt_run.trainer.processing_class
    batch = tok(SENTENCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        new, old = rebuilt(**batch).logits, mt_run.trainer.model.eval()(**batch).logits
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(new, old))
    assert sum(p.numel() for p in rebuilt.parameters()) < 2 * sum(p.numel() for p in rebuilt.backbone.parameters())


def labelled(files, column: str) -> int:
    return sum(1 for r in csv.DictReader(open(files["test"], encoding="utf-8")) if r[column])


def test_verify_reloads_each_task_folder_and_reproduces_its_metrics(mt_run, mt_files, tmp_path):
    import shutil

    out = mt_run.output_dir
    result = verify(out)
    assert [part.folder for part in result.tasks] == [out / "sentiment", out / "topic"]
    for part, column in zip(result.tasks, ("label", "topic")):
        assert part.loader == "transformers.pipeline" and set(part.compared) == {"validation", "test"}
        test = part.compared["test"]
        assert test["samples"] == (labelled(mt_files, column),) * 2  # the task's labelled rows only
        assert test["accuracy"][0] == mt_run.metrics["test"][f"test_{part.folder.name}_accuracy"]
    [only] = verify(out / "topic").tasks
    assert only.folder == out / "topic" and only.compared == result.tasks[1].compared
    # a metric that the reloaded folder does not reproduce is named, with its task folder
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoints"))
    (copy / "recipe.yaml").write_text((out / "recipe.yaml").read_text().replace(str(out), str(copy)))
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["test"]["test_topic_f1_macro"] += 0.125
    (copy / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(VerifyError, match=rf"^{re.escape(str(copy / 'topic'))}: test split: test_topic_f1_macro is "):
        verify(copy)
    verify(copy / "sentiment")  # the other task still reproduces


def test_task_folders_get_a_card_and_a_report_of_their_task(mt_run):
    from huggingface_hub import ModelCard

    out, test = mt_run.output_dir, mt_run.metrics["test"]
    for task, other in (("sentiment", "topic"), ("topic", "sentiment")):
        card = ModelCard.load(out / task / "README.md")
        [result] = [r for r in card.data.eval_results if r.dataset_split == "test" and r.metric_type == "accuracy"]
        assert result.metric_value == test[f"test_{task}_accuracy"]
        assert f"- Multi-task: this is task `{task}` of a run that trained `sentiment` (column `label`, weight 1), " \
               "`topic` (column `topic`, weight 0.5) on one shared backbone" in card.text
        assert f'pipeline("text-classification", model="{out / task}")' in card.text
        assert "selected by validation `sentiment_accuracy`" in card.text
        assert f"{other}_f1_macro" not in card.text  # the other task's metrics are not this model's
        page = (out / task / "report.html").read_text()
        assert f"{test[f'test_{task}_accuracy']:.4f}" in page and "multi-task" in page
        assert f"{other}_f1_macro" not in page
    assert not (out / "README.md").exists()  # the root holds no model of its own


def test_collapse_is_flagged_per_task(mt_run):
    """Two training steps: the tiny run predicts one class; the flag names each split and task that did."""
    from huggingface_hub import ModelCard

    out, metrics = mt_run.output_dir, mt_run.metrics
    shares = {f"{role} ({task})": metrics[role][f"{prefix}_{task}_top_prediction_share"]
              for role, prefix in (("validation", "eval"), ("test", "test")) for task in ("sentiment", "topic")}
    expected = {name: share for name, share in shares.items() if share >= 0.95}
    assert expected and metrics["collapse"]["splits"] == expected  # before: never flagged for multi-task
    assert "tasks[i].weight" in metrics["collapse"]["hint"] and "class_weights" not in metrics["collapse"]["hint"]
    for task in ("sentiment", "topic"):
        card = ModelCard.load(out / task / "README.md").text
        assert ("## Warning: collapsed predictions" in card) == any(f"({task})" in k for k in expected), task


def test_evaluate_scores_a_task_folder_as_its_run_encoded_the_labels(mt_run, mt_files, tmp_path):
    from hf_transfer.outputs.evaluate import evaluate

    out, test = mt_run.output_dir, mt_run.metrics["test"]
    for task in ("sentiment", "topic"):  # topic: rows without a topic left out, the rare one as `other`
        [found] = evaluate(out / task, [mt_files["test"]]).values()
        assert found["metrics"] == {k.removeprefix(f"test_{task}_"): v for k, v in test.items()
                                    if k.startswith(f"test_{task}_")}, task
    both = evaluate(out, [mt_files["test"]])  # the root: every task
    assert list(both) == [f"{mt_files['test']} [sentiment]", f"{mt_files['test']} [topic]"]
    assert both[f"{mt_files['test']} [topic]"]["metrics"]["accuracy"] == test["test_topic_accuracy"]
    no_topic = tmp_path / "no-topic.csv"
    no_topic.write_text("review,label\npain was awful,negative\n")
    with pytest.raises(DataError, match=r"^tasks\[1\]\.label_column: column 'topic' not in split '.*no-topic.csv' "):
        evaluate(out / "topic", [no_topic])


def test_predict_reads_a_table_by_the_runs_text_column_for_a_task_folder(mt_run, mt_files):
    from hf_transfer.outputs.predict import predict

    texts = [r["review"] for r in csv.DictReader(open(mt_files["test"], encoding="utf-8"))]
    items, results = predict(mt_run.output_dir / "topic", [mt_files["test"]])
    assert items == texts and {row[0]["label"] for row in results} <= {"day", "drug", "other", "pain"}


def test_push_of_a_task_folder_uploads_it_with_its_card(mt_run, monkeypatch):
    from tests.test_hub import FakeHub

    monkeypatch.setenv("HF_TOKEN", "hf_SENTINELtoken0123456789abcdefABCDEF")
    hub = FakeHub().install(monkeypatch)
    push(mt_run.output_dir / "topic", "me/topic")
    [sent] = hub.uploads
    assert set(sent["files"]) == {"README.md", "config.json", "model.safetensors", "tokenizer.json",
                                  "tokenizer_config.json", "report.html"}
    assert "this is task `topic`" in sent["files"]["README.md"].decode()
    with pytest.raises(HubError, match=r"holds no model itself; its sub-folders do: .*/sentiment, .*/topic$"):
        push(mt_run.output_dir, "me/both")


def test_task_loss_ignores_missing_labels_and_weights_add_up():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0.0, math.nan, 2.0, math.nan])
    got = multitask.task_loss(logits, labels, "single_label_classification")
    assert torch.isclose(got, F.cross_entropy(logits[[0, 2]], torch.tensor([0, 2])))
    none = multitask.task_loss(logits, torch.full((4,), math.nan), "single_label_classification")
    assert none.item() == 0 and none.requires_grad
    reg = torch.randn(4, 1)
    assert torch.isclose(multitask.task_loss(reg, labels, "regression"), F.mse_loss(reg[[0, 2], 0], labels[[0, 2]]))
    tasks = [TaskConfig("a", "x", weight=1.0), TaskConfig("b", "y", weight=0.5, problem_type="regression")]
    both = torch.stack([labels, labels], dim=1)
    total = multitask.weighted_loss((logits, reg), both, tasks)
    assert torch.isclose(total, got + 0.5 * multitask.task_loss(reg, labels, "regression"))


@pytest.mark.parametrize("option, names", [
    ({"min_count": 2}, ["day", "drug", "other", "pain"]),            # `it` has one training row
    ({"min_count": 2, "rare": "ignore"}, ["day", "drug", "pain"]),
    ({"top_k": 2}, ["drug", "other", "pain"]),                       # 13, 13 and 12 rows: day is third
])
def test_rare_classes_map_to_other_or_are_ignored(option, names, tiny_bert, mt_files, tmp_path):
    raw = multitask_recipe(tiny_bert, mt_files, tmp_path)
    raw["tasks"][1] = {"name": "topic", "label_column": "topic", **option}
    loaded = load_splits(load_recipe(raw), seed=0)
    assert loaded.label_names == {"sentiment": ["negative", "positive"], "topic": names}
    rows = list(csv.DictReader(open(mt_files["train"], encoding="utf-8")))
    other = names.index("other") if "other" in names else math.nan

    def expected(topic):
        return math.nan if not topic else names.index(topic) if topic in names else other

    want = {r["review"]: expected(r["topic"]) for r in rows}
    train = loaded.splits["train"].to_list() + loaded.splits["validation"].to_list()
    assert len(train) == len(rows) and any(math.isnan(v) for v in want.values())
    for row in train:
        got, exp = row["labels"][1], want[row["review"]]
        assert got == exp or (math.isnan(got) and math.isnan(exp)), row["review"]


def test_metric_for_best_model_names_a_task_metric(tiny_bert, mt_files, tmp_path):
    raw = multitask_recipe(tiny_bert, mt_files, tmp_path)
    recipe = load_recipe(raw)
    assert training_arguments(recipe, tmp_path).metric_for_best_model == "sentiment_accuracy"
    raw["training"]["metric_for_best_model"] = "topic_f1_macro"
    args = training_arguments(load_recipe(raw), tmp_path)
    assert args.metric_for_best_model == "topic_f1_macro" and args.greater_is_better


@pytest.mark.parametrize("change, message", [
    ({"tasks": [{"name": "a", "label_column": "label"}, {"name": "a", "label_column": "topic"}]}, "tasks[1].name"),
    # its model went into checkpoints/, among Trainer's checkpoints
    ({"tasks": [{"name": "a", "label_column": "label"}, {"name": "checkpoints", "label_column": "topic"}]},
     "tasks[1].name: 'checkpoints' names a folder the run writes itself (checkpoints, compare, merged, onnx)"),
    ({"tasks": [{"name": "a", "label_column": "label", "weight": "x"}]}, "tasks[0].weight"),
    ({"tasks": [{"name": "a", "label_column": "label", "labels": 1}]}, "tasks[0].labels"),
    ({"tasks": [{"name": "a", "label_column": "label", "top_k": 0}]}, "tasks[0].top_k"),
    ({"tasks": [{"name": "a", "label_column": "label", "min_count": 2, "label_names": ["x"]}]}, "tasks[0].label_names"),
    ({"training.metric_for_best_model": "accuracy"}, "training.metric_for_best_model"),
    ({"finetune": {"strategy": "lora"}}, "tasks: multi-task runs with finetune.strategy"),
    ({"compare": ["scratch"]}, "tasks: not available with compare"),
    ({"data.class_weights": "auto"}, "tasks: not available with data.class_weights"),
    ({"distill": {"teacher": "some/teacher"}}, "tasks: not available with distill"),
    ({"hub": {"push": True, "repo_id": "me/x"}},
     "tasks: not available with hub.push: push each task's folder after training with hf-transfer push OUTPUT_DIR/TASK"),
    ({"data.label_names": ["a", "b"]}, "data.label_names: not used with tasks"),
])
def test_schema_errors_name_the_key(change, message, tiny_bert, mt_files, tmp_path):
    raw = multitask_recipe(tiny_bert, mt_files, tmp_path)
    for key, value in change.items():
        if "." in key:
            section, name = key.split(".", 1)
            raw[section][name] = value
        else:
            raw[key] = value
    with pytest.raises(RecipeError, match=r"^" + re.escape(message)):
        load_recipe(raw)


def test_tasks_without_multitask_are_refused_in_one_line(tiny_bert, mt_files, tmp_path):
    raw = multitask_recipe(tiny_bert, mt_files, tmp_path)
    raw["task"] = "token-classification"
    with pytest.raises(RecipeError, match=r"^tasks: multi-task runs on task text-classification, image-classification, "
                                          r"audio-classification, not 'token-classification'$"):
        load_recipe(raw)


def test_linear_probe_trains_only_the_heads(tiny_bert, mt_files, tmp_path):
    from safetensors.torch import load_file

    raw = multitask_recipe(tiny_bert, mt_files, tmp_path / "out")
    raw["finetune"] = {"strategy": "partial", "freeze": "backbone"}
    result = finetune(raw)
    assert result.metrics["trainable_parameters"] == (32 * 2 + 2) + (32 * 4 + 4)  # two Linear heads
    before = load_file(tiny_bert / "model.safetensors")
    for task in ("sentiment", "topic"):
        after = load_file(tmp_path / "out" / task / "model.safetensors")
        assert all(torch.equal(before[k], after[f"bert.{k}"]) for k in before), task
