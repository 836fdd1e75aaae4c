"""Audio in, model inputs out: the data side of the speech tasks, with their `speech:` section.

The model's own feature extractor (wav2vec2, HuBERT, WavLM, AST, Whisper). Audio is decoded with
soundfile, never with the datasets `Audio` feature's
own decoder (datasets >= 4 decodes through torchcodec, which needs FFmpeg's shared libraries):
the column is cast with `decode=False` and its bytes or paths are read here, mixed to mono and
resampled (scipy) to the feature extractor's rate once. Cropping, augmentation and feature
extraction run on the fly (`Dataset.set_transform`): a random window and augmentation for
training, the centre window for evaluation.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from dataclasses import dataclass

from hf_transfer.errors import DataError, RecipeError
from hf_transfer.recipe.schema import file_patterns
from hf_transfer.tasks.base import TaskSpec
from hf_transfer.tasks.data import default_num_workers
from hf_transfer.tasks.loaders import load_auto_processor

log = logging.getLogger(__name__)


@dataclass
class SpeechConfig:
    """The recipe's `speech:` section (model.modality: speech)."""

    audio_column: str = "audio"
    """Column holding the audio: a file path, or a datasets `Audio` value; decoded with soundfile."""
    max_duration: float | None = None
    """Seconds the model sees: training crops a random window, evaluation the centre; shorter clips
    are padded. None: whole clips (padded per batch)."""
    sampling_rate: int | None = None
    """Rate the model is fed; default the feature extractor's. Another value rebuilds the extractor."""
    short_whisper_input: bool = True
    """Whisper: feed max_duration (rounded up to whole seconds) instead of 30 s, keeping the first
    rows of the encoder's position table. False: the 30 s input Whisper was trained on."""
    freeze_feature_encoder: bool = True
    """wav2vec2-style models (wav2vec2, HuBERT, WavLM): the convolutional feature encoder stays frozen."""
    noise_snr_db: float | list[float] | None = None
    """Training augmentation: white noise at this SNR in dB, or at one drawn from [low, high]."""
    gain_db: float | None = None
    """Training augmentation: gain drawn from [-gain_db, +gain_db] dB."""
    time_shift: float | None = None
    """Training augmentation: shift by up to +-time_shift seconds (zero-filled)."""

    def __post_init__(self) -> None:
        for key in ("max_duration", "sampling_rate", "gain_db", "time_shift"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise RecipeError(f"speech.{key}: must be positive, got {value!r}")
        snr = self.noise_snr_db
        if isinstance(snr, list) and (len(snr) != 2 or snr[0] > snr[1]):
            raise RecipeError(f"speech.noise_snr_db: expected a number or [low, high], got {snr!r}")


def training_defaults() -> dict[str, Any]:
    """TrainingArguments defaults (a recipe value still wins): clips are cropped, augmented and turned
    into features every step, in DataLoader workers sized to the machine."""
    return {"dataloader_num_workers": default_num_workers()}


def options(spec: TaskSpec) -> SpeechConfig:
    return spec.options or SpeechConfig()


def stochastic_augmentation(spec: TaskSpec) -> bool:
    """Whether training clips are cropped or augmented randomly (max_duration crops a random window)."""
    opts = options(spec)
    return bool(opts.max_duration or opts.noise_snr_db is not None or opts.gain_db or opts.time_shift)


def input_columns(spec: TaskSpec) -> dict[str, str]:
    """Recipe key -> dataset column that the model reads."""
    return {"speech.audio_column": options(spec).audio_column}


# --------------------------------------------------------------------------- feature extractor


def is_whisper_like(fe) -> bool:
    """A log-mel extractor padding every clip to `chunk_length` seconds (Whisper)."""
    return hasattr(fe, "chunk_length") and hasattr(fe, "nb_max_frames")


def rebuilt(fe, **changes):
    return type(fe).from_dict({**fe.to_dict(), **changes})


def load_processor(spec: TaskSpec):
    """The model's feature extractor, at the recipe's rate and (Whisper) input length."""
    from transformers import AutoFeatureExtractor

    opts = options(spec)
    fe = load_auto_processor(AutoFeatureExtractor, spec.model, "a feature extractor")
    if opts.sampling_rate and opts.sampling_rate != fe.sampling_rate:
        log.warning("speech.sampling_rate: %d Hz, the model was trained at %d Hz", opts.sampling_rate, fe.sampling_rate)
        fe = rebuilt(fe, sampling_rate=opts.sampling_rate)
    if is_whisper_like(fe) and opts.short_whisper_input and opts.max_duration:
        seconds = math.ceil(opts.max_duration)
        if seconds < fe.chunk_length:
            fe = rebuilt(fe, chunk_length=seconds)
            if fe.nb_max_frames % 2:
                raise RecipeError(
                    f"speech.max_duration: {seconds} s gives {fe.nb_max_frames} mel frames; Whisper needs an even number"
                )
    return fe


# --------------------------------------------------------------------------- decoding


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(wave, target // g, rate // g).astype(np.float32)


def _find(path: str, bases: list[Path]) -> str:
    """`path` as given or beside one of the data files (`bases`); a one-line error naming where it looked."""
    if Path(path).exists():
        return path
    if Path(path).is_absolute():
        raise DataError(f"speech.audio_column: audio file not found: {path!r}")
    for base in bases:
        if (base / path).exists():
            return str(base / path)
    where = ", ".join(dict.fromkeys(["the working folder", *map(str, bases)]))
    raise DataError(f"speech.audio_column: audio file not found: {path!r} (looked in {where})")


def load_audio(value: Any, target: int, bases: list[Path] = ()) -> np.ndarray:
    """One clip as float32 mono at `target` Hz, from a path, {bytes, path} or {array, sampling_rate}."""
    import soundfile as sf

    if isinstance(value, dict) and value.get("array") is not None:
        if not value.get("sampling_rate"):
            raise DataError("speech.audio_column: an audio array without its sampling_rate")
        wave, rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
        name = value.get("path") or "<array>"
    else:
        if isinstance(value, dict) and value.get("bytes"):
            source, name = io.BytesIO(value["bytes"]), value.get("path") or "<bytes>"
        elif isinstance(value, dict) and value.get("path"):
            source = name = _find(value["path"], bases)
        elif isinstance(value, str):
            source = name = _find(value, bases)
        else:
            raise DataError(f"speech.audio_column: expected a file path or an audio value, got {value!r:.80}")
        try:
            wave, rate = sf.read(source, dtype="float32", always_2d=True)
        except (RuntimeError, OSError, sf.LibsndfileError) as err:
            raise DataError(f"speech.audio_column: cannot read audio {name!r}: {str(err).splitlines()[0]}") from None
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    fault = sample_fault(wave)
    if fault:
        raise DataError(f"speech.audio_column: audio {name!r} {fault}")
    return resample(wave, rate, target)


def sample_fault(wave: np.ndarray) -> str | None:
    """What makes decoded samples unusable, or None: none at all, or NaN / infinite ones (in training a NaN loss
    at the step that draws them, blamed on the learning rate; in predict and serve NaN scores)."""
    if wave.size == 0:
        return "is empty (0 samples)"
    if not np.isfinite(wave).all():
        return "holds NaN or infinite samples"
    return None


# --------------------------------------------------------------------------- cropping, augmentation


def crop(wave: np.ndarray, n: int | None, rng: np.random.Generator | None) -> np.ndarray:
    """At most `n` samples: a random window with `rng`, else the centre."""
    if not n or len(wave) <= n:
        return wave
    start = int(rng.integers(0, len(wave) - n + 1)) if rng is not None else (len(wave) - n) // 2
    return wave[start : start + n]


def augment(wave: np.ndarray, rate: int, opts: SpeechConfig, rng: np.random.Generator) -> np.ndarray:
    """Time shift, gain and white noise at an SNR, each only when the recipe asks for it."""
    wave = wave.astype(np.float32, copy=True)
    if opts.time_shift:
        shift = int(rng.uniform(-opts.time_shift, opts.time_shift) * rate)
        wave = np.roll(wave, shift)
        if shift > 0:
            wave[:shift] = 0
        elif shift < 0:
            wave[shift:] = 0
    if opts.gain_db:
        wave *= 10 ** (rng.uniform(-opts.gain_db, opts.gain_db) / 20)
    if opts.noise_snr_db is not None:
        snr = opts.noise_snr_db
        snr = rng.uniform(*snr) if isinstance(snr, list) else snr
        power = float(np.mean(wave**2)) or 1e-8
        wave += rng.normal(0.0, math.sqrt(power / 10 ** (snr / 10)), len(wave)).astype(np.float32)
    return wave


def _worker_rng(rng: np.random.Generator | None, per_worker: dict) -> np.random.Generator | None:
    """`rng` in the training process; in a DataLoader worker (each starts with a copy of `rng`'s state,
    every epoch) a generator of its own, seeded by torch's per-worker, per-epoch seed."""
    import torch

    info = torch.utils.data.get_worker_info()
    if rng is None or info is None:
        return rng
    if info.seed not in per_worker:
        per_worker[info.seed] = np.random.default_rng(info.seed)
    return per_worker[info.seed]


def transform(fe, opts: SpeechConfig, rng: np.random.Generator | None, attention_mask: bool = False):
    """Raw waveforms -> model inputs; `rng` given: training (random crop + augmentation);
    `attention_mask`: ask the feature extractor for one (as the speech-recognition pipeline does)."""
    name, rate = fe.model_input_names[0], fe.sampling_rate
    n = round(opts.max_duration * rate) if opts.max_duration else None
    kwargs: dict[str, Any] = {"sampling_rate": rate} | ({"return_attention_mask": True} if attention_mask else {})
    if n and not is_whisper_like(fe):  # Whisper pads to its own chunk_length
        kwargs |= {"padding": "max_length", "max_length": n, "truncation": True}

    per_worker: dict[int, np.random.Generator] = {}

    def transform(batch: dict[str, list]) -> dict[str, Any]:
        gen = _worker_rng(rng, per_worker)
        waves = [crop(np.asarray(w, dtype=np.float32), n, gen) for w in batch[name]]
        if gen is not None:
            waves = [augment(w, rate, opts, gen) for w in waves]
        feats = fe(waves, **kwargs)
        out = {k: list(feats[k]) for k in (name, "attention_mask") if k in feats}
        return out | {"labels": batch["labels"]}

    return transform


def file_bases(spec: TaskSpec) -> list[Path]:
    """Folders where relative audio paths are looked up: those of the data files."""
    return [Path(f).parent for v in (spec.data.data_files or {}).values() for f in file_patterns(v)]


def preprocess(splits, fe, spec: TaskSpec):
    """Decode + resample once (stored under the model's input name); crop and featurise on the fly."""
    opts = options(spec)
    name, rate, col = fe.model_input_names[0], fe.sampling_rate, opts.audio_column
    bases = file_bases(spec)

    def decode(batch: dict[str, list]) -> dict[str, list]:
        return {name: [load_audio(v, rate, bases) for v in batch[col]]}

    seed = spec.seed
    out = {}
    for role, ds in splits.items():
        ds = undecoded(ds, col)
        remove = [c for c in ds.column_names if c != "labels"]
        ds = ds.map(decode, batched=True, batch_size=32, remove_columns=remove, desc=f"decode {role}")
        rng = np.random.default_rng(seed) if role == "train" else None
        ds.set_transform(transform(fe, opts, rng))
        out[role] = ds
    return type(splits)(out)


def undecoded(ds, column: str):
    """`ds` with a datasets `Audio` column cast to `decode=False` (its bytes or paths are read here, not by
    torchcodec); other columns as they are."""
    import datasets

    if isinstance(ds.features.get(column), datasets.Audio):
        return ds.cast_column(column, datasets.Audio(decode=False))
    return ds


def pad_inputs(fe, features: list[dict[str, Any]]) -> dict[str, Any]:
    """The model inputs of `features` (everything but `labels`) as tensors: stacked when equal in length,
    padded by the feature extractor otherwise."""
    import torch

    inputs = [{k: v for k, v in f.items() if k != "labels"} for f in features]
    if len({np.shape(f[fe.model_input_names[0]]) for f in inputs}) == 1:
        return {k: torch.as_tensor(np.stack([f[k] for f in inputs])) for k in inputs[0]}
    return dict(fe.pad(inputs, padding=True, return_tensors="pt"))


def collator(fe):
    """Stack equal-length inputs; pad unequal ones with the feature extractor."""
    import torch

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        return pad_inputs(fe, features) | {"labels": torch.tensor([f["labels"] for f in features])}

    return collate


# --------------------------------------------------------------------------- model side


def shorten_whisper_input(model, positions: int) -> None:
    """Keep the first `positions` rows of the encoder's (fixed, sinusoidal) position table."""
    import torch
    from torch import nn

    encoder = model.encoder
    old = encoder.embed_positions
    if positions >= old.num_embeddings:
        return
    new = nn.Embedding(positions, old.embedding_dim)
    with torch.no_grad():
        new.weight.copy_(old.weight[:positions])
    new.requires_grad_(old.weight.requires_grad)
    encoder.embed_positions = new
    encoder.max_source_positions = positions
    model.config.max_source_positions = positions
    log.info("Whisper encoder input shortened to %d positions (%.1f s)", positions, positions / 50)


def eval_wave(value, fe, spec: TaskSpec) -> np.ndarray:
    """One clip as the evaluation saw it: decoded, the centre `max_duration` window, and (feature
    extractors without an attention mask, which normalise the padded clip) zero-padded to that length."""
    opts, rate = options(spec), fe.sampling_rate
    n = round(opts.max_duration * rate) if opts.max_duration else None
    wave = crop(load_audio(value, rate, file_bases(spec)), n, None)
    if n and len(wave) < n and not is_whisper_like(fe) and not getattr(fe, "return_attention_mask", False):
        wave = np.pad(wave, (0, n - len(wave)))
    return wave


def verify_inputs(spec: TaskSpec, split, fe):
    """The split's clips as the evaluation saw them (eval_wave), as the pipeline takes them
    ({raw, sampling_rate}), in column `inputs`. Exact for Whisper and for feature extractors without an
    attention mask; with one, padding differs from the Trainer's batches (use verify --tolerance)."""
    col = options(spec).audio_column
    split = undecoded(split, col)
    return split.map(lambda ex: {"inputs": {"raw": eval_wave(ex[col], fe, spec), "sampling_rate": fe.sampling_rate}},
                     remove_columns=split.column_names)
