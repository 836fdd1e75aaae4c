"""Task speech-recognition on a tiny Whisper (sequence-to-sequence) and a tiny wav2vec2 body (CTC, vocabulary
built from the transcripts), built in code: labels, vocabulary, WER / CER, strategies, reload, bad rows."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from hf_transfer import finetune
from hf_transfer.errors import DataError, ModelError, RecipeError
from hf_transfer.outputs.predict import predict
from hf_transfer.outputs.verify import verify
from hf_transfer.tasks import resolve, speech_recognition as asr, transcripts
from hf_transfer.validate import load_recipe
from tests.tiny_asr import asr_recipe, save_tiny_ctc_body, save_tiny_whisper_asr, write_csv, write_transcribed_tones

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr")
    return {"whisper": save_tiny_whisper_asr(root / "whisper"), "ctc": save_tiny_ctc_body(root / "ctc"),
            "files": write_transcribed_tones(root / "data"), "root": root}


def spec_of(raw):
    return resolve(load_recipe(raw))[1]


# --------------------------------------------------------------------------- labels, vocabulary, scores


def test_whisper_labels_lose_the_decoder_start_token_and_pad_with_minus_100(kit, tmp_path):
    spec = spec_of(asr_recipe(kit["whisper"], kit["files"], tmp_path / "o"))
    processor = asr.load_processor(spec)
    tok = processor.tokenizer
    start = tok.convert_tokens_to_ids("<|startoftranscript|>")
    ids, problem = asr._text_problem("low", tok, spec, None, start)
    # the tokenizer writes <|startoftranscript|> <|notimestamps|> l o w <|endoftext|>; the model adds the start back
    assert problem == "" and ids == [tok.convert_tokens_to_ids("<|notimestamps|>"), *tok.convert_tokens_to_ids(["l", "o", "w"]),
                                     tok.convert_tokens_to_ids("<|endoftext|>")]
    feats = np.zeros((80, 200), np.float32)
    batch = asr.collator(processor)([{"input_features": feats, "labels": [5, 6, 7]}, {"input_features": feats, "labels": [8]}])
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]
    assert tuple(batch["input_features"].shape) == (2, 80, 200)


def test_ctc_vocabulary_is_built_from_the_training_transcripts(kit, tmp_path, monkeypatch):
    assert transcripts.characters(["ab c", "ca"]) == ["[PAD]", "[UNK]", "|", "a", "b", "c"]
    spec = spec_of(asr_recipe(kit["ctc"], kit["files"], tmp_path / "o"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    asr._PROCESSORS.clear()
    tok = asr.load_processor(spec).tokenizer
    assert not list((tmp_path / "tmp").iterdir())  # the vocabulary file it was read from is gone
    assert set(tok.get_vocab()) == {"[PAD]", "[UNK]", "|", "e", "g", "h", "i", "l", "n", "o", "t", "w"}
    ids = tok("hello tone").input_ids
    assert tok.convert_ids_to_tokens(ids) == list("hello") + ["|"] + list("tone")
    assert transcripts.decode_labels(np.array([ids + [-100, -100]]), tok) == ["hello tone"]  # ll stays ll
    # predictions: repeats merge, then blanks ([PAD], id 0) go: h h [PAD] e l [PAD] l o -> "hello"
    h, e, l_, o = (tok.convert_tokens_to_ids(c) for c in "helo")
    logits = np.eye(len(tok))[[h, h, 0, e, l_, 0, l_, o]][None]
    assert transcripts.decode_predictions(logits, tok) == ["hello"]


def test_wer_and_cer_against_hand_computed_values():
    plain = transcripts.normalizer("none")
    # reference 4 words; hypothesis: one substitution (b -> x), one deletion (d): 2 / 4
    scores = transcripts.error_rates(["a b c d"], ["a x c"], plain)
    assert scores["wer"] == pytest.approx(0.5)
    # characters "a b c d" (7) vs "a x c" (5): one substitution, two deletions (" d") -> 3 / 7
    assert scores["cer"] == pytest.approx(3 / 7)
    # corpus rates: all errors over all reference words (1 + 0) / (2 + 3)
    assert transcripts.error_rates(["a b", "c d e"], ["a", "c d e"], plain)["wer"] == pytest.approx(1 / 5)
    english = transcripts.normalizer("english")
    assert english("Take Two Hundred milligrams!") == english("take 200 milligrams")
    assert transcripts.error_rates(["Take two hundred milligrams."], ["take 200 milligrams"], english)["wer"] == 0.0
    # a reference that normalises to nothing cannot be scored: counted, left out
    assert transcripts.error_rates(["uh", "a b"], ["x", "a b"], english) | {} == {"wer": 0.0, "cer": 0.0, "samples": 2,
                                                                                  "unscored": 1}


# --------------------------------------------------------------------------- strategies, reload


@pytest.mark.parametrize("model, finetune_options", [
    ("whisper", {"strategy": "full"}),
    ("whisper", {"strategy": "partial", "freeze": "encoder"}),
    ("whisper", {"strategy": "lora", "r": 4}),
    ("ctc", {"strategy": "full"}),
    ("ctc", {"strategy": "partial", "freeze": 1}),
    ("ctc", {"strategy": "lora", "r": 4}),
    ("ctc", {"strategy": "staged"}),
], ids=["whisper-full", "whisper-freeze-encoder", "whisper-lora", "ctc-full", "ctc-freeze-1", "ctc-lora", "ctc-staged"])
def test_each_strategy_trains_two_steps_and_reloads_through_the_pipeline(kit, tmp_path, model, finetune_options):
    out = tmp_path / "out"
    result = finetune(asr_recipe(kit[model], kit["files"], out, **finetune_options))
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_wer", "test_cer"} <= set(metrics["test"]) and result.trainer.state.global_step == 2
    assert 0 < metrics["trainable_parameters"] <= metrics["total_parameters"]
    if finetune_options["strategy"] != "full":
        assert metrics["trainable_parameters"] < metrics["total_parameters"]
    if model == "whisper":  # generation as the evaluation did, adapters included
        assert json.loads((out / "generation_config.json").read_text())["max_length"] == 12
    checked = verify(out)  # pipeline("automatic-speech-recognition") without hf_transfer, WER with zero tolerance
    assert checked.compared["test"]["wer"][0] == checked.compared["test"]["wer"][1]
    card = (out / "README.md").read_text()
    assert "automatic-speech-recognition" in card and "type: wer" in card and "- Trained: `" in card
    page = (out / "report.html").read_text()  # WER / CER and curves; no classes, no entities
    assert "<td>WER (metric_for_best_model)</td>" in page and '<section id="curves">' in page
    assert 'id="classes"' not in page and 'id="entities"' not in page
    assert sum(metrics["trained_modules"].values()) == metrics["trainable_parameters"]
    if model == "whisper":
        _reloads_as_trained(result.trainer.model, out)
    if model == "whisper" and finetune_options["strategy"] == "lora":  # encoder and decoder attention
        assert set(metrics["trained_modules"]) == {"model.encoder", "model.decoder"}
        targets = json.loads((out / "adapter_config.json").read_text())["target_modules"]
        assert {t.rsplit(".", 1)[-1] for t in targets} == {"q_proj", "v_proj"}
        assert any(".encoder_attn." in t for t in targets) and any(".encoder.layers." in t for t in targets)


def _reloads_as_trained(trained, out):
    """The Hub user's model (an adapter: base rebuilt at the saved, shortened input length) gives the trained
    model's logits on a clip as the run's feature extractor cuts it; a random tiny model can transcribe
    the same either way, so verify's WER alone would not notice a 30 s base under a 2 s adapter."""
    import torch
    from transformers import AutoFeatureExtractor

    from hf_transfer.outputs.hubuser import load_pipeline
    from hf_transfer.outputs.verify import hub_user_task

    reloaded = load_pipeline(out, hub_user_task(asr.TASK), device="cpu").model.eval()
    fe = AutoFeatureExtractor.from_pretrained(out)
    features = fe(np.sin(np.arange(fe.sampling_rate) / 7.0), sampling_rate=fe.sampling_rate, return_tensors="pt")
    start = torch.tensor([[trained.config.decoder_start_token_id]])
    with torch.no_grad():
        want = trained.eval()(input_features=features.input_features, decoder_input_ids=start).logits
        got = reloaded(input_features=features.input_features, decoder_input_ids=start).logits
    torch.testing.assert_close(got, want)


def test_partial_freeze_encoder_trains_only_the_decoder(kit, tmp_path):
    from hf_transfer.strategies import apply_strategy

    raw = asr_recipe(kit["whisper"], kit["files"], tmp_path / "o", strategy="partial", freeze="encoder")
    recipe = load_recipe(raw)
    task, spec = resolve(recipe)
    model = apply_strategy(task.load_model(spec, None), recipe.finetune)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.decoder.") for n in trainable)
    from hf_transfer.strategies import trained_modules

    assert set(trained_modules(model)) == {"model.decoder"}
    with pytest.raises(ModelError, match="encoder applies to encoder-decoder models"):
        recipe = load_recipe(asr_recipe(kit["ctc"], kit["files"], tmp_path / "o", strategy="partial", freeze="encoder"))
        task, spec = resolve(recipe)
        apply_strategy(task.load_model(spec, None), recipe.finetune)


def test_staged_on_whisper_says_what_to_use_instead(kit, tmp_path):
    with pytest.raises(ModelError, match="no separate head .* use partial with freeze: encoder, or a PEFT method"):
        finetune(asr_recipe(kit["whisper"], kit["files"], tmp_path / "o", strategy="staged"))


def test_predict_prints_transcripts(kit, tmp_path):
    out = tmp_path / "out"
    finetune(asr_recipe(kit["ctc"], kit["files"], out))
    wav = Path(kit["files"]["test"]).parent / "wav"
    (tmp_path / "clips" / "more").mkdir(parents=True)  # a folder: its audio files, in name order, sub-folders too
    shutil.copy(wav / "test_1.wav", tmp_path / "clips" / "more" / "b.wav")
    shutil.copy(wav / "test_0.wav", tmp_path / "clips" / "a.wav")
    (tmp_path / "clips" / "notes.txt").write_text("not audio")
    proc = subprocess.run([sys.executable, "-m", "hf_transfer", "predict", str(out), str(tmp_path / "clips")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()  # each transcript beside its file (it was "<audio>")
    assert [ln.split("\t")[-1] for ln in lines] == [str(tmp_path / "clips" / "a.wav"),
                                                    str(tmp_path / "clips" / "more" / "b.wav")]
    _, results = predict(out, [str(wav / "test_0.wav"), str(wav / "test_1.wav")])
    assert [ln.split("\t")[0] for ln in lines] == [r[0]["text"].strip() for r in results]


def test_compare_reports_the_untouched_model_and_scratch(kit, tmp_path):
    raw = asr_recipe(kit["whisper"], kit["files"], tmp_path / "out")
    raw["compare"] = ["untouched", "scratch"]
    result = finetune(raw)
    rows = {r["name"]: r for r in result.report["runs"]}
    assert set(rows) == {"main", "untouched", "scratch"} and result.report["metric"] == "wer"
    assert rows["untouched"]["test"] is not None and rows["untouched"]["trainable_parameters"] == 0
    assert "untouched" in (tmp_path / "out" / "report.md").read_text()


# --------------------------------------------------------------------------- bad input


def _bad(kit, tmp_path, rows, split="validation", model="ctc", **speech):
    files = dict(kit["files"])
    files[split] = str(tmp_path / f"{split}.csv")
    write_csv(Path(files[split]), rows)
    raw = asr_recipe(kit[model], files, tmp_path / "out")
    raw["speech"] |= speech
    return raw


def test_characters_outside_the_ctc_vocabulary_name_the_row(kit, tmp_path):
    wav = str(Path(kit["files"]["train"]).parent / "wav" / "train_0.wav")
    raw = _bad(kit, tmp_path, [(wav, "low tone"), (wav, "low zone")])
    with pytest.raises(DataError, match=r"split 'validation' row 1: characters outside the model's vocabulary: 'z'"):
        finetune(raw)


def test_an_empty_transcript_names_the_row_or_is_skipped_and_counted(kit, tmp_path, caplog):
    wav = str(Path(kit["files"]["train"]).parent / "wav" / "train_0.wav")
    rows = [(wav, "low tone"), (wav, " "), (wav, "high tone")]
    with pytest.raises(DataError, match=r"split 'validation' row 1: the transcript is empty \(1 such rows"):
        finetune(_bad(kit, tmp_path, rows))
    result = finetune(_bad(kit, tmp_path, rows, bad_rows="skip"))
    assert result.metrics["validation"]["eval_samples"] == 2
    assert "skipped 1 of 3 rows of split 'validation'" in caplog.text


def test_a_clip_longer_than_the_model_reads_names_the_row(kit, tmp_path):
    import soundfile as sf

    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(8000 * 3, np.float32), 8000)  # 3 s; Whisper's input is shortened to 2 s
    wav = str(Path(kit["files"]["train"]).parent / "wav" / "train_0.wav")
    with pytest.raises(DataError, match=r"split 'train' row 1: the clip is 3.0 s, longer than the 2 s the model reads"):
        finetune(_bad(kit, tmp_path, [(wav, "low tone"), (str(long), "high tone")], split="train", model="whisper"))


def test_a_missing_audio_file_names_the_row_and_file(kit, tmp_path):
    wav = str(Path(kit["files"]["train"]).parent / "wav" / "train_0.wav")
    with pytest.raises(DataError, match=r"split 'test' row 0: audio file not found: '.*nowhere.wav'"):
        finetune(_bad(kit, tmp_path, [(str(tmp_path / "nowhere.wav"), "low tone"), (wav, "low tone")], split="test"))


def test_recipe_errors_are_one_line(kit, tmp_path):
    raw = asr_recipe(kit["whisper"], kit["files"], tmp_path / "o")
    with pytest.raises(RecipeError, match="speech.time_shift: shifting would cut words"):
        load_recipe(raw | {"speech": raw["speech"] | {"time_shift": 0.1}})
    with pytest.raises(RecipeError, match="training.generation_max_length"):
        load_recipe(raw | {"training": raw["training"] | {"generation_max_length": "long"}})
    with pytest.raises(RecipeError, match="English-only"):
        asr.load_processor(spec_of(raw | {"speech": raw["speech"] | {"language": "fr"}}))


HUB_RECIPES = ["whisper_small_minds14_asr.yaml", "wav2vec2_base_minds14_ctc.yaml"]


@pytest.mark.parametrize("name", HUB_RECIPES)
def test_hub_recipes_validate_and_run_two_steps_on_a_tiny_stand_in(kit, tmp_path, name):
    """The Hub recipes as they are, with the model and the data swapped for tiny local stand-ins."""
    from hf_transfer.recipe.yaml import read_recipe_file

    raw = read_recipe_file(ROOT / "recipes" / name)
    recipe = load_recipe(raw)
    assert recipe.task == "speech-recognition" and "/" in recipe.model.name_or_path
    multilingual = recipe.sections["speech"].language is not None
    stand_in = (save_tiny_whisper_asr(tmp_path / "model", multilingual=True) if multilingual
                else save_tiny_ctc_body(tmp_path / "model"))
    files = {k: v for k, v in kit["files"].items()}
    for split in files:  # the Hub dataset's column name
        text = Path(files[split]).read_text().replace("path,text", "audio,transcription", 1)
        (tmp_path / f"{split}.csv").write_text(text.replace("wav/", str(Path(files[split]).parent / "wav") + "/"))
        files[split] = str(tmp_path / f"{split}.csv")
    raw["model"]["name_or_path"] = str(stand_in)
    raw["data"] = {"path": "csv", "data_files": files}
    raw["training"] |= {"output_dir": str(tmp_path / "out"), "max_steps": 2, "per_device_train_batch_size": 4,
                        "per_device_eval_batch_size": 4, "generation_max_length": 12, "dataloader_num_workers": 0,
                        "disable_tqdm": True}
    result = finetune(raw)
    assert result.trainer.state.global_step == 2 and "test_wer" in result.metrics["test"]
    if multilingual:  # labels start with the language and task the recipe names
        tok = asr.load_processor(spec_of(raw)).tokenizer
        assert tok.convert_ids_to_tokens(tok("low").input_ids)[:4] == ["<|startoftranscript|>", "<|en|>",
                                                                        "<|transcribe|>", "<|notimestamps|>"]


def test_a_frozen_backbone_does_not_cache_speech_recognition_features(kit, tmp_path):
    """A CTC head is one Linear layer, but it labels every frame: the task record says no cache; asked for, one
    line. (Whisper has no separate head: freeze: backbone is refused before, naming finetune.freeze.)"""
    raw = asr_recipe(kit["ctc"], kit["files"], tmp_path / "o", strategy="partial", freeze="backbone",
                     cache_features=True)
    with pytest.raises(ModelError, match="finetune.cache_features: cannot cache features: the speech-recognition "
                                         "head reads more than one feature per labelled item"):
        finetune(raw)
