"""Distillation on unlabelled transfer data (`distill.unlabelled`) on tiny models built in code: the extra
rows reach the loss only through the KL term, with cached teacher logits (text, vision without
augmentation) and with the teacher run per batch (augmented vision)."""

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from hf_transfer import finetune, train
from hf_transfer.errors import DataError, RecipeError
from hf_transfer.objectives.distill import TEACHER_COLUMN, UNLABELLED, labelled_only
from hf_transfer.validate import load_recipe
from tests.test_vision import images, tiny_resnet  # noqa: F401 - the tiny timm model and images (fixtures)
from tests.tiny import text_recipe
from tests.tiny_vision import vision_recipe

ALPHA, T = 0.3, 2.0


@pytest.fixture(scope="module")
def text_teacher(tiny_bert, sentiment_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "out"
    finetune(text_recipe(tiny_bert, sentiment_files, out))
    return out


@pytest.fixture(scope="module")
def vision_teacher(tiny_resnet, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("vision-teacher") / "out"
    finetune(vision_recipe(tiny_resnet, images, out))
    return out


def _flipped_labels(source: str, dest) -> str:
    """A copy of a csv whose `label` column is the other class on every row."""
    with open(source, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    flip = {"positive": "negative", "negative": "positive"}
    with open(dest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "label": flip[row["label"]]} for row in rows)
    return str(dest)


def _text_recipe(tiny_bert, sentiment_files, teacher, out, unlabelled_file: str, **distill):
    recipe = text_recipe(tiny_bert, sentiment_files, out)
    recipe["distill"] = {"teacher": str(teacher), "alpha": ALPHA, "temperature": T, **distill,
                         "unlabelled": {"path": "csv", "data_files": {"train": unlabelled_file}, "max_samples": 10}}
    return recipe


def _expected(logits, labels, teacher_logits):
    """alpha * CE over the labelled rows + (1 - alpha) * T^2 * KL averaged over every row."""
    keep = labels != UNLABELLED
    ce = F.cross_entropy(logits[keep], labels[keep]) if keep.any() else torch.tensor(0.0)
    kl = F.kl_div(F.log_softmax(logits / T, -1), F.log_softmax(teacher_logits / T, -1), log_target=True,
                  reduction="batchmean")
    return ALPHA * ce + (1 - ALPHA) * T * T * kl


def test_text_unlabelled_rows_count_only_in_the_kl_term(tiny_bert, sentiment_files, text_teacher, tmp_path):
    from transformers import AutoModelForSequenceClassification

    recipe = _text_recipe(tiny_bert, sentiment_files, text_teacher, tmp_path / "out", sentiment_files["test"])
    trainer, splits = train.build_trainer(load_recipe(recipe), tmp_path / "built")
    labelled = trainer.train_examples
    assert len(splits["train"]) == labelled + 10 and trainer.hooks.metrics == {"unlabelled_examples": 10}
    assert trainer.hooks.batch_columns == [TEACHER_COLUMN]  # text: the teacher's logits are cached
    rows = [splits["train"][i] for i in (0, 1, labelled, labelled + 1, labelled + 2)]
    assert [r["labels"] for r in rows[2:]] == [UNLABELLED] * 3  # the test file's labels are not used
    batch = trainer.data_collator(rows)
    teacher = AutoModelForSequenceClassification.from_pretrained(text_teacher).eval()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", TEACHER_COLUMN)}
    with torch.no_grad():  # the cached logits of the unlabelled rows are the teacher's predictions too
        assert torch.allclose(batch[TEACHER_COLUMN], teacher(**inputs).logits, atol=1e-5)

    model = trainer.model.train()
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    expected = _expected(outputs.logits.detach(), batch["labels"], batch[TEACHER_COLUMN])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)

    # other teacher logits for the unlabelled rows change the loss by the KL term's change alone
    changed = dict(batch, **{TEACHER_COLUMN: batch[TEACHER_COLUMN].clone()})
    changed[TEACHER_COLUMN][2:] = torch.tensor([5.0, -5.0])
    loss2, outputs2 = trainer.compute_loss(model, dict(changed), return_outputs=True)
    assert not torch.isclose(loss2, loss)
    assert loss2.item() == pytest.approx(_expected(outputs2.logits.detach(), batch["labels"],
                                                   changed[TEACHER_COLUMN]).item(), rel=1e-4)
    # and their gradients reach the student only through that term
    student = outputs.logits.detach().requires_grad_()
    trainer.compute_loss_func({"logits": student}, batch["labels"]).backward()
    assert student.grad[2:].abs().sum() == 0 and student.grad[:2].abs().sum() > 0


def test_text_unlabelled_labels_are_never_read(tiny_bert, sentiment_files, text_teacher, tmp_path):
    """The same inputs with every label flipped train the same student, and metrics.json counts them."""
    flipped = _flipped_labels(sentiment_files["test"], tmp_path / "flipped.csv")
    results = [finetune(_text_recipe(tiny_bert, sentiment_files, text_teacher, tmp_path / name, source))
               for name, source in (("a", sentiment_files["test"]), ("b", flipped))]
    losses = [r.metrics["train"]["train_loss"] for r in results]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["unlabelled_examples"] == 10 and saved["train_examples"] == results[0].trainer.train_examples


def test_labelled_only_skips_unlabelled_rows_in_every_loss_path():
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5], [0.0, 1.0], [4.0, -4.0]], requires_grad=True)
    labels = torch.tensor([0, UNLABELLED, 1, UNLABELLED])
    keep = labels != UNLABELLED
    got = labelled_only(None)({"logits": logits}, labels)
    assert got.item() == pytest.approx(F.cross_entropy(logits[keep], labels[keep]).item())
    smoothed = labelled_only(None, 0.2)({"logits": logits}, labels)  # training.label_smoothing_factor
    assert smoothed.item() == pytest.approx(F.cross_entropy(logits[keep], labels[keep], label_smoothing=0.2).item())
    weights = torch.tensor([1.0, 3.0])  # data.class_weights
    weighted = labelled_only(lambda out, y: F.cross_entropy(out["logits"], y, weight=weights))
    assert weighted({"logits": logits}, labels).item() == pytest.approx(
        F.cross_entropy(logits[keep], labels[keep], weight=weights).item())
    none = labelled_only(None)({"logits": logits}, torch.full((4,), UNLABELLED))  # a batch of unlabelled rows
    assert none.item() == 0.0 and none.requires_grad
    none.backward()
    assert logits.grad.abs().sum() == 0


def test_vision_augmented_runs_the_teacher_per_batch_on_unlabelled_rows(tiny_resnet, images, vision_teacher, tmp_path):
    recipe = vision_recipe(tiny_resnet, images, tmp_path / "out")
    # the test images carry folder labels: they are dropped
    recipe["distill"] = {"teacher": str(vision_teacher), "alpha": ALPHA, "temperature": T,
                         "unlabelled": {"path": "imagefolder", "data_files": {"train": images["test"]}}}
    trainer, splits = train.build_trainer(load_recipe(recipe), tmp_path / "built")
    labelled = trainer.train_examples
    assert trainer.hooks.batch_columns == [] and len(splits["train"]) == labelled + 12
    batch = trainer.data_collator(splits["train"].__getitems__([0, labelled, labelled + 5, 1]))
    assert batch["labels"].tolist()[1:3] == [UNLABELLED] * 2
    model = trainer.model.train()
    from hf_transfer.objectives.distill import load_teacher
    from hf_transfer.tasks import resolve

    task, spec = resolve(load_recipe(recipe))
    teacher = load_teacher(str(vision_teacher), task, spec, trainer.class_names)
    with torch.no_grad():
        expected_teacher = teacher(pixel_values=batch["pixel_values"]).logits
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    expected = _expected(outputs.logits.detach(), batch["labels"], expected_teacher)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)

    result = finetune(recipe)
    assert result.metrics["unlabelled_examples"] == 12 and result.metrics["train"]["train_loss"] > 0
    card = (result.output_dir / "README.md").read_text()
    assert "- Unlabelled inputs labelled by the teacher: `" in card and "(12 examples)" in card


def test_vision_without_augmentation_caches_the_unlabelled_logits(tiny_resnet, images, vision_teacher, tmp_path):
    recipe = vision_recipe(tiny_resnet, images, tmp_path / "out")
    recipe["vision"] |= {"random_resized_crop": False, "hflip": 0.0}
    recipe["distill"] = {"teacher": str(vision_teacher),
                         "unlabelled": {"path": "imagefolder", "data_files": {"train": images["test"]},
                                        "max_samples": 5}}
    trainer, splits = train.build_trainer(load_recipe(recipe), tmp_path / "built")
    assert trainer.hooks.batch_columns == [TEACHER_COLUMN]
    labelled = trainer.train_examples
    batch = trainer.data_collator(splits["train"].__getitems__([labelled, labelled + 4]))
    from hf_transfer.objectives.distill import load_teacher, load_unlabelled, teacher_spec
    from hf_transfer.tasks import resolve
    from hf_transfer.tasks.images import eval_transform

    built = load_recipe(recipe)
    task, spec = resolve(built)
    teacher = load_teacher(str(vision_teacher), task, spec, trainer.class_names)
    raw = load_unlabelled(built.distill.unlabelled, task, spec).select([0, 4])
    assert raw.column_names == ["image", "labels"] and raw["labels"] == [UNLABELLED] * 2
    pixels = eval_transform(task.load_processor(teacher_spec(spec, str(vision_teacher))))
    with torch.no_grad():  # the teacher's own evaluation preprocessing of the unlabelled images
        expected = teacher(pixel_values=torch.stack(pixels([im.convert("RGB") for im in raw["image"]]))).logits
    assert torch.allclose(batch[TEACHER_COLUMN], expected, atol=1e-5)
    assert len(splits["train"]) == labelled + 5


def test_unlabelled_one_line_errors(tiny_bert, sentiment_files, text_teacher, tiny_resnet, images, vision_teacher,
                                    tmp_path):
    recipe = _text_recipe(tiny_bert, sentiment_files, text_teacher, tmp_path / "out", sentiment_files["test"])
    recipe["data"]["text_column"] = "review"
    bad = tmp_path / "no-review.csv"
    bad.write_text("text,label\nfine,positive\n", encoding="utf-8")
    recipe["distill"]["unlabelled"]["data_files"] = {"train": str(bad)}
    with pytest.raises(DataError, match=r"^distill.unlabelled: column 'review' \(data.text_column\) not in the split"):
        finetune(recipe)
    recipe["distill"]["unlabelled"]["data_files"] = {"train": str(tmp_path / "missing.csv")}
    with pytest.raises(DataError, match="^distill.unlabelled.data_files.train: file not found"):
        finetune(recipe)
    recipe["distill"]["unlabelled"] = {"path": "csv", "max_samples": 0}
    with pytest.raises(RecipeError, match="^distill.unlabelled.max_samples: must be >= 1, got 0"):
        load_recipe(recipe)
    recipe["distill"]["unlabelled"] = {"path": "csv", "eval_split": "test"}
    with pytest.raises(RecipeError, match="^distill.unlabelled.eval_split: unknown key"):
        load_recipe(recipe)
    recipe["distill"]["unlabelled"] = {"path": "csv", "data_files": {"train": sentiment_files["test"]}}
    recipe["data"]["problem_type"] = "multi_label_classification"
    with pytest.raises(RecipeError, match="^distill: needs data.problem_type single_label_classification"):
        load_recipe(recipe)

    vision = vision_recipe(tiny_resnet, images, tmp_path / "v")
    vision["vision"] |= {"mixup_alpha": 0.4}
    vision["distill"] = {"teacher": str(vision_teacher),
                         "unlabelled": {"path": "imagefolder", "data_files": {"train": images["test"]}}}
    with pytest.raises(RecipeError, match="^distill.unlabelled: not available with mixup / cutmix"):
        finetune(vision)


def test_seeds_and_labels_only_comparison_combine_with_unlabelled(tiny_bert, sentiment_files, text_teacher, tmp_path):
    """The distillation recipes' shape: seeds x (distilled, labels_only) into one report with intervals."""
    out = tmp_path / "o"
    recipe = _text_recipe(tiny_bert, sentiment_files, text_teacher, out, sentiment_files["test"])
    recipe |= {"seeds": [1, 2], "compare": [{"labels_only": {"distill": None}}]}
    result = finetune(recipe)
    for seed in (1, 2):
        assert json.loads((out / f"seed-{seed}/metrics.json").read_text())["unlabelled_examples"] == 10
        alone = json.loads((out / f"seed-{seed}/compare/labels_only/metrics.json").read_text())
        assert "unlabelled_examples" not in alone
    runs = {r["name"]: r for r in result.report["runs"]}
    assert list(runs) == ["main", "labels_only"] and runs["labels_only"]["vs_main"]["verdict"] is not None
    assert runs["main"]["interval"]["seeds"] == 2


def test_resume_continues_a_run_with_unlabelled_rows(tiny_bert, sentiment_files, text_teacher, tmp_path):
    recipe = _text_recipe(tiny_bert, sentiment_files, text_teacher, tmp_path / "out", sentiment_files["test"])
    recipe["training"] |= {"max_steps": 3, "save_steps": 2, "eval_steps": 2}
    whole = finetune(recipe).metrics
    checkpoint = tmp_path / "out" / "checkpoints" / "checkpoint-3"
    assert checkpoint.is_dir()
    import shutil

    shutil.rmtree(checkpoint)  # as if stopped after step 2: --resume continues from checkpoint-2
    (tmp_path / "out" / "metrics.json").unlink()
    resumed = finetune(recipe, resume=True).metrics
    assert resumed["unlabelled_examples"] == 10 and resumed["train"]["epoch"] == whole["train"]["epoch"]
    assert resumed["test"]["test_accuracy"] == pytest.approx(whole["test"]["test_accuracy"])
