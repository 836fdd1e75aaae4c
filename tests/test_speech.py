"""Speech modality: decoding, cropping, augmentation, Whisper's short input, strategies and
end-to-end runs on tiny wav2vec2 / HuBERT / Whisper models built in code."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hf_transfer import finetune
from hf_transfer import validate as config
from hf_transfer.tasks import audio as speech
from hf_transfer.validate import load_recipe
from hf_transfer.recipe.yaml import parse_yaml
from hf_transfer.errors import DataError, RecipeError
from hf_transfer.strategies.freeze import FullConfig, PartialConfig
from hf_transfer.tasks import audio_classification, resolve
from hf_transfer.strategies.peft import LoraConfig
from hf_transfer.tasks.audio import SpeechConfig
from hf_transfer.strategies import apply_strategy
from hf_transfer.anatomy import backbone_of
from tests.tiny import save_tiny_audio_model, speech_recipe, write_audio_data

ROOT = Path(__file__).resolve().parents[1]
HUB_RECIPES = {"wav2vec2_superb_ks.yaml": "wav2vec2", "hubert_speech_commands.yaml": "hubert",
               "whisper_superb_ks.yaml": "whisper"}


@pytest.fixture(scope="session")
def tiny_audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-audio")
    return {f: save_tiny_audio_model(root / f, f) for f in ("wav2vec2", "hubert", "whisper")}


@pytest.fixture(scope="session")
def audio_files(tmp_path_factory):
    return write_audio_data(tmp_path_factory.mktemp("tones"))


def clips(audio_files):
    import csv

    path = Path(audio_files["csv"]["test"])
    rows = list(csv.DictReader(path.open()))
    return [speech.load_audio(r["path"], 16000, [path.parent]) for r in rows]


def saved_and_in_memory_labels(out: Path, model, waves, model_for_pipeline=None):
    from transformers import AutoFeatureExtractor, pipeline

    fe = AutoFeatureExtractor.from_pretrained(out)
    model = model.eval()
    with torch.no_grad():
        logits = [model(**fe(w, sampling_rate=16000, return_tensors="pt")).logits for w in waves]
    cfg = (model.base_model.model if hasattr(model, "peft_config") else model).config
    expected = [cfg.id2label[int(x.argmax())] for x in logits]
    clf = pipeline("audio-classification", model=model_for_pipeline or str(out), feature_extractor=fe, device="cpu")
    return [r[0]["label"] for r in clf([w.copy() for w in waves])], expected


# --------------------------------------------------------------------------- registry, recipe


def test_speech_section_is_checked(tmp_path):
    base = {"model": {"name_or_path": "m", "modality": "speech"}, "data": {"path": "csv"}}
    assert load_recipe(base).speech == SpeechConfig()
    with pytest.raises(RecipeError, match="speech.max_duration: must be positive"):
        load_recipe(base, {"speech.max_duration": -1})
    with pytest.raises(RecipeError, match=r"speech.noise_snr_db: expected a number or \[low, high\]"):
        load_recipe(base, {"speech.noise_snr_db": [20, 5]})
    with pytest.raises(RecipeError, match="speech.bogus: unknown key"):
        load_recipe(base, {"speech.bogus": 1})
    with pytest.raises(RecipeError, match="speech: section only applies with model.modality: speech"):
        load_recipe({"model": {"name_or_path": "m"}, "data": {"path": "csv"}, "speech": {}})


def test_hub_recipes_validate():
    for name in HUB_RECIPES:
        recipe = load_recipe(ROOT / "recipes" / name)
        assert recipe.model.modality == "speech" and "/" in recipe.model.name_or_path


# --------------------------------------------------------------------------- audio


def test_load_audio_resamples_mixes_and_reads_bytes(tmp_path):
    import soundfile as sf

    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1).astype("float32")
    sf.write(tmp_path / "a.flac", stereo, 8000)
    from_path = speech.load_audio("a.flac", 16000, [tmp_path])
    from_bytes = speech.load_audio({"bytes": (tmp_path / "a.flac").read_bytes(), "path": None}, 16000)
    from_array = speech.load_audio({"array": stereo[:, 0], "sampling_rate": 8000}, 16000)
    assert from_path.shape == (16000,) and from_path.dtype == np.float32
    assert np.allclose(from_path, from_bytes) and np.allclose(from_path, from_array, atol=1e-3)
    spectrum = np.abs(np.fft.rfft(from_path))
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 Hz bins: still a 440 Hz tone
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(DataError, match="speech.audio_column: cannot read audio"):
        speech.load_audio(str(tmp_path / "bad.wav"), 16000)
    with pytest.raises(DataError, match=f"^speech.audio_column: audio file not found: 'gone.wav' \\(looked in the "
                                        f"working folder, {tmp_path}\\)$"):
        speech.load_audio("gone.wav", 16000, [tmp_path, tmp_path])
    with pytest.raises(DataError, match="^speech.audio_column: audio file not found: '/gone.wav'$"):
        speech.load_audio("/gone.wav", 16000, [tmp_path])


def test_crop_random_in_training_centre_at_eval():
    wave = np.arange(100, dtype=np.float32)
    assert np.array_equal(speech.crop(wave, 40, None), wave[30:70])
    starts = {int(speech.crop(wave, 40, np.random.default_rng(s))[0]) for s in range(20)}
    assert len(starts) > 5 and all(0 <= s <= 60 for s in starts)
    assert np.array_equal(speech.crop(wave[:30], 40, None), wave[:30])  # shorter: left for padding


def test_augmentations_do_what_they_say():
    rng = np.random.default_rng(0)
    wave = np.sin(np.arange(16000) / 5).astype(np.float32)
    noisy = speech.augment(wave, 16000, SpeechConfig(noise_snr_db=10.0), rng)
    snr = 10 * np.log10(np.mean(wave**2) / np.mean((noisy - wave) ** 2))
    assert abs(snr - 10) < 0.3
    gained = speech.augment(wave, 16000, SpeechConfig(gain_db=6.0), rng)
    ratio = 20 * np.log10(np.abs(gained).max() / np.abs(wave).max())
    assert -6.01 <= ratio <= 6.01 and abs(ratio) > 1e-3
    shifted = speech.augment(np.ones(16000, np.float32), 16000, SpeechConfig(time_shift=0.25), rng)
    zeros = int((shifted == 0).sum())
    assert 0 < zeros <= 4000
    assert (shifted[:zeros] == 0).all() or (shifted[-zeros:] == 0).all()
    assert np.array_equal(speech.augment(wave, 16000, SpeechConfig(), rng), wave)


# --------------------------------------------------------------------------- Whisper's input length


def test_whisper_input_is_cut_to_the_clip_length(tiny_audio, audio_files, tmp_path):
    from transformers import WhisperForAudioClassification

    recipe = load_recipe(speech_recipe(tiny_audio["whisper"], audio_files["csv"], tmp_path), {"speech.max_duration": 1.5})
    fe = speech.load_processor(resolve(recipe)[1])
    assert (fe.chunk_length, fe.n_samples, fe.nb_max_frames) == (2, 32000, 200)
    model = audio_classification.load_model(resolve(recipe)[1], ["high", "low"])
    full = WhisperForAudioClassification.from_pretrained(tiny_audio["whisper"], num_labels=2)
    assert model.config.max_source_positions == 100
    assert torch.equal(model.encoder.embed_positions.weight, full.encoder.embed_positions.weight[:100])
    out = model(**fe(np.zeros(20000, np.float32), sampling_rate=16000, return_tensors="pt"))
    assert out.logits.shape == (1, 2)
    long = load_recipe(recipe, {"speech.short_whisper_input": False})
    assert speech.load_processor(resolve(long)[1]).nb_max_frames == 3000
    assert audio_classification.load_model(resolve(long)[1], ["high", "low"]).config.max_source_positions == 1500


# --------------------------------------------------------------------------- strategies


def test_strategies_find_the_whisper_encoder_and_the_heads(tiny_audio, audio_files, tmp_path):
    recipe = load_recipe(speech_recipe(tiny_audio["whisper"], audio_files["csv"], tmp_path))
    model = audio_classification.load_model(resolve(recipe)[1], ["high", "low"])
    assert backbone_of(model) is model.encoder
    apply_strategy(model, PartialConfig(freeze="backbone"))
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"projector", "classifier"}
    model = audio_classification.load_model(resolve(recipe)[1], ["high", "low"])
    peft_model = apply_strategy(model, LoraConfig(r=2))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in names)
    assert any("projector" in n for n in names) and any("classifier" in n for n in names)


def test_feature_encoder_stays_frozen_under_full(tiny_audio, audio_files, tmp_path):
    recipe = load_recipe(speech_recipe(tiny_audio["wav2vec2"], audio_files["csv"], tmp_path))
    model = apply_strategy(audio_classification.load_model(resolve(recipe)[1], ["high", "low"]), FullConfig())
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("wav2vec2.feature_extractor.") for n in frozen)
    recipe = load_recipe(recipe, {"speech.freeze_feature_encoder": False})
    model = apply_strategy(audio_classification.load_model(resolve(recipe)[1], ["high", "low"]), FullConfig())
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- end to end


def test_wav2vec2_full_run_reloads_with_pipeline(tiny_audio, audio_files, tmp_path):
    out = tmp_path / "out"
    recipe = speech_recipe(tiny_audio["wav2vec2"], audio_files["csv"], out)
    recipe["speech"] |= {"noise_snr_db": [10, 30], "gain_db": 3.0, "time_shift": 0.1}
    result = finetune(recipe)
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "recipe.yaml", "metrics.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "high", "1": "low"}
    assert 0 <= result.metrics["test"]["test_accuracy"] <= 1
    before, after = load_file(tiny_audio["wav2vec2"] / "model.safetensors"), load_file(out / "model.safetensors")
    conv = [k for k in before if k.startswith("feature_extractor.")]
    assert conv and all(torch.equal(before[k], after[f"wav2vec2.{k}"]) for k in conv)
    key = "encoder.layers.1.feed_forward.output_dense.weight"
    assert not torch.equal(before[key], after[f"wav2vec2.{key}"])
    got, expected = saved_and_in_memory_labels(out, result.trainer.model, clips(audio_files))
    assert got == expected


def test_whisper_on_a_hub_style_audio_column_reloads_with_pipeline(tiny_audio, audio_files, tmp_path):
    out = tmp_path / "out"
    recipe = speech_recipe(tiny_audio["whisper"], audio_files["parquet"], out)
    recipe["data"]["path"] = "parquet"
    recipe["speech"]["audio_column"] = "audio"
    result = finetune(recipe)
    assert json.loads((out / "config.json").read_text())["max_source_positions"] == 50
    assert json.loads((out / "preprocessor_config.json").read_text())["chunk_length"] == 1
    got, expected = saved_and_in_memory_labels(out, result.trainer.model, clips(audio_files))
    assert got == expected


def test_whisper_lora_saves_head_and_reloads(tiny_audio, audio_files, tmp_path):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForAudioClassification

    out = tmp_path / "out"
    result = finetune(speech_recipe(tiny_audio["whisper"], audio_files["csv"], out, strategy="lora", r=2, merge=True))
    saved = load_file(out / "adapter_model.safetensors")
    assert any("lora_A" in k for k in saved)
    assert any(".projector." in k for k in saved) and any(".classifier." in k for k in saved)
    waves = clips(audio_files)
    got, expected = saved_and_in_memory_labels(out / "merged", result.trainer.model, waves)
    assert got == expected
    # the adapter on the base model: the position table is rebuilt (fixed sinusoids) at the saved length
    base = AutoModelForAudioClassification.from_pretrained(
        tiny_audio["whisper"], config=AutoConfig.from_pretrained(out), ignore_mismatched_sizes=True)
    reloaded = PeftModel.from_pretrained(base, out)
    got, _ = saved_and_in_memory_labels(out, reloaded, waves, model_for_pipeline=reloaded)
    assert got == expected


def test_missing_audio_column_is_a_clear_error(tiny_audio, audio_files, tmp_path):
    recipe = speech_recipe(tiny_audio["wav2vec2"], audio_files["csv"], tmp_path / "out")
    recipe["speech"]["audio_column"] = "file"
    with pytest.raises(DataError, match="speech.audio_column: column 'file' not in split 'train'"):
        finetune(recipe)


@pytest.mark.parametrize("name", sorted(HUB_RECIPES))
def test_hub_recipe_runs_two_steps_on_a_tiny_stand_in(name, tiny_audio, audio_files, tmp_path):
    raw = parse_yaml((ROOT / "recipes" / name).read_text(), name)  # YAML 1.2 floats
    raw["model"]["name_or_path"] = str(tiny_audio[HUB_RECIPES[name]])
    raw["data"] = {**raw["data"], "path": "parquet", "name": None, "data_files": audio_files["parquet"],
                   "validation_split": None, "test_split": "test", "label_names": None}
    raw["training"] |= {"output_dir": str(tmp_path / "out"), "max_steps": 2, "per_device_train_batch_size": 4,
                        "per_device_eval_batch_size": 8, "eval_strategy": "steps", "eval_steps": 2,
                        "save_steps": 2, "disable_tqdm": True, "gradient_accumulation_steps": 1}
    result = finetune(raw)
    assert result.trainer.state.global_step == 2
    assert (tmp_path / "out" / "metrics.json").is_file()


def _as_class_folders(audio_files, root: Path) -> dict[str, str]:
    """The csv splits' clips copied into datasets' audiofolder layout: <root>/<split>/<label>/<clip>.wav."""
    import csv
    import shutil

    for split, path in audio_files["csv"].items():
        for row in csv.DictReader(Path(path).open()):
            target = root / split / row["label"] / Path(row["path"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(path).parent / row["path"], target)
    return {split: str(root / split / "**") for split in audio_files["csv"]}


def test_an_audio_folder_trains_and_evaluates_without_torchcodec(tiny_audio, audio_files, tmp_path):
    """data.path audiofolder (one sub-folder per class) is read with soundfile, not datasets' torchcodec
    decoder; `evaluate` on the test folder reproduces metrics.json; a folder without audio is one line."""
    from hf_transfer.outputs.evaluate import evaluate
    from hf_transfer.tasks.readers import read_audio_folder

    files = _as_class_folders(audio_files, tmp_path / "clips")
    ds = read_audio_folder(files["test"], "data.data_files.test")
    assert sorted(set(ds["label"])) == ["high", "low"] and len(ds) == 6
    assert all(Path(p).parent.name == lab for p, lab in zip(ds["audio"], ds["label"]))
    out = tmp_path / "out"
    recipe = speech_recipe(tiny_audio["whisper"], files, out)
    recipe["data"]["path"] = "audiofolder"
    recipe["speech"]["audio_column"] = "audio"
    finetune(recipe)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["test_samples"] == 6
    [found] = evaluate(out, [str(tmp_path / "clips" / "test")]).values()
    assert found["metrics"] == {k: saved["test"][f"test_{k}"] for k in found["metrics"]}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"data.data_files.train: no audio files .* match .*empty"):
        read_audio_folder(str(tmp_path / "empty" / "**"), "data.data_files.train")


@pytest.mark.parametrize("family", ["wav2vec2", "hubert"])
def test_an_audio_classifier_folder_without_a_recipe_is_taken_for_audio(tmp_path, family):
    """A Hub-style folder (no recipe.yaml) of Wav2Vec2/HuBERT ...ForSequenceClassification: the architecture's
    name ends like a text classifier's, but transformers maps it to audio classification, and so does predict."""
    from transformers import AutoModelForAudioClassification

    from hf_transfer.outputs.predict import predict, task_of_folder

    folder = save_tiny_audio_model(tmp_path / "base", family)
    model = AutoModelForAudioClassification.from_pretrained(folder, num_labels=2, id2label={0: "low", 1: "high"},
                                                            label2id={"low": 0, "high": 1})
    model.save_pretrained(tmp_path / "clf")
    for name in ("preprocessor_config.json",):
        (tmp_path / "clf" / name).write_bytes((folder / name).read_bytes())
    task, spec = task_of_folder(tmp_path / "clf")
    assert task.name == "audio-classification" and spec is None
    write_audio_data(tmp_path / "data", n_train=2, n_test=2)
    clip = next((tmp_path / "data" / "wav").glob("test_*.wav"))
    _, results = predict(tmp_path / "clf", [str(clip)], top_k=2)
    assert sorted(r["label"] for r in results[0]) == ["high", "low"]
