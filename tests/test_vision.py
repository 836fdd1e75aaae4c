"""Vision modality on tiny timm and transformers models built in code: 2 training steps per run."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hf_transfer import finetune
from hf_transfer import validate as config
from hf_transfer.tasks import image_classification as vision
from hf_transfer.tasks import images as vision_data
from hf_transfer.errors import DataError, RecipeError
from hf_transfer.recipe.yaml import read_recipe_file
from hf_transfer.tasks import resolve
from hf_transfer.anatomy import find_blocks, head_parameter_names
from tests.tiny_vision import CLASSES, pattern, save_tiny_timm, save_tiny_vit, vision_recipe, write_imagefolder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def tiny_resnet(tmp_path_factory):
    return save_tiny_timm(tmp_path_factory.mktemp("tiny-resnet"), "test_resnet")


@pytest.fixture(scope="module")
def tiny_timm_vit(tmp_path_factory):
    return save_tiny_timm(tmp_path_factory.mktemp("tiny-timm-vit"), "test_vit", img_size=32)


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


def probe_images():
    import random

    rng = random.Random(7)
    return [pattern(kind, rng, grey=g) for kind in CLASSES for g in (True, False)]


def in_memory_labels(result, images):
    """Labels the trained model (still in memory, PEFT-wrapped or not) gives the probe images."""
    batch = vision_data.collate([{"pixel_values": x, "labels": 0} for x in vision_data.eval_transform(
        result.trainer.processing_class)([im.convert("RGB") for im in images])])
    model = result.trainer.model.eval()
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"]).logits
    return [CLASSES[i] for i in logits.argmax(-1).tolist()]


def timm_reloaded_labels(folder: Path, images):
    """Reload a saved folder with timm alone, preprocess as its config says, predict label names."""
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    tf = create_transform(**resolve_data_config(model=model))
    with torch.no_grad():
        logits = model(torch.stack([tf(im.convert("RGB")) for im in images]))
    names = json.loads((folder / "config.json").read_text())["label_names"]
    return [names[i] for i in logits.argmax(-1).tolist()]


def test_timm_run_saves_a_timm_folder_that_reloads(tiny_resnet, images, tmp_path):
    out = tmp_path / "out"
    result = finetune(vision_recipe(tiny_resnet, images, out))
    assert {"config.json", "model.safetensors", "recipe.yaml", "metrics.json"} <= {p.name for p in out.iterdir()}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == 3
    assert cfg["label_names"] == CLASSES
    assert cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test"]["test_accuracy"] <= 1
    assert result.trainer.args.remove_unused_columns is False
    probes = probe_images()
    assert timm_reloaded_labels(out, probes) == in_memory_labels(result, probes)


def in_memory_top(result, images) -> list[tuple[str, float]]:
    """(top label, its softmax score) the trained model, still in memory, gives each probe image."""
    batch = vision_data.collate([{"pixel_values": x, "labels": 0} for x in vision_data.eval_transform(
        result.trainer.processing_class)([im.convert("RGB") for im in images])])
    with torch.no_grad():
        probs = result.trainer.model.eval()(pixel_values=batch["pixel_values"]).logits.softmax(-1)
    return [(CLASSES[int(i)], float(p)) for p, i in zip(*probs.max(-1))]


def test_timm_run_is_a_hub_model_that_pipeline_predict_verify_and_the_card_load(tiny_resnet, images, tmp_path,
                                                                               monkeypatch):
    """A timm run loads in transformers' pipeline (TimmWrapperForImageClassification) with the trained
    model's top label and score, passes the round-trip check, predicts, and has an image card."""
    from huggingface_hub import ModelCard
    from transformers import pipeline

    from hf_transfer.outputs.evaluate import evaluate
    from hf_transfer.outputs.hub import push
    from hf_transfer.outputs.predict import predict
    from tests.test_hub import FakeHub
    from hf_transfer.outputs.verify import verify

    out = tmp_path / "out"
    result = finetune(vision_recipe(tiny_resnet, images, out))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "timm_wrapper" and cfg["architectures"] == ["TimmWrapperForImageClassification"]
    assert "num_classes" not in cfg["model_args"] and cfg["problem_type"] == "single_label_classification"
    probes = probe_images()
    clf = pipeline("image-classification", model=str(out), device="cpu")
    assert type(clf.model).__name__ == "TimmWrapperForImageClassification"
    got = [(r[0]["label"], r[0]["score"]) for r in clf(probes, top_k=1)]
    expected = in_memory_top(result, probes)
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], abs=1e-6)
    assert len({g[1] for g in got}) > 1  # the scores vary with the image: the trained head, not a uniform one
    checked = verify(out)
    assert checked.loader == "transformers.pipeline" and set(checked.compared) == {"validation", "test"}
    probe_file = tmp_path / "probe.png"
    probes[0].save(probe_file)
    _, [[top]] = predict(out, [str(probe_file)])
    assert (top["label"], top["score"]) == pytest.approx(expected[0], abs=1e-6)
    saved = json.loads((out / "metrics.json").read_text())
    test_folder = Path(images["test"]).parent
    one_class = tmp_path / "only-vertical" / "vertical"  # ClassLabel id 0 here, label id 2 in the model
    shutil.copytree(test_folder / "vertical", one_class)
    found = evaluate(out, [str(test_folder), str(one_class.parent)])
    assert found[str(test_folder)]["metrics"] == {k.removeprefix("test_"): v for k, v in saved["test"].items()
                                                  if k.removeprefix("test_") in found[str(test_folder)]["metrics"]}
    assert found[str(test_folder)]["per_class"] == saved["per_class"]["test"]
    assert {n: c["support"] for n, c in found[str(one_class.parent)]["per_class"]["per_class"].items()} == {
        "horizontal": 0, "plain": 0, "vertical": 4}
    (one_class / "broken.png").write_text("not an image")  # one line naming it (was PIL's traceback)
    with pytest.raises(DataError, match=f"evaluate: {one_class.parent}: vision.image_column: cannot read image "
                                        f"{one_class / 'broken.png'}"):
        evaluate(out, [str(one_class.parent)])
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-classification" and card.data.library_name == "transformers"
    assert "| 1 | plain |" in card.text and 'pipeline("image-classification"' in card.text
    assert "regression" not in card.text
    hub = FakeHub().install(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_SENTINELtoken0123456789abcdefABCDEF")
    push(out, "me/tiny-timm")
    [sent] = hub.uploads
    assert {"config.json", "model.safetensors", "README.md"} <= set(sent["files"])
    assert ModelCard(sent["files"]["README.md"].decode()).data.pipeline_tag == "image-classification"


def test_hub_user_logits_hold_every_label_of_an_image_model_with_more_than_five(tmp_path):
    """The image-classification pipeline answers 5 labels unless told top_k: the round trip asks for all."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, pipeline

    from hf_transfer.outputs.hubuser import logits

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=64, num_labels=7)
    model = ViTForImageClassification(config).eval()
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    clf = pipeline("image-classification", model=str(tmp_path), device="cpu")
    probes = [im.convert("RGB") for im in probe_images()[:3]]
    with torch.no_grad():
        expected = model(**clf.image_processor(probes, return_tensors="pt")).logits.numpy()
    got = logits(clf, probes, batch_size=3)
    assert got.shape == (3, 7) and got == pytest.approx(expected, abs=1e-5)


def test_timm_folder_of_an_older_version_still_predicts_and_verifies(tiny_resnet, images, tmp_path):
    """A timm folder written before the TimmWrapper config (timm's own config.json: no model_type,
    `num_classes` in model_args) still loads in `predict` and `verify`."""
    from hf_transfer.outputs.predict import predict
    from hf_transfer.outputs.verify import verify

    out = tmp_path / "out"
    finetune(vision_recipe(tiny_resnet, images, out))
    cfg = json.loads((out / "config.json").read_text())
    old = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures", "problem_type",
                                                     "transformers_version", "initializer_range", "do_pooling")}
    old["model_args"] = {**cfg["model_args"], "num_classes": 3}
    (out / "config.json").write_text(json.dumps(old))
    probe_file = tmp_path / "probe.png"
    probe_images()[0].save(probe_file)
    _, [[top]] = predict(out, [str(probe_file)])
    assert top["label"] in CLASSES
    assert set(verify(out).compared) == {"validation", "test"}


def test_transformers_run_reloads_with_pipeline(tiny_vit, images, tmp_path):
    from transformers import pipeline

    out = tmp_path / "out"
    result = finetune(vision_recipe(tiny_vit, images, out, library="transformers"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["id2label"] == {"0": "horizontal", "1": "plain", "2": "vertical"}
    clf = pipeline("image-classification", model=str(out), device="cpu")
    probes = probe_images()
    assert [r[0]["label"] for r in clf(probes)] == in_memory_labels(result, probes)


def test_transformers_pickled_weights_are_refused_unless_allowed(tiny_vit, images, tmp_path):
    """As for text: a folder with only pytorch_model.bin loads only with model.allow_pickle."""
    import shutil

    from transformers import AutoModelForImageClassification

    from hf_transfer.errors import ModelError

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_vit, folder)
    model = AutoModelForImageClassification.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="model.name_or_path: cannot load"):
        finetune(vision_recipe(folder, images, tmp_path / "a", library="transformers"))
    recipe = vision_recipe(folder, images, tmp_path / "b", library="transformers")
    recipe["model"]["allow_pickle"] = True
    assert finetune(recipe).metrics["test"]["test_accuracy"] >= 0


def test_partial_freeze_on_timm_keeps_stem_and_first_stage(tiny_resnet, images, tmp_path):
    before = load_file(tiny_resnet / "model.safetensors")
    out = tmp_path / "out"
    result = finetune(vision_recipe(tiny_resnet, images, out, strategy="partial", freeze=1))
    after = load_file(out / "model.safetensors")
    frozen = [k for k in before if k.startswith(("conv1.", "layer1.")) and "num_batches" not in k]
    later = [k for k in before if k.startswith(("layer2.", "layer3.", "layer4.")) and k.endswith("weight")]
    assert frozen and later
    trainable = {n for n, p in result.trainer.model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("model.conv1.", "model.layer1.")) for n in trainable)
    assert {"model.fc.weight", "model.layer2.0.conv1.weight"} <= trainable
    for k in frozen:
        if "running" not in k:  # BatchNorm statistics still update in train mode
            assert torch.equal(before[k], after[k]), k
    # the head starts at zero, so in 2 steps only some later-stage weights get a gradient
    assert any(not torch.equal(before[k], after[k]) for k in later)


def test_timm_blocks_are_timm_groups_and_head_is_the_classifier():
    import timm

    resnet = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    blocks = find_blocks(resnet)
    stages = [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
    assert len(blocks) == 4
    for block, stage in zip(blocks, stages):
        assert {id(p) for p in block.parameters()} == {id(p) for p in stage.parameters()}
    vit = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=32)
    assert len(find_blocks(vit)) == len(vit.blocks)
    assert head_parameter_names(vision.TimmClassifier(vit, None, "single_label_classification")) == {
        "model.head.weight", "model.head.bias"}


def test_frozen_backbone_trains_only_the_timm_classifier(tiny_resnet, images, tmp_path):
    result = finetune(vision_recipe(tiny_resnet, images, tmp_path / "out", strategy="partial", freeze="backbone"))
    trainable = {n for n, p in result.trainer.model.named_parameters() if p.requires_grad}
    assert trainable == {"model.fc.weight", "model.fc.bias"}


def test_lora_on_timm_vit_targets_block_layers_and_saves_merged_timm_folder(tiny_timm_vit, images, tmp_path):
    out = tmp_path / "out"
    result = finetune(vision_recipe(tiny_timm_vit, images, out, strategy="lora", r=4))
    peft_cfg = result.trainer.model.peft_config["default"]
    assert peft_cfg.task_type is None
    assert peft_cfg.modules_to_save == ["model.head"] or set(peft_cfg.modules_to_save) == {"model.head"}
    trainable = [n for n, p in result.trainer.model.named_parameters() if p.requires_grad]
    adapted = {n.split(".lora_")[0].removeprefix("base_model.model.") for n in trainable if ".lora_A" in n}
    assert {"model.blocks.0.attn.qkv", "model.blocks.1.attn.proj", "model.blocks.1.mlp.fc2"} <= adapted
    assert not any("patch_embed" in n or "head" in n for n in adapted)
    assert all("lora_" in n or "head" in n for n in trainable) and any("head" in n for n in trainable)
    saved = load_file(out / "model.safetensors")
    assert "head.weight" in saved and not any("lora" in k for k in saved)
    probes = probe_images()
    assert timm_reloaded_labels(out, probes) == in_memory_labels(result, probes)


def test_lora_on_cnn_targets_pointwise_convs(tiny_resnet, images, tmp_path):
    result = finetune(vision_recipe(tiny_resnet, images, tmp_path / "out", strategy="lora", r=2))
    targets = result.trainer.model.peft_config["default"].target_modules
    model = result.trainer.model.get_base_model()
    for name in targets:
        layer = model.get_submodule(name).base_layer
        assert isinstance(layer, torch.nn.Linear) or layer.kernel_size == (1, 1), name


def test_lora_on_transformers_vit_saves_head_and_merged_model(tiny_vit, images, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageClassification, pipeline

    out = tmp_path / "out"
    result = finetune(vision_recipe(tiny_vit, images, out, library="transformers", strategy="lora", r=4, merge=True))
    assert result.trainer.model.peft_config["default"].task_type is None
    adapter = load_file(out / "adapter_model.safetensors")
    assert any("classifier" in k for k in adapter) and any("lora_A" in k and "attention" in k for k in adapter)
    probes = probe_images()
    expected = in_memory_labels(result, probes)
    merged = pipeline("image-classification", model=str(out / "merged"), device="cpu")
    assert [r[0]["label"] for r in merged(probes)] == expected
    base = AutoModelForImageClassification.from_pretrained(
        tiny_vit, num_labels=3, id2label=dict(enumerate(CLASSES)), ignore_mismatched_sizes=True)
    reloaded = PeftModel.from_pretrained(base, out)
    clf = pipeline("image-classification", model=reloaded, image_processor=str(out), device="cpu")
    assert [r[0]["label"] for r in clf(probes)] == expected


def test_augmentation_is_train_only_and_grey_becomes_rgb(tiny_resnet, images):
    from hf_transfer.validate import load_recipe
    from hf_transfer.tasks.data import load_data

    raw = vision_recipe(tiny_resnet, images, Path("unused"))
    raw["vision"] |= {"auto_augment": "rand-m9-mstd0.5", "color_jitter": 0.4}
    recipe = load_recipe(raw)
    task, spec = resolve(recipe)
    loaded = load_data(recipe.data, vision.input_columns(spec), seed=0, labeler=task.labeler(spec))
    assert Image.open(sorted(Path(images["train"][:-2]).glob("*/0.png"))[0]).mode == "L"
    splits = vision_data.preprocess(loaded.splits, vision.load_processor(spec), spec)
    for role in ("train", "test"):
        x = splits[role][0]["pixel_values"]
        assert tuple(x.shape) == (3, 32, 32), role
    train_a = torch.stack([splits["train"][i]["pixel_values"] for i in range(4)])
    train_b = torch.stack([splits["train"][i]["pixel_values"] for i in range(4)])
    assert not torch.equal(train_a, train_b)
    test_a = torch.stack([splits["test"][i]["pixel_values"] for i in range(4)])
    test_b = torch.stack([splits["test"][i]["pixel_values"] for i in range(4)])
    assert torch.equal(test_a, test_b)
    assert "image" in loaded.splits["train"].column_names  # the dataset itself is not rewritten


def test_trivialaugment_is_inserted_before_tensor_conversion():
    from torchvision import transforms

    cfg = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3}
    tf = vision_data.train_transform(cfg, vision.VisionConfig(auto_augment="trivialaugment"))
    kinds = [type(t) for t in tf.transforms]
    assert transforms.TrivialAugmentWide in kinds
    assert kinds.index(transforms.TrivialAugmentWide) < len(kinds) - 2
    assert tuple(tf(pattern("plain", __import__("random").Random(0), grey=False)).shape) == (3, 32, 32)


def test_mixup_makes_soft_targets_for_training_batches(tiny_vit, images, tmp_path):
    from timm.data import Mixup

    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=3, label_smoothing=0.1)
    examples = [{"pixel_values": torch.rand(3, 8, 8), "labels": i % 3, "mixup": mix} for i in range(4)]
    batch = vision_data.collate(examples)
    assert batch["labels"].shape == (4, 3)
    assert torch.allclose(batch["labels"].sum(-1), torch.ones(4))
    odd = vision_data.collate(examples[:3])
    assert odd["labels"].shape == (3, 3) and odd["labels"].argmax(-1).tolist() == [0, 1, 2]
    unmixed = [{k: v for k, v in e.items() if k != "mixup"} for e in examples]
    assert vision_data.collate(unmixed)["labels"].dtype == torch.long
    raw = vision_recipe(tiny_vit, images, tmp_path / "out", library="transformers")
    raw["vision"] |= {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}
    result = finetune(raw)
    assert result.trainer.compute_loss_func is not None
    assert result.metrics["train"]["train_loss"] > 0


def test_vision_errors_name_the_key(tiny_resnet, images, tmp_path):
    raw = vision_recipe(tiny_resnet, images, tmp_path / "a")
    raw["vision"]["image_column"] = "photo"
    with pytest.raises(DataError, match="vision.image_column: column 'photo' not in split 'train'"):
        finetune(raw)
    raw = vision_recipe(tiny_resnet, images, tmp_path / "b")
    raw["vision"]["library"] = "keras"
    with pytest.raises(RecipeError, match="vision.library"):
        finetune(raw)
    raw = vision_recipe(tiny_resnet, images, tmp_path / "c")
    raw["vision"] = {"library": "timm"}
    raw["model"]["modality"] = "text"
    with pytest.raises(RecipeError, match="vision: section only applies with model.modality: vision"):
        finetune(raw)


def test_an_image_size_a_transformers_vit_does_not_take_is_refused_before_training(tiny_vit, images, tmp_path):
    """Tiny ViT takes 32 px images only (fixed position embeddings): 64 px is refused naming the key, before
    any output is written; its own size still trains."""
    raw = vision_recipe(tiny_vit, images, tmp_path / "a", library="transformers")
    raw["vision"]["image_size"] = 64
    with pytest.raises(RecipeError, match=r"^vision.image_size: .* does not take 64 px images \(Input image size "
                                          r"\(64\*64\) doesn't match model \(32\*32\)\); remove vision.image_size"):
        finetune(raw)
    assert not (tmp_path / "a").exists()
    raw = vision_recipe(tiny_vit, images, tmp_path / "b", library="transformers")
    raw["training"]["max_steps"] = 1
    assert raw["vision"]["image_size"] == 32 and finetune(raw).metrics["test"]["test_accuracy"] >= 0


def test_corrupt_image_is_a_one_line_error_naming_the_file(tiny_resnet, tmp_path):
    import shutil

    folder = tmp_path / "imgs"
    files = write_imagefolder(folder)
    broken = next((folder / "train").rglob("*.png"))
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    with pytest.raises(DataError, match=rf"vision.image_column: cannot read image .*{broken.name}"):
        finetune(vision_recipe(tiny_resnet, files, tmp_path / "out"))
    shutil.rmtree(folder)


# ----------------------------------------------------------------------------- shipped recipes


def stand_in(recipe_name: str, model_dir: Path, images: dict, out: Path) -> dict:
    """A shipped recipe with its Hub model and data swapped for tiny stand-ins, 2 training steps."""
    raw = read_recipe_file(ROOT / "recipes" / recipe_name)  # YAML 1.2 floats, as the CLI reads
    tiny = vision_recipe(model_dir, images, out)
    raw["model"]["name_or_path"] = str(model_dir)
    raw["vision"] |= {"image_column": "image", "image_size": 32}
    raw["data"] = tiny["data"]
    raw["training"] |= {k: v for k, v in tiny["training"].items() if k != "learning_rate"}
    raw.pop("early_stopping_patience", None)
    return raw


VISION_RECIPES = [
    "efficientnet_lite0_fashion_mnist.yaml",
    "resnet50_cifar10_stage1_frozen.yaml",
    "resnet50_cifar10_stage2_unfreeze.yaml",
    "vgg16_beans_features.yaml",
    "vit_beans_lora.yaml",
]


@pytest.mark.parametrize("name", VISION_RECIPES)
def test_vision_recipes_validate(name):
    recipe = config.load_recipe(ROOT / "recipes" / name)
    assert recipe.model.modality == "vision" and recipe.vision is not None


def test_resnet50_two_stage_recipes_run_on_a_tiny_stand_in(tiny_resnet, images, tmp_path):
    stage1 = finetune(stand_in("resnet50_cifar10_stage1_frozen.yaml", tiny_resnet, images, tmp_path / "s1"))
    assert {n for n, p in stage1.trainer.model.named_parameters() if p.requires_grad} == {
        "model.fc.weight", "model.fc.bias"}
    head = load_file(tmp_path / "s1" / "model.safetensors")["fc.weight"]
    raw2 = stand_in("resnet50_cifar10_stage2_unfreeze.yaml", tmp_path / "s1", images, tmp_path / "s2")
    # stage 2 starts from stage 1's trained head (same classes), not from a new one
    start = vision.load_model(resolve(config.load_recipe(raw2))[1], CLASSES).model.fc.weight.detach()
    assert torch.equal(start, head)
    stage2 = finetune(raw2)
    assert stage2.metrics["trainable_parameters"] == stage2.metrics["total_parameters"]
    assert stage2.metrics["train"]["train_loss"] > 0


def test_vgg16_recipe_runs_on_a_tiny_stand_in(tmp_path, images):
    vgg = save_tiny_timm(tmp_path / "tiny-vgg", "vgg11", mlp_ratio=1 / 64)
    result = finetune(stand_in("vgg16_beans_features.yaml", vgg, images, tmp_path / "out"))
    trainable = {n for n, p in result.trainer.model.named_parameters() if p.requires_grad}
    assert trainable == {"model.head.fc.weight", "model.head.fc.bias"}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["label_names"] == CLASSES


def test_vit_lora_recipe_runs_on_a_tiny_stand_in(tiny_vit, images, tmp_path):
    from transformers import pipeline

    finetune(stand_in("vit_beans_lora.yaml", tiny_vit, images, tmp_path / "out"))
    names = list(load_file(tmp_path / "out" / "adapter_model.safetensors"))
    assert any("q_proj.lora_A" in n for n in names) and any("v_proj.lora_B" in n for n in names)
    assert not any("k_proj.lora" in n for n in names) and any("classifier" in n for n in names)
    clf = pipeline("image-classification", model=str(tmp_path / "out" / "merged"), device="cpu")
    assert clf(probe_images()[0])[0]["label"] in CLASSES


def test_efficientnet_default_recipe_runs_on_a_tiny_stand_in(tmp_path, images):
    effnet = save_tiny_timm(tmp_path / "tiny-effnet", "test_efficientnet")
    result = finetune(stand_in("efficientnet_lite0_fashion_mnist.yaml", effnet, images, tmp_path / "out"))
    params = dict(result.trainer.model.named_parameters())
    frozen = {n.removeprefix("model.") for n, p in params.items() if not p.requires_grad}
    assert {".".join(n.split(".")[:2 if n.startswith("blocks.") else 1]) for n in frozen} == {
        "conv_stem", "bn1", "blocks.0", "blocks.1"}  # finetune.freeze: 2, the stem too
    before = load_file(effnet / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    assert all(torch.equal(after[n], before[n]) for n in frozen)
    trained = [n.removeprefix("model.") for n in params if n.startswith("model.blocks.2.")]
    assert any(not torch.equal(after[n], before[n]) for n in trained)  # the third stage on trains


def test_activation_checkpointing_on_a_timm_lora_run_uses_timms_own_and_trains_the_same_adapter(tiny_resnet, images,
                                                                                                tmp_path):
    """training.activation_checkpointing on a timm backbone: timm's block checkpointing (non-reentrant), under
    PEFT's wrapper too; gradients reach the LoRA weights through the recomputed blocks, exactly as without."""
    from hf_transfer import train

    runs = {}
    for checkpointing in (False, True):
        raw = vision_recipe(tiny_resnet, images, tmp_path / str(checkpointing), strategy="lora", r=2)
        raw["training"] |= {"activation_checkpointing": checkpointing, "eval_strategy": "no", "save_strategy": "no"}
        trainer, _ = train.build_trainer(config.load_recipe(raw), tmp_path / str(checkpointing))
        start = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
        trainer.train()
        runs[checkpointing] = start, {n: p.detach().clone() for n, p in trainer.model.named_parameters() if n in start}
        assert trainer.model.get_base_model().model.grad_checkpointing == checkpointing
    start, plain = runs[False]
    assert any(not torch.equal(start[n], plain[n]) for n in start if "lora_B" in n)
    for name, weight in runs[True][1].items():
        torch.testing.assert_close(weight, plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_timm_architecture_without_checkpointing_trains_without_it(tmp_path, images, caplog):
    """VGG has no activation checkpointing in timm: the run says so in one log line and trains as usual,
    where Trainer would fail at its start."""
    vgg = save_tiny_timm(tmp_path / "tiny-vgg", "vgg11", mlp_ratio=1 / 64)
    raw = vision_recipe(vgg, images, tmp_path / "out")
    raw["training"] |= {"activation_checkpointing": True}
    with caplog.at_level("INFO", logger="hf_transfer.trainer"):
        result = finetune(raw)
    assert "cannot checkpoint its activations" in caplog.text
    assert not result.trainer.args.activation_checkpointing and result.metrics["train"]["train_loss"] > 0


def test_float_array_images_from_parquet_train_and_verify(tiny_resnet, tmp_path):
    """Images stored as arrays (a datasets Array3D column; parquet gives them back as nested lists), floats in
    [0, 1]: training reads them as images (not black), and `verify` hands the pipeline the same RGB images."""
    import datasets
    import numpy as np

    from hf_transfer.outputs.verify import verify

    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Array3D((16, 16, 3), "float32"), "label": datasets.Value("string")})
    files = {}
    for split, n in (("train", 24), ("test", 8)):
        arrays = [np.clip(rng.random((16, 16, 3), dtype=np.float32) * 0.2 + 0.8 * (np.arange(16) % 2)[:, None, None]
                          .swapaxes(0, i % 2), 0, 1) for i in range(n)]  # stripes one way or the other
        rows = {"image": arrays, "label": [["across", "down"][i % 2] for i in range(n)]}
        files[split] = str(tmp_path / f"{split}.parquet")
        datasets.Dataset.from_dict(rows, features=features).to_parquet(files[split])
    recipe = vision_recipe(tiny_resnet, files, tmp_path / "out")
    recipe["data"] |= {"path": "parquet", "label_column": "label"}
    result = finetune(recipe)
    first = result.trainer.train_dataset[0]["pixel_values"]
    assert float(first.std()) > 0.1  # the stripes survive: a [0, 1] float read as 0-255 would be one flat colour
    checked = verify(tmp_path / "out")  # raises if a metric differs
    assert checked.loader == "transformers.pipeline" and set(checked.compared) == {"validation", "test"}


def test_a_timm_run_folder_as_the_base_keeps_its_head_rows_by_label_name(images, tmp_path):
    """Sequential transfer from a timm classifier of the same classes in another order: its head's rows follow
    data.label_names (they were kept by position: each class scored as another, silently); other names keep
    the head as it is, a warm start."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    base = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    save_for_hf(base, str(tmp_path / "base"), model_config={"label_names": ["circle", "square", "stripes"]},
                safe_serialization=True)
    old = {k: v.clone() for k, v in base.get_classifier().state_dict().items()}
    task, spec = resolve(config.load_recipe(vision_recipe(tmp_path / "base", images, tmp_path / "out")))
    order = ["stripes", "circle", "square"]
    head = task.load_model(spec, order).model.get_classifier()
    for name, weight in head.state_dict().items():
        assert torch.equal(weight, old[name][[2, 0, 1]]), name
    kept = task.load_model(spec, ["a", "b", "c"]).model.get_classifier()
    assert all(torch.equal(w, old[n]) for n, w in kept.state_dict().items())
