"""Multi-task for vision (timm and transformers backbones) and speech (wav2vec2, Whisper's encoder): one
shared backbone run once per batch, a head per task, per-task metrics and per-task folders that
pipeline() loads with that task's label names, and the multi-task model rebuilt from them."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_transfer import finetune
from hf_transfer.errors import RecipeError
from hf_transfer.outputs.multitask import load_multitask
from hf_transfer.outputs.verify import verify
from hf_transfer.tasks import audio as speech
from hf_transfer.tasks import images
from hf_transfer.validate import load_recipe
from tests.tiny import multitask_speech_recipe, save_tiny_audio_model, write_multitask_audio
from tests.tiny_vision import (
    CLASSES, PATTERN_ORDER, multitask_vision_recipe, pattern, save_tiny_timm, save_tiny_vit, write_multitask_images,
)

VISION_LABELS = {"pattern": PATTERN_ORDER, "colour": ["colour", "grey"]}  # a ClassLabel keeps its order
SPEECH_LABELS = {"pitch": ["high", "low"], "level": ["loud", "quiet"]}


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    return write_multitask_images(tmp_path_factory.mktemp("mt-images"))


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    return write_multitask_audio(tmp_path_factory.mktemp("mt-tones"))


@pytest.fixture(scope="module", params=["timm", "transformers"])
def vision_run(request, image_files, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"mt-{request.param}")
    if request.param == "timm":
        model = save_tiny_timm(root / "model", "test_resnet")
    else:
        model = save_tiny_vit(root / "model")
    return finetune(multitask_vision_recipe(model, image_files, root / "out", library=request.param))


@pytest.fixture(scope="module", params=["wav2vec2", "whisper"])
def speech_run(request, audio_files, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"mt-{request.param}")
    model = save_tiny_audio_model(root / "model", request.param)
    return finetune(multitask_speech_recipe(model, audio_files, root / "out"))


def probe_images() -> list:
    import random

    rng = random.Random(7)
    return [pattern(kind, rng, grey=i % 2 == 0).convert("RGB") for i, kind in enumerate(CLASSES * 2)]


def probe_clips(audio_files) -> list[np.ndarray]:
    path = Path(audio_files["test"])
    return [speech.load_audio(r["path"], 16000, [path.parent]) for r in csv.DictReader(path.open())]


def in_memory(model, batches: list[dict], names: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each task's top label for each batch, from the trained multi-task model still in memory."""
    model = model.eval()
    with torch.no_grad():
        logits = [model(**b).logits for b in batches]
    return {t.name: [names[t.name][int(i)] for lg in logits for i in lg[k].argmax(-1)]
            for k, t in enumerate(model.tasks)}


def check_labelled_rows(metrics: dict, files: dict[str, str], columns: dict[str, str], names) -> None:
    """Per-task test metrics, each counted on the rows that have that task's label."""
    import datasets

    test = datasets.load_dataset(Path(files["test"]).suffix[1:], data_files=files["test"], split="train")
    for task, column in columns.items():
        labelled = sum(1 for v in test[column] if v not in (None, ""))
        assert metrics["test"][f"test_{task}_samples"] == labelled, task
        assert 0 <= metrics["test"][f"test_{task}_accuracy"] <= 1, task
        assert f"eval_{task}_accuracy" in metrics["validation"], task
    assert any(v in (None, "") for v in test[columns[list(names)[1]]])  # the second task misses some rows


def check_folders(out: Path, names: dict[str, list[str]], pipeline_task: str, inputs, expected) -> None:
    """Each task folder loads in pipeline() with that task's label names and predicts as the multi-task model."""
    from transformers import AutoConfig, pipeline

    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    for task, labels in names.items():
        id2label = AutoConfig.from_pretrained(out / task).id2label  # timm's label_names, as transformers reads them
        assert [id2label[i] for i in range(len(id2label))] == labels, task
        clf = pipeline(pipeline_task, model=str(out / task), device="cpu")
        assert [r[0]["label"] for r in clf(inputs, top_k=1)] == expected[task], task


def check_reload(result, batches: list[dict]) -> None:
    """load_multitask rebuilds the model (one backbone) with the trained model's logits."""
    rebuilt = load_multitask(result.output_dir)
    trained = result.trainer.model.eval()
    with torch.no_grad():
        for b in batches:
            assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(rebuilt(**b).logits, trained(**b).logits))
    assert sum(p.numel() for p in rebuilt.parameters()) < 2 * sum(p.numel() for p in rebuilt.backbone.parameters())


def check_verify(result, names: dict[str, list[str]]) -> None:
    """verify reloads each task folder as a Hub user would and reproduces that task's metrics exactly."""
    checked = verify(result.output_dir)
    assert [part.folder.name for part in checked.tasks] == list(names)
    for part in checked.tasks:
        assert part.compared["test"]["accuracy"][0] == result.metrics["test"][f"test_{part.folder.name}_accuracy"]
        assert part.compared["test"]["samples"][0] == result.metrics["test"][f"test_{part.folder.name}_samples"]


def check_backbone_runs_once(model, batch: dict) -> None:
    calls = []
    hook = model.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            out = model.eval()(**batch)
    finally:
        hook.remove()
    assert calls == [1] and len(out.logits) == len(model.tasks)


# --------------------------------------------------------------------------- vision


def vision_batch(result) -> dict:
    tensors = images.eval_transform(result.trainer.processing_class)(probe_images())
    return {"pixel_values": torch.stack([torch.as_tensor(x) for x in tensors])}


def test_vision_metrics_are_per_task_on_labelled_rows(vision_run, image_files):
    columns = {"pattern": "pattern", "colour": "colour"}
    check_labelled_rows(vision_run.metrics, image_files, columns, VISION_LABELS)


def test_vision_task_folders_load_in_pipeline_and_predict_as_the_multitask_model(vision_run):
    expected = in_memory(vision_run.trainer.model, [vision_batch(vision_run)], VISION_LABELS)
    check_folders(vision_run.output_dir, VISION_LABELS, "image-classification", probe_images(), expected)


def test_vision_multitask_model_shares_one_backbone_and_reloads(vision_run):
    batch = vision_batch(vision_run)
    check_backbone_runs_once(vision_run.trainer.model, batch)
    check_reload(vision_run, [batch])


def test_vision_task_folders_reproduce_their_metrics(vision_run):
    check_verify(vision_run, VISION_LABELS)


def test_timm_task_folder_is_a_timm_folder(vision_run):
    import timm

    out, model = vision_run.output_dir, vision_run.trainer.model.eval()
    if json.loads((out / "pattern" / "config.json").read_text()).get("model_type") != "timm_wrapper":
        pytest.skip("a transformers backbone: its folders are transformers folders")
    batch = vision_batch(vision_run)
    with torch.no_grad():
        logits = dict(zip((t.name for t in model.tasks), model(**batch).logits))
    for task, labels in VISION_LABELS.items():
        cfg = json.loads((out / task / "config.json").read_text())
        assert cfg["label_names"] == labels and cfg["num_classes"] == len(labels), task
        reloaded = timm.create_model(f"local-dir:{out / task}", pretrained=True).eval()
        with torch.no_grad():
            assert torch.allclose(reloaded(batch["pixel_values"]), logits[task], atol=1e-5), task


# --------------------------------------------------------------------------- speech


def speech_batches(result, audio_files) -> list[dict]:
    fe = result.trainer.processing_class
    return [dict(fe(w, sampling_rate=16000, return_tensors="pt")) for w in probe_clips(audio_files)]


def test_speech_metrics_are_per_task_on_labelled_rows(speech_run, audio_files):
    check_labelled_rows(speech_run.metrics, audio_files, {"pitch": "label", "level": "level"}, SPEECH_LABELS)


def test_speech_task_folders_load_in_pipeline_and_predict_as_the_multitask_model(speech_run, audio_files):
    expected = in_memory(speech_run.trainer.model, speech_batches(speech_run, audio_files), SPEECH_LABELS)
    inputs = [{"raw": w, "sampling_rate": 16000} for w in probe_clips(audio_files)]
    check_folders(speech_run.output_dir, SPEECH_LABELS, "audio-classification", inputs, expected)


def test_speech_multitask_model_shares_one_backbone_and_reloads(speech_run, audio_files):
    batches = speech_batches(speech_run, audio_files)
    check_backbone_runs_once(speech_run.trainer.model, batches[0])
    check_reload(speech_run, batches[:2])


def test_speech_task_folders_reproduce_their_metrics(speech_run):
    check_verify(speech_run, SPEECH_LABELS)


# --------------------------------------------------------------------------- recipe errors


def test_mixup_and_a_problem_type_the_task_lacks_are_refused_in_one_line(image_files, audio_files, tmp_path):
    raw = multitask_vision_recipe(tmp_path, image_files, tmp_path / "out")
    raw["vision"]["mixup_alpha"] = 0.2
    with pytest.raises(RecipeError, match=r"^vision.mixup_alpha: not available with tasks"):
        load_recipe(raw)
    raw = multitask_speech_recipe(tmp_path, audio_files, tmp_path / "out")
    raw["tasks"][1]["problem_type"] = "regression"
    with pytest.raises(RecipeError, match=r"^tasks\[1\].problem_type: task audio-classification takes "
                                          r"single_label_classification, not 'regression'$"):
        load_recipe(raw)


# --------------------------------------------------------------------------- the derived second labels


def test_fashion_mnist_categories_are_derived_from_the_class(tmp_path):
    import datasets
    from PIL import Image

    from hf_transfer.assets import vision

    source = tmp_path / "fashion-mnist"
    source.mkdir()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=vision.FASHION_LABELS)})
    for split in ("train", "validation", "test"):
        rows = {"image": [Image.new("L", (28, 28), i) for i in range(10)], "label": list(range(10))}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(source / f"{split}.parquet"))
    dest = vision.prepare_fashion_mnist_categories(tmp_path / "fashion-mnist-categories")
    ds = datasets.Dataset.from_parquet(str(dest / "test.parquet"))
    assert ds.features["category"].names == ["top", "trouser_or_dress", "footwear", "bag"]
    got = {vision.FASHION_LABELS[y]: ds.features["category"].int2str(c) for y, c in zip(ds["label"], ds["category"])}
    assert got == {"T-shirt/top": "top", "Trouser": "trouser_or_dress", "Pullover": "top", "Dress": "trouser_or_dress",
                   "Coat": "top", "Sandal": "footwear", "Shirt": "top", "Sneaker": "footwear", "Bag": "bag",
                   "Ankle boot": "footwear"}


def test_spoken_digits_sex_reads_espeak_variant_files_and_leaves_unknown_blank(tmp_path, monkeypatch):
    from hf_transfer.assets import speech as speech_assets

    data = tmp_path / "espeak-ng-data"
    (data / "voices" / "!v").mkdir(parents=True)
    (data / "voices" / "!v" / "Andy").write_text("name Andy\ngender Male\n")
    (data / "voices" / "!v" / "f3").write_text("name female3\ngender female 70\n")
    (data / "voices" / "!v" / "klatt").write_text("name klatt\nklatt 1\n")
    monkeypatch.setattr(speech_assets, "espeak_data_dir", lambda: data)
    source = tmp_path / "spoken-digits"
    source.mkdir()
    voices = {"train": ["en+Andy", "en+klatt"], "validation": ["en+klatt"], "test": ["en-us+f3"]}
    for split, names in voices.items():
        rows = "".join(f"{split}/{v}_0_one.wav,one,{v}\n" for v in names)
        (source / f"{split}.csv").write_text("audio,label,voice\n" + rows)
    dest = speech_assets.prepare_spoken_digits_sex(tmp_path / "spoken-digits-sex", source)
    train = list(csv.DictReader((dest / "train.csv").open()))
    assert [(r["voice"], r["sex"]) for r in train] == [("en+Andy", "male"), ("en+klatt", "")]
    assert train[0]["audio"] == "../spoken-digits/train/en+Andy_0_one.wav"
    assert [r["sex"] for r in csv.DictReader((dest / "test.csv").open())] == ["female"]
