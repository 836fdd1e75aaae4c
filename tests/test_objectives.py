"""Class weights, distillation and domain adaptation end to end on tiny models (2 training steps)."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from hf_transfer import finetune, train
from hf_transfer.validate import load_recipe
from hf_transfer.objectives.distill import TEACHER_COLUMN
from hf_transfer.objectives.domain import head_layer
from hf_transfer.errors import DataError, ModelError, RecipeError
from tests.tiny import save_tiny_audio_model, speech_recipe, text_recipe, write_audio_data
from tests.test_vision import images, tiny_resnet  # noqa: F401 - the tiny timm model and images (fixtures)
from tests.tiny_vision import vision_recipe


@pytest.fixture(scope="module")
def text_teacher(tiny_bert, sentiment_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "out"
    finetune(text_recipe(tiny_bert, sentiment_files, out))
    return out


def test_class_weights_reach_the_trainer_loss(tiny_bert, sentiment_files, tmp_path):
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["data"] |= {"class_weights": "auto", "max_train_samples": 9}  # an uneven count of each label
    result = finetune(recipe)
    labels = result.trainer.train_dataset["labels"]
    counts = [labels.count(k) for k in (0, 1)]
    inverse = [1 / c for c in counts]
    weights = torch.tensor([w / (sum(inverse) / 2) for w in inverse])
    logits, y = torch.tensor([[0.3, -1.0], [2.0, 0.5], [0.0, 1.0]]), torch.tensor([0, 1, 1])
    got = result.trainer.compute_loss_func({"logits": logits}, y)
    assert got.item() == pytest.approx(F.cross_entropy(logits, y, weight=weights).item())
    assert counts[0] != counts[1]

    recipe["data"]["class_weights"] = [1.0, 2.0, 3.0]
    recipe["data"]["label_names"] = None
    recipe["training"]["output_dir"] = str(tmp_path / "bad")
    with pytest.raises(DataError, match="data.class_weights: 3 weights for 2 labels"):
        finetune(recipe)


def test_class_weights_combine_with_mixup(tiny_resnet, images, tmp_path):
    recipe = vision_recipe(tiny_resnet, images, tmp_path / "out")
    recipe["vision"] |= {"mixup_alpha": 0.4}
    recipe["data"]["class_weights"] = [1.0, 2.0, 0.5]
    result = finetune(recipe)
    logits = torch.randn(4, 3)
    soft = torch.softmax(torch.randn(4, 3), -1)  # mixup / cutmix targets
    got = result.trainer.compute_loss_func({"logits": logits}, soft)
    expected = -(torch.tensor([1.0, 2.0, 0.5]) * soft * logits.log_softmax(-1)).sum(-1).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_distill_text_caches_the_teacher_logits_and_cuts_the_student(
        tiny_bert, sentiment_files, text_teacher, tmp_path):
    from transformers import AutoModelForSequenceClassification

    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["model"]["config_overrides"] = {"num_hidden_layers": 1}
    recipe["distill"] = {"teacher": str(text_teacher), "alpha": 0.3, "temperature": 2.0}
    trainer, splits = train.build_trainer(load_recipe(recipe), tmp_path / "built")
    assert trainer.hooks.batch_columns == [TEACHER_COLUMN]
    # the cached logits are the teacher's own predictions for the training examples, in order
    teacher = AutoModelForSequenceClassification.from_pretrained(text_teacher).eval()
    rows = [splits["train"][i] for i in range(3)]
    batch = trainer.data_collator(rows)
    with torch.no_grad():
        expected = teacher(**{k: v for k, v in batch.items() if k not in ("labels", TEACHER_COLUMN)}).logits
    assert torch.allclose(batch[TEACHER_COLUMN], expected, atol=1e-5)
    # the loss the Trainer trains on is alpha * CE + (1 - alpha) * T^2 * KL, computed from those logits
    model = trainer.model.train()
    torch.manual_seed(0)
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    ce = F.cross_entropy(outputs.logits, batch["labels"])
    t = 2.0
    kl = F.kl_div(F.log_softmax(outputs.logits / t, -1), F.log_softmax(expected / t, -1), log_target=True,
                  reduction="batchmean")
    assert loss.item() == pytest.approx((0.3 * ce + 0.7 * t * t * kl).item(), rel=1e-4)

    result = finetune(recipe)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 1
    assert f"- Distilled from: `{text_teacher}` (alpha 0.3, temperature 2.0)" in (tmp_path / "out" / "README.md").read_text()
    assert result.metrics["test"]["test_samples"] == 16


def test_distill_vision_with_augmentation_runs_the_teacher_per_batch(tiny_resnet, images, tmp_path):
    teacher = tmp_path / "teacher"
    finetune(vision_recipe(tiny_resnet, images, teacher))  # a timm folder
    recipe = vision_recipe(tiny_resnet, images, tmp_path / "out")
    recipe["distill"] = {"teacher": str(teacher), "alpha": 0.5}
    trainer, _ = train.build_trainer(load_recipe(recipe), tmp_path / "built")
    assert trainer.hooks.batch_columns == [] and len(trainer.hooks.objectives) == 1  # random crops: on the fly
    recipe["distill"]["cache_logits"] = True
    with pytest.raises(RecipeError, match="distill.cache_logits: the training inputs are augmented randomly"):
        train.build_trainer(load_recipe(recipe), tmp_path / "built")
    recipe["distill"]["cache_logits"] = None
    recipe["vision"] |= {"random_resized_crop": False, "hflip": 0.0}  # deterministic: cached
    result = finetune(recipe)
    assert result.trainer.hooks.batch_columns == [TEACHER_COLUMN]
    assert result.metrics["train"]["train_loss"] > 0


def test_distill_refuses_a_teacher_with_other_labels(tiny_bert, sentiment_files, tmp_path, images, tiny_resnet):
    teacher = tmp_path / "teacher"
    finetune(vision_recipe(tiny_resnet, images, teacher))  # 3 classes
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["distill"] = {"teacher": str(teacher)}
    with pytest.raises(ModelError, match="distill.teacher: .* predicts 3 labels, the student 2"):
        finetune(recipe)


def test_distill_refuses_a_text_teacher_that_cannot_read_the_inputs(tiny_bert, sentiment_files, text_teacher, tmp_path):
    """A teacher with fewer positions than model.max_length, and one run on the student's token ids (cache_logits:
    false) whose vocabulary is another: one line before training, not a traceback or logits of the wrong tokens."""
    import shutil

    from transformers import AutoConfig, BertForSequenceClassification, BertTokenizer

    from tests.tiny import SPECIALS, WORDS

    short = Path(shutil.copytree(text_teacher, tmp_path / "short"))
    config = AutoConfig.from_pretrained(short)
    config.max_position_embeddings = 8
    BertForSequenceClassification(config).save_pretrained(short)
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")  # max_length 16
    recipe["distill"] = {"teacher": str(short)}
    with pytest.raises(RecipeError, match=f"model.max_length: 16 tokens, but '{short}' has position embeddings for 8"):
        finetune(recipe)

    other = Path(shutil.copytree(text_teacher, tmp_path / "other"))
    tokens = SPECIALS + WORDS[::-1]  # the same size, other ids
    BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(other)
    recipe["distill"] = {"teacher": str(other), "cache_logits": False}
    with pytest.raises(RecipeError, match="distill.cache_logits: false runs the teacher .* tokenizer is not the student's"):
        train.build_trainer(load_recipe(recipe), tmp_path / "built")
    recipe["distill"]["cache_logits"] = None  # cached: the teacher reads the texts through its own tokenizer
    trainer, _ = train.build_trainer(load_recipe(recipe), tmp_path / "built2")
    assert trainer.hooks.batch_columns == [TEACHER_COLUMN]
    recipe["distill"]["teacher"] = str(text_teacher)  # the student's own tokenizer: per batch is fine
    recipe["distill"]["cache_logits"] = False
    trainer, _ = train.build_trainer(load_recipe(recipe), tmp_path / "built3")
    assert trainer.hooks.batch_columns == [] and len(trainer.hooks.objectives) == 1


def _saved_keys(out: Path) -> set[str]:
    return set(load_file(out / "model.safetensors"))


def test_dann_text_trains_the_domain_classifier_and_does_not_save_it(tiny_bert, sentiment_files, tmp_path):
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "dann")
    recipe["domain"] = {"method": "dann", "hidden_size": 8,
                        "target": {"path": "csv", "data_files": {"test": sentiment_files["test"]}, "split": "test"}}
    trainer, splits = train.build_trainer(load_recipe(recipe), tmp_path / "built")
    classifier = trainer.hooks.extra_modules[0]
    before = [p.detach().clone() for p in classifier.parameters()]
    trainer.train()
    groups = [g for g in trainer.optimizer.param_groups if g.get("hf_extra")]
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == {id(p) for p in classifier.parameters()}
    assert any(not torch.equal(a, b) for a, b in zip(before, classifier.parameters()))
    assert len(splits["target"]) == 16

    result = finetune(recipe)
    assert result.metrics["target"]["target_samples"] == 16
    plain = text_recipe(tiny_bert, sentiment_files, tmp_path / "plain")
    finetune(plain)
    assert _saved_keys(tmp_path / "dann") == _saved_keys(tmp_path / "plain")


def test_domain_loss_is_added_to_the_task_loss(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.objectives.losses import mmd2

    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["domain"] = {"method": "mmd", "weight": 2.0,
                        "target": {"path": "csv", "data_files": {"test": sentiment_files["test"]}, "split": "test"}}
    trainer, splits = train.build_trainer(load_recipe(recipe), tmp_path / "built")
    model = trainer.model.eval()  # no dropout: the same features in both forwards
    model.train = lambda mode=True: model  # keep eval mode but let compute_loss see `training`
    model.training = True
    batch = trainer.data_collator([splits["train"][i] for i in range(4)])
    objective = trainer.hooks.objectives[0]
    target = next(objective.batches)
    objective.batches = iter([target])
    loss = trainer.compute_loss(model, dict(batch))
    layer = head_layer(model)
    feats = []
    hook = layer.register_forward_pre_hook(lambda m, a: feats.append(a[0]))
    with torch.no_grad():
        task = F.cross_entropy(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"])
        model(**{k: v for k, v in target.items() if k != "labels"})
    hook.remove()
    assert loss.item() == pytest.approx((task + 2.0 * mmd2(feats[0], feats[1])).item(), rel=1e-5)


@pytest.mark.parametrize("method", ["dann", "mmd"])
def test_domain_adaptation_on_timm(method, tiny_resnet, images, tmp_path):
    recipe = vision_recipe(tiny_resnet, images, tmp_path / "out")
    target = {"path": "imagefolder", "data_files": {"test": images["test"]}, "split": "test"}
    recipe["domain"] = {"method": method, "target": target}
    result = finetune(recipe)
    assert result.metrics["target"]["target_samples"] == 12
    assert (tmp_path / "out" / "config.json").is_file()  # timm's own format, as without domain


def test_mmd_on_speech_with_unlabelled_target(tmp_path):
    model = save_tiny_audio_model(tmp_path / "w2v", "wav2vec2")
    files = write_audio_data(tmp_path / "audio")["csv"]
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("path\n" + "\n".join(
        str(Path(files["test"]).parent / line.split(",")[0])
        for line in Path(files["test"]).read_text().splitlines()[1:]) + "\n")
    recipe = speech_recipe(model, files, tmp_path / "out")
    recipe["domain"] = {"method": "mmd", "target": {"path": "csv", "data_files": {"train": str(unlabelled)}}}
    result = finetune(recipe)
    assert "target" not in result.metrics  # no labels: adaptation only


def test_head_layer_is_the_logits_layer(tiny_bert):
    import peft
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    assert head_layer(model) is model.classifier
    lora = peft.get_peft_model(model, peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, target_modules=["query"]))
    layer = head_layer(lora)
    assert layer is lora.base_model.model.classifier.modules_to_save["default"]


def test_domain_target_errors_name_the_key(tiny_bert, sentiment_files, tmp_path):
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["domain"] = {"method": "mmd", "target": {"path": "csv", "data_files": {"test": "nope.csv"}}}
    with pytest.raises(DataError, match="domain.target.data_files.test: file not found"):
        finetune(recipe)
    recipe["domain"]["target"] = {"path": "csv", "data_files": {"test": sentiment_files["test"]}}
    with pytest.raises(DataError, match="domain.target.split: split 'train' not in the domain.target dataset"):
        finetune(recipe)


def test_distill_from_a_lora_adapter_folder(tiny_bert, sentiment_files, tmp_path):
    from peft import AutoPeftModelForSequenceClassification

    adapter = tmp_path / "adapter"
    finetune(text_recipe(tiny_bert, sentiment_files, adapter, strategy="lora"))
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["distill"] = {"teacher": str(adapter)}
    trainer, splits = train.build_trainer(load_recipe(recipe), tmp_path / "out")
    batch = trainer.data_collator([splits["train"][i] for i in range(4)])
    reference = AutoPeftModelForSequenceClassification.from_pretrained(adapter, num_labels=2).eval()
    with torch.no_grad():  # the adapter's trained head and LoRA weights, as a Hub user loads them
        expected = reference(**{k: v for k, v in batch.items() if k not in ("labels", TEACHER_COLUMN)}).logits
    assert torch.allclose(batch[TEACHER_COLUMN], expected, atol=1e-5)


def test_config_overrides_may_not_replace_what_the_data_sets(tiny_bert, sentiment_files, tmp_path):
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["model"]["config_overrides"] = {"num_labels": 3}
    with pytest.raises(RecipeError, match="model.config_overrides.num_labels: set by hf-transfer from the data"):
        finetune(recipe)


def test_domain_controls_and_the_report_s_target_table(tiny_resnet, images, tmp_path):
    """`target_bn` changes only batch-norm statistics, exactly as MMD at weight 0 does; `none` trains as
    without `domain` and still evaluates the target; the transfer report tabulates every run's target
    metric with its interval and its paired difference from the main run."""
    import yaml

    from hf_transfer.outputs import report as report_files

    target = {"path": "imagefolder", "data_files": {"test": images["test"]}, "split": "test"}

    def trained(out, domain):
        recipe = vision_recipe(tiny_resnet, images, tmp_path / out)
        recipe["domain"] = domain
        return finetune(recipe), load_file(tmp_path / out / "model.safetensors")

    bn, bn_weights = trained("bn", {"method": "target_bn", "target": target})
    mmd0, mmd0_weights = trained("mmd0", {"method": "mmd", "weight": 0.0, "target": target})
    plain, plain_weights = trained("plain", None)
    none, none_weights = trained("none", {"method": "none", "target": target})
    assert bn_weights.keys() == mmd0_weights.keys() == plain_weights.keys()
    for key, value in bn_weights.items():
        assert torch.allclose(value.float(), mmd0_weights[key].float(), atol=1e-6), key
        assert torch.equal(none_weights[key], plain_weights[key]), key
    stats = [k for k in bn_weights if k.endswith("running_mean")]
    assert stats and any(not torch.allclose(bn_weights[k], plain_weights[k]) for k in stats)  # the target's
    assert bn.metrics["target"]["target_samples"] == none.metrics["target"]["target_samples"] == 12
    assert "target" not in plain.metrics
    card = (tmp_path / "bn" / "README.md").read_text()
    assert "- Domain adaptation: target_bn (target batches through batch-norm, no adaptation loss), target " \
           "`imagefolder`" in card
    assert f"| target domain | {bn.metrics['target']['target_accuracy']:.4f} |" in card
    assert "Domain adaptation" not in (tmp_path / "plain" / "README.md").read_text()

    recipe = vision_recipe(tiny_resnet, images, tmp_path / "report")
    recipe["domain"] = {"method": "mmd", "target": target}
    recipe["compare"] = [{"source_only": {"domain.method": "none"}}, {"target_bn": {"domain.method": "target_bn"}},
                         "majority"]
    finetune(recipe)
    report = report_files.read(tmp_path / "report")
    rows = {r["name"]: r for r in report["runs"]}
    assert rows["source_only"]["target"] == pytest.approx(rows["source_only"]["target_interval"]["mean"])
    assert rows["main"]["target_vs_main"] is None and rows["target_bn"]["target_vs_main"]["verdict"]
    assert rows["majority"]["target"] is None and rows["majority"]["target_interval"] is None
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| run | target accuracy | vs main |" in text
    assert f"| source_only | {rows['source_only']['target_interval']['mean']:.4f} ± " in text
    assert yaml.safe_load((tmp_path / "report" / "compare" / "source_only" / "recipe.yaml").read_text())[
        "domain"]["method"] == "none"


def test_domain_none_needs_target_labels(tiny_bert, sentiment_files, tmp_path):
    import pandas as pd

    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(sentiment_files["test"]).drop(columns=["label"]).to_csv(unlabelled, index=False)
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["domain"] = {"method": "none", "target": {"path": "csv", "data_files": {"test": str(unlabelled)},
                                                     "split": "test"}}
    with pytest.raises(DataError, match="domain.method: none only evaluates the labelled target split"):
        finetune(recipe)
