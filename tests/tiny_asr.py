"""Tiny speech recognisers built in code (a Whisper with a byte-level tokenizer, a wav2vec2 body without a
tokenizer) and spoken "transcripts": tones whose pitch says `low` or `high`."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from tests.tiny import TONES, save_tiny_audio_model, tone

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|transcribe|>", "<|translate|>",
            "<|notimestamps|>"]


def whisper_tokenizer(folder: Path):
    """A byte-level WhisperTokenizer: the 256 byte symbols, no merges, Whisper's special tokens after them."""
    from transformers import WhisperTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    end = "<|endoftext|>"
    return WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), extra_special_tokens=SPECIALS,
                            unk_token=end, bos_token=end, eos_token=end, pad_token=end)


def save_tiny_whisper_asr(folder: Path, seed: int = 0) -> Path:
    """WhisperForConditionalGeneration (2 encoder layers, 1 decoder layer, d_model 32) + processor."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor)

    tok = whisper_tokenizer(folder / "tok-src")
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=1,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                           num_mel_bins=80, max_target_positions=24, pad_token_id=ids["<|endoftext|>"],
                           bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
                           decoder_start_token_id=ids["<|startoftranscript|>"], suppress_tokens=[], begin_suppress_tokens=[])
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    GenerationConfig(decoder_start_token_id=config.decoder_start_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, max_length=24,
                     no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=False,
                     return_timestamps=False).save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok).save_pretrained(folder)
    return folder


def save_tiny_ctc_body(folder: Path, seed: int = 0) -> Path:
    """A 2-layer wav2vec2 body without a CTC head or tokenizer (as wav2vec2-base ships)."""
    return save_tiny_audio_model(folder, "wav2vec2", seed)


def write_transcribed_tones(folder: Path, n_train: int = 16, n_test: int = 6, rate: int = 8000,
                            seed: int = 0) -> dict[str, str]:
    """{split: csv} of (path, text): tones at 8 kHz (loading resamples) transcribed `low tone` / `high tone`."""
    import soundfile as sf

    rng = random.Random(seed)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    names, files = sorted(TONES), {}
    for split, n in (("train", n_train), ("validation", n_test), ("test", n_test)):
        rows = []
        for i in range(n):
            label = names[i % 2]
            rel = f"wav/{split}_{i}.wav"
            sf.write(folder / rel, tone(rng, label, rate), rate)
            rows.append((rel, f"{label} tone"))
        files[split] = str(folder / f"{split}.csv")
        write_csv(Path(files[split]), rows)
    return files


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "text"])
        writer.writerows(rows)


def asr_recipe(model_dir: Path, files: dict[str, str], out: Path, **finetune) -> dict:
    """2 training steps, batch 4, clips up to 2 s (Whisper's input shortened to 2 s)."""
    return {
        "task": "speech-recognition",
        "model": {"name_or_path": str(model_dir), "modality": "speech"},
        "data": {"path": "csv", "data_files": files},
        "speech": {"audio_column": "path", "text_column": "text", "max_duration": 2.0},
        "finetune": {"strategy": "full", **finetune},
        "training": {
            "output_dir": str(out), "max_steps": 2, "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 4, "learning_rate": 1e-3, "eval_strategy": "steps", "eval_steps": 2,
            "save_steps": 2, "seed": 0, "disable_tqdm": True, "generation_max_length": 12,
            "dataloader_num_workers": 0,
        },
    }
