"""Staged unfreezing, layer-wise LR decay, L2-SP, the PEFT methods, the cached-feature probe, the report."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, TrainerCallback

from hf_transfer import finetune
from hf_transfer.validate import load_recipe
from hf_transfer.errors import ModelError, RecipeError
from hf_transfer.strategies.layers import l2sp_penalty, layer_depths, param_groups
from hf_transfer.strategies.peft import AdaLoraConfig, IA3Config, LoHaConfig, LoKrConfig, LoraConfig
from hf_transfer.strategies.staged import StagedConfig
from hf_transfer.strategies.staged import stage_at, stage_plan
from hf_transfer.strategies import apply_strategy
from tests.tiny import text_recipe

# The tiny BERT: embeddings (depth 3), encoder.layer.0 (2), encoder.layer.1 (1), pooler + classifier (0).
EXPECTED_DEPTH = {"bert.embeddings.": 3, "bert.encoder.layer.0.": 2, "bert.encoder.layer.1.": 1,
                  "bert.pooler.": 0, "classifier.": 0}


def depth_of(name):
    return next(d for prefix, d in EXPECTED_DEPTH.items() if name.startswith(prefix))


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def model(tiny_bert):
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)


def epochs_recipe(tiny_bert, files, out, epochs=3, **finetune_options):
    recipe = text_recipe(tiny_bert, files, out, **finetune_options)
    for key in ("max_steps", "eval_steps", "save_steps"):
        recipe["training"].pop(key)
    recipe["training"] |= {"num_train_epochs": epochs, "eval_strategy": "epoch", "save_strategy": "no",
                           "load_best_model_at_end": False, "learning_rate": 1e-2}
    return recipe


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("finetune_section, message", [
    ({"strategy": "lora", "layer_decay": 0.8}, "finetune.layer_decay: not an option of strategy 'lora'"),
    ({"strategy": "full", "unfreeze": 2}, "finetune.unfreeze: not an option of strategy 'full'"),
    ({"strategy": "ia3", "r": 4}, "finetune.r: not an option of strategy 'ia3'"),
    ({"strategy": "partial", "use_dora": True}, "finetune.use_dora: not an option of strategy 'partial'"),
])
def test_options_of_one_strategy_are_rejected_for_another(finetune_section, message):
    raw = {"model": {"name_or_path": "m"}, "data": {"path": "csv"}, "finetune": finetune_section}
    with pytest.raises(RecipeError, match=message):
        load_recipe(raw)


def test_stage_plan_and_its_errors():
    assert stage_plan(StagedConfig(head_epochs=2, unfreeze=1, milestones={"4": 2, "6": "all"}), 3) == [
        (0, 0), (2, 1), (4, 2), (6, 4)]
    assert stage_plan(StagedConfig(head_epochs=0, unfreeze="all"), 3) == [(0, 4)]
    assert [stage_at([(0, 0), (2, 1), (4, 2)], e) for e in (0, 1.5, 2.0, 3.999, 4, 9)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ModelError, match="finetune.unfreeze: 5 blocks asked, the backbone has 3"):
        stage_plan(StagedConfig(unfreeze=5), 3)
    with pytest.raises(RecipeError, match="finetune.milestones.1: stages must come after head_epochs"):
        stage_plan(StagedConfig(head_epochs=2, unfreeze=1, milestones={"1": 2}), 3)
    with pytest.raises(RecipeError, match="finetune.milestones.3: stages must come after"):
        stage_plan(StagedConfig(head_epochs=1, unfreeze=2, milestones={"3": 1}), 3)


# --------------------------------------------------------------------------- which parameters train


@pytest.mark.parametrize("cfg, marker", [
    (IA3Config(), "ia3_l"),
    (AdaLoraConfig(init_r=4, target_r=2), "lora_E"),
    (LoHaConfig(r=2), "hada_w1_a"),
    (LoKrConfig(r=2), "lokr_w1"),
    (LoraConfig(r=2, use_dora=True), "lora_magnitude_vector"),
])
def test_peft_methods_train_their_adapters_and_the_head_only(model, cfg, marker):
    peft_model = apply_strategy(model, cfg)
    names = trainable(peft_model)
    assert any(marker in n for n in names)
    head = {n for n in names if "classifier" in n}
    assert head == {"base_model.model.classifier.modules_to_save.default.weight",
                    "base_model.model.classifier.modules_to_save.default.bias"}
    adapter_words = ("ia3_", "lora_", "hada_", "lokr_")
    assert all(any(w in n for w in adapter_words) for n in names - head), names - head


def test_staged_starts_with_the_head_only(model):
    apply_strategy(model, StagedConfig(head_epochs=1, unfreeze=1))
    assert trainable(model) == {"classifier.weight", "classifier.bias"}


# --------------------------------------------------------------------------- layer-wise LR decay


def test_layer_depths_follow_the_blocks(model):
    depths = layer_depths(model)
    assert depths and all(depths[n] == depth_of(n) for n in depths)


def test_llrd_groups_match_the_formula(model):
    decay_names = {n for n, _ in model.named_parameters() if not n.endswith("bias")}
    groups = param_groups(model, 1e-3, 0.01, decay_names, layer_decay=0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            seen.add(name)
            assert g["lr"] == pytest.approx(1e-3 * 0.5 ** depth_of(name)), name
            assert g["weight_decay"] == (0.01 if name in decay_names else 0.0), name
    assert seen == set(names.values())  # every parameter, exactly once
    assert sum(len(g["params"]) for g in groups) == len(seen)


def test_llrd_reaches_the_trainer_optimizer(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.train import build_trainer

    recipe = load_recipe(text_recipe(tiny_bert, sentiment_files, tmp_path / "o", layer_decay=0.8))
    trainer, _ = build_trainer(recipe, tmp_path / "o")
    trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    lrs = {names[id(p)]: g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert len(lrs) == len(names)
    for name, lr in lrs.items():
        assert lr == pytest.approx(1e-2 * 0.8 ** depth_of(name)), name


# --------------------------------------------------------------------------- staged unfreezing, end to end


class Recorder(TrainerCallback):
    """Weights at each epoch end, and every group's LR at every step."""

    def __init__(self, model):
        self.model, self.snapshots, self.lrs = model, [], []

    def on_epoch_end(self, args, state, control, **kw):
        self.snapshots.append({n: p.detach().clone() for n, p in self.model.named_parameters()})

    def on_step_end(self, args, state, control, optimizer=None, **kw):
        self.lrs.append((state.global_step, [g["lr"] for g in optimizer.param_groups]))


def test_staged_unfreezing_keeps_frozen_weights_and_the_lr_schedule(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.train import build_trainer

    recipe = load_recipe(epochs_recipe(
        tiny_bert, sentiment_files, tmp_path / "o", epochs=3, strategy="staged", head_epochs=1,
        unfreeze=1, milestones={"2": "all"}, unfreeze_lr=1e-3, layer_decay=0.5,
    ))
    trainer, _ = build_trainer(recipe, tmp_path / "o")
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    recorder = Recorder(model)
    trainer.add_callback(recorder)
    trainer.train()

    def same(snapshot, prefix):
        names = [n for n in before if n.startswith(prefix)]
        return names and all(torch.equal(before[n], snapshot[n]) for n in names)

    def moved(snapshot, prefix):
        names = [n for n in before if n.startswith(prefix) and n.endswith("weight")]
        return names and all(not torch.equal(before[n], snapshot[n]) for n in names)

    epoch1, epoch2, epoch3 = recorder.snapshots
    assert moved(epoch1, "classifier.") and same(epoch1, "bert.")  # stage 0: the head only
    assert same(epoch2, "bert.embeddings.") and same(epoch2, "bert.encoder.layer.0.")  # stage 1: top block
    assert moved(epoch2, "bert.encoder.layer.1.") and moved(epoch2, "bert.pooler.")
    assert moved(epoch3, "bert.embeddings.") and moved(epoch3, "bert.encoder.layer.0.")  # stage 2: all

    # Every parameter is in the optimizer from the start; the linear schedule runs on across stages.
    groups = trainer.optimizer.param_groups
    assert sum(len(g["params"]) for g in groups) == len(before)
    total = trainer.state.max_steps
    per_epoch = total // 3
    for step, lrs in recorder.lrs:
        stage = min((step - 1) // per_epoch, 2)  # the LR after `step` optimizer steps
        for g, lr in zip(groups, lrs):
            base = 1e-2 if stage == 0 and g["hf_head"] else 1e-3 * 0.5 ** g["hf_depth"]
            assert lr == pytest.approx(base * (1 - step / total), abs=1e-12), (step, g["hf_depth"])


def test_staged_run_saves_an_ordinary_model(tiny_bert, sentiment_files, tmp_path):
    from transformers import pipeline

    out = tmp_path / "o"
    finetune(epochs_recipe(tiny_bert, sentiment_files, out, epochs=2, strategy="staged", head_epochs=1))
    clf = pipeline("text-classification", model=str(out), device="cpu")
    assert clf("good great")[0]["label"] in {"negative", "positive"}
    assert json.loads((out / "metrics.json").read_text())["trainable_parameters"] > 66  # unfrozen at the end


# --------------------------------------------------------------------------- L2-SP


def test_l2sp_penalty_is_half_alpha_squared_distance_to_pretrained(model):
    penalty = l2sp_penalty(model, alpha=0.5)
    assert penalty().item() == 0.0
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight.add_(0.1)  # 32 x 32 entries moved by 0.1
        model.classifier.weight.add_(5.0)  # the head is not penalised
    assert penalty().item() == pytest.approx(0.5 / 2 * 32 * 32 * 0.01, rel=1e-4)
    model.bert.encoder.layer[0].attention.self.query.weight.requires_grad_(False)
    assert penalty().item() == 0.0  # frozen weights are not penalised


def test_l2sp_is_added_to_the_training_loss_only(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.train import build_trainer

    recipe = load_recipe(text_recipe(tiny_bert, sentiment_files, tmp_path / "o", l2sp=10.0))
    trainer, splits = build_trainer(recipe, tmp_path / "o")
    model = trainer.model
    for m in model.modules():  # no dropout: train and eval mode give the same logits
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    with torch.no_grad():
        model.bert.pooler.dense.weight.add_(0.1)
    batch = trainer.data_collator([splits["train"][i] for i in range(4)])
    plain = trainer.compute_loss(model.eval(), dict(batch)).item()
    regularised = trainer.compute_loss(model.train(), dict(batch)).item()
    assert regularised - plain == pytest.approx(10.0 / 2 * 32 * 32 * 0.01, rel=1e-3)


# --------------------------------------------------------------------------- PEFT methods, end to end


@pytest.mark.parametrize("options", [
    {"strategy": "ia3"},
    {"strategy": "adalora", "init_r": 4, "target_r": 2},
    {"strategy": "loha", "r": 2},
    {"strategy": "lokr", "r": 2},
    {"strategy": "lora", "r": 2, "use_dora": True},
])
def test_peft_methods_save_the_head_and_merge(options, tiny_bert, sentiment_files, tmp_path):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoConfig, AutoTokenizer, pipeline

    out = tmp_path / "o"
    result = finetune(text_recipe(tiny_bert, sentiment_files, out, merge=True, **options))
    saved = load_file(out / "adapter_model.safetensors")
    assert any("classifier" in k for k in saved)
    config = AutoConfig.from_pretrained(out)
    reloaded = AutoPeftModelForSequenceClassification.from_pretrained(
        out, num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id)
    tok = AutoTokenizer.from_pretrained(out)
    sentences = ["good great drug", "awful terrible pain", "the drug was fine", "worst day bad"]
    adapter = pipeline("text-classification", model=reloaded, tokenizer=tok, device="cpu")
    merged = pipeline("text-classification", model=str(out / "merged"), device="cpu")
    for a, m in zip(adapter(sentences, top_k=None), merged(sentences, top_k=None)):
        a, m = sorted(a, key=lambda r: r["label"]), sorted(m, key=lambda r: r["label"])
        assert [r["label"] for r in a] == [r["label"] for r in m]
        assert [r["score"] for r in a] == pytest.approx([r["score"] for r in m], abs=1e-4)
    assert 0 <= result.metrics["test"]["test_accuracy"] <= 1


# --------------------------------------------------------------------------- cached-feature linear probe


def test_cached_probe_is_the_default_and_matches_the_probe_through_the_backbone(
    tiny_bert, sentiment_files, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    runs = {}
    for name, cache in (("cached", None), ("through", False)):
        recipe = epochs_recipe(tiny_bert, sentiment_files, tmp_path / name, epochs=3,
                               strategy="partial", freeze="backbone", cache_features=cache)
        recipe["training"]["train_sampling_strategy"] = "group_by_length"
        runs[name] = finetune(recipe)
    cached, through = runs["cached"].metrics, runs["through"].metrics
    assert cached["cached_features"]["cache_hits"] == 0 and "cached_features" not in through
    a, b = load_file(tmp_path / "cached/model.safetensors"), load_file(tmp_path / "through/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # the same head training, up to float noise from batch padding
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert not torch.equal(a["classifier.weight"], load_file(tiny_bert / "model.safetensors").get(
        "classifier.weight", torch.zeros_like(a["classifier.weight"])))
    assert cached["test"]["test_accuracy"] == through["test"]["test_accuracy"]
    assert cached["test"]["test_loss"] == pytest.approx(through["test"]["test_loss"], abs=1e-5)

    again = finetune(epochs_recipe(tiny_bert, sentiment_files, tmp_path / "again", epochs=1,
                                   strategy="partial", freeze="backbone"))
    assert again.metrics["cached_features"]["cache_hits"] == 3  # train, validation, test from disk


def test_a_feature_cache_that_cannot_be_read_or_written_costs_a_warning_not_the_run(
    tiny_bert, sentiment_files, tmp_path, monkeypatch, caplog
):
    """A damaged cached file is computed again and replaced; a cache folder that cannot be written (HF_TRANSFER_CACHE
    under a file) leaves the run uncached, with one warning per file, and the same model."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(cache))
    recipe = lambda out: epochs_recipe(tiny_bert, sentiment_files, tmp_path / out, epochs=1,  # noqa: E731
                                       strategy="partial", freeze="backbone")
    first = finetune(recipe("first"))
    files = sorted((cache / "features").glob("*.safetensors"))
    assert len(files) == 3 and first.metrics["cached_features"]["cache_hits"] == 0
    files[0].write_bytes(b"not safetensors")
    with caplog.at_level("WARNING", logger="hf_transfer.strategies.probe"):
        damaged = finetune(recipe("damaged"))
    assert damaged.metrics["cached_features"]["cache_hits"] == 2
    [line] = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    assert line.startswith(f"feature cache: {files[0]} does not read (Error while deserializing header")
    assert line.endswith("; computing the features again")
    assert len(files[0].read_bytes()) > 100  # replaced by the features computed again

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "a-file" / "cache"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="hf_transfer.strategies.probe"):
        unwritable = finetune(recipe("unwritable"))
    assert unwritable.metrics["cached_features"]["cache_hits"] == 0
    assert sum("feature cache: cannot write" in r.getMessage() and "(Not a directory)" in r.getMessage()
               for r in caplog.records) == 3
    a, b = load_file(tmp_path / "first/model.safetensors"), load_file(tmp_path / "unwritable/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_timm_probe_caches_its_pooled_features_and_trains_as_through_the_backbone(tmp_path, monkeypatch):
    """A timm backbone holds its classifier: the probe caches the pooled features it reads (the backbone in
    eval mode, no augmentation) and trains that Linear as the run through the backbone does."""
    from tests.tiny_vision import save_tiny_timm, vision_recipe, write_imagefolder

    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    model, files = save_tiny_timm(tmp_path / "resnet"), write_imagefolder(tmp_path / "images", n_train=12)
    runs = {}
    for name, cache in (("cached", None), ("through", False)):
        recipe = vision_recipe(model, files, tmp_path / name, strategy="partial", freeze="backbone",
                               cache_features=cache)
        recipe["vision"] |= {"random_resized_crop": False, "hflip": 0.0}
        recipe["training"] |= {"max_steps": 4, "eval_steps": 4, "save_steps": 4, "per_device_train_batch_size": 4}
        runs[name] = finetune(recipe)
    cached, through = runs["cached"].metrics, runs["through"].metrics
    assert cached["cached_features"]["cache_hits"] == 0 and "cached_features" not in through
    a, b = load_file(tmp_path / "cached/model.safetensors"), load_file(tmp_path / "through/model.safetensors")
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], load_file(model / "model.safetensors").get(k, a[k] + 1))]
    assert changed and all(k.startswith("fc.") for k in changed)  # only the classifier trained
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert cached["test"]["test_loss"] == pytest.approx(through["test"]["test_loss"], abs=1e-5)
    recipe["training"]["output_dir"], recipe["finetune"]["cache_features"] = str(tmp_path / "again"), None
    assert finetune(recipe).metrics["cached_features"]["cache_hits"] == 3  # another seed's head, same features


def test_cached_probe_refused_when_the_backbone_is_not_frozen(tiny_bert, sentiment_files, tmp_path):
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "o", strategy="partial", freeze=1,
                         cache_features=True)
    with pytest.raises(ModelError, match="finetune.cache_features: cannot cache features: the backbone"):
        finetune(recipe)


# --------------------------------------------------------------------------- transfer report


def test_transfer_report(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "o"
    recipe = epochs_recipe(tiny_bert, sentiment_files, out, epochs=1)
    recipe["compare"] = ["scratch", "majority", {"linear_probe": {"training.learning_rate": 0.1}},
                         {"lora": {"finetune.strategy": "lora", "finetune.r": 2}}]
    result = finetune(recipe)
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(result.report))
    assert (out / "report.md").is_file() and (out / "curves.png").stat().st_size > 1000
    runs = {r["name"]: r for r in report["runs"]}
    assert list(runs) == ["main", "scratch", "majority", "linear_probe", "lora"]
    assert runs["scratch"]["pretrained"] is False and runs["linear_probe"]["cached_features"]
    assert runs["lora"]["strategy"] == "lora"
    assert runs["majority"]["test"] == 0.5  # the test split is balanced
    for name in ("main", "linear_probe", "lora"):
        gain = round(100 * (runs[name]["test"] - runs["scratch"]["test"]), 2)
        assert runs[name]["gain_over_scratch"] == gain
        low, high = runs[name]["gain_interval"]  # paired bootstrap over the test examples (one seed)
        assert low <= gain <= high
        verdict = "gain" if low > 0 else "negative transfer" if high < 0 else "no significant difference"
        assert runs[name]["verdict"] == verdict and runs[name]["negative_transfer"] == (verdict == "negative transfer")
        assert runs[name]["interval"]["low"] <= runs[name]["test"] <= runs[name]["interval"]["high"]
        assert len(runs[name]["curve"]) == 1 and runs[name]["train_seconds"] > 0, (name, runs[name]["train_seconds"], runs[name]["cached_features"])
    assert (out / "compare/scratch/metrics.json").is_file()
    md = (out / "report.md").read_text()
    assert "| scratch | scratch |" in md and "| majority | majority |" in md
    assert md.count("**negative transfer**") == sum(r["negative_transfer"] for r in report["runs"])


@pytest.mark.parametrize("compare, message", [
    (["bogus"], "compare\\[0\\]: unknown run 'bogus'"),
    ([{"majority": {"model.pretrained": False}}], "compare\\[0\\].majority: takes no overrides"),
    (["scratch", "scratch"], "compare\\[1\\]: run 'scratch' listed twice"),
    ([{"lora": {"finetune.strategy": "lora", "finetune.freeze": 2}}],
     "compare.lora: finetune.freeze: not an option of strategy 'lora'"),
])
def test_compare_errors_name_the_run(compare, message):
    raw = {"model": {"name_or_path": "m"}, "data": {"path": "csv"}, "compare": compare}
    with pytest.raises(RecipeError, match=message):
        load_recipe(raw)


@pytest.mark.parametrize("finetune_section", [
    {"strategy": "partial", "freeze": 3}, {"strategy": "lora", "r": 4}, {"strategy": "full", "l2sp": 0.01},
])
def test_scratch_trains_every_weight_whatever_the_main_runs_strategy(finetune_section):
    """Frozen or adapted random weights are no baseline: `scratch` is the recipe from random initialisation
    under strategy full; overrides the user gives it still win."""
    from hf_transfer.recipe import variants

    raw = {"model": {"name_or_path": "m"}, "data": {"path": "csv"}, "finetune": finetune_section,
           "training": {"output_dir": "out"}}
    [(name, overrides)] = variants.entries(["scratch"], ())
    scratch = load_recipe(variants.variant_raw(raw, name, overrides))
    assert not scratch.model.pretrained and scratch.finetune.strategy == "full" and scratch.finetune.l2sp == 0.0
    [(_, mine)] = variants.entries([{"scratch": {"finetune.strategy": "lora", "finetune.r": 2}}], ())
    assert load_recipe(variants.variant_raw(raw, name, mine)).finetune.strategy == "lora"
    assert load_recipe(raw).finetune.strategy == finetune_section["strategy"]  # the main run keeps its own


@pytest.mark.parametrize("finetune_section, warned", [
    ({"strategy": "partial", "freeze": 1}, True), ({"strategy": "lora", "r": 2}, True), ({"strategy": "full"}, False),
])
def test_random_initialisation_under_a_freezing_or_adapting_strategy_is_flagged(tiny_bert, sentiment_files, tmp_path,
                                                                                caplog, finetune_section, warned):
    from hf_transfer.train import build_trainer

    raw = text_recipe(tiny_bert, sentiment_files, tmp_path / "out") | {"finetune": finetune_section}
    raw["model"]["pretrained"] = False
    with caplog.at_level("WARNING", logger="hf_transfer.strategies"):
        build_trainer(load_recipe(raw), tmp_path / "out")
    assert ("model.pretrained is false: finetune.strategy" in caplog.text) == warned
