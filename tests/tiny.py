"""A tiny-model kit: models built in code and saved with save_pretrained, so tests never download."""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = "good great excellent wonderful happy love best fine nice helpful".split()
NEGATIVE = "bad awful terrible horrible sad hate worst poor nasty useless".split()
FILLER = "the a this drug was it is and i my pain after day".split()
WORDS = sorted(set(POSITIVE + NEGATIVE + FILLER))
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 32) with a word-level vocabulary, saved as a model folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + WORDS) + "\n", encoding="utf-8")
    tokens = SPECIALS + WORDS
    BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(SPECIALS) + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def review(rng: random.Random, positive: bool) -> str:
    words = rng.sample(POSITIVE if positive else NEGATIVE, 2) + rng.sample(FILLER, 4)
    rng.shuffle(words)
    return " ".join(words)


def _write_splits(folder: Path, header: list[str], row, n_train: int, n_test: int, seed: int) -> dict[str, str]:
    """train.csv and test.csv with columns `header`; `row(rng, split, i)` gives row i of a split."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        path = folder / f"{split}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(row(rng, split, i) for i in range(n))
        files[split] = str(path)
    return files


def write_sentiment_csv(folder: Path, n_train: int = 48, n_test: int = 16, seed: int = 0) -> dict[str, str]:
    """Separable positive/negative reviews as train.csv and test.csv (columns review, label, score)."""

    def row(rng, split, i):
        pos = i % 2 == 0
        return [review(rng, pos), "positive" if pos else "negative", 0.9 if pos else 0.1, int(pos), int(not pos)]

    return _write_splits(folder, ["review", "label", "score", "is_good", "is_bad"], row, n_train, n_test, seed)


def text_recipe(model_dir: Path, files: dict[str, str], out: Path, **finetune) -> dict:
    """A recipe dict for the tiny model and data: 2 training steps, batch 8."""
    return {
        "model": {"name_or_path": str(model_dir), "max_length": 16},
        "data": {
            "path": "csv",
            "data_files": files,
            "text_column": "review",
            "label_column": "label",
            "label_names": ["negative", "positive"],
        },
        "finetune": {"strategy": "full", **finetune},
        "verify": False,  # the round-trip check spawns a process; tests/test_roundtrip.py runs it
        "training": {
            "output_dir": str(out),
            "max_steps": 2,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 16,
            "learning_rate": 1e-2,
            "eval_strategy": "steps",
            "eval_steps": 2,
            "save_steps": 2,
            "seed": 0,
            "disable_tqdm": True,
        },
    }


# --------------------------------------------------------------------------- speech

TONES = {"low": 300.0, "high": 1200.0}


def save_tiny_audio_model(folder: Path, family: str, seed: int = 0) -> Path:
    """A 2-layer wav2vec2 / HuBERT / Whisper (hidden 32) with its feature extractor, saved as a folder."""
    import torch
    from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor,
                              Wav2Vec2Model, WhisperConfig, WhisperFeatureExtractor, WhisperModel)

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 conv_dim=(16, 16), conv_stride=(10, 8), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                 num_conv_pos_embedding_groups=4, classifier_proj_size=16, vocab_size=12)
    if family == "wav2vec2":  # wav2vec2-base style: group norm, no attention mask
        Wav2Vec2Model(Wav2Vec2Config(**small, feat_extract_norm="group")).save_pretrained(folder)
        Wav2Vec2FeatureExtractor(return_attention_mask=False, do_normalize=True).save_pretrained(folder)
    elif family == "hubert":  # hubert-large style: layer norm, attention mask
        HubertModel(HubertConfig(**small, feat_extract_norm="layer", do_stable_layer_norm=True)).save_pretrained(folder)
        Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(folder)
    elif family == "whisper":
        config = WhisperConfig(vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=1,
                               encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                               decoder_ffn_dim=64, num_mel_bins=80, max_target_positions=32,
                               classifier_proj_size=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                               decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[])
        WhisperModel(config).save_pretrained(folder)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    else:
        raise ValueError(family)
    return folder


def tone(rng: random.Random, label: str, rate: int = 8000):
    """A noisy tone of 0.5-1.5 s whose pitch tells the label."""
    import numpy as np

    n = int(rate * rng.uniform(0.5, 1.5))
    t = np.arange(n) / rate
    wave = 0.5 * np.sin(2 * np.pi * TONES[label] * t) + 0.05 * np.random.default_rng(rng.randrange(1 << 30)).normal(size=n)
    return wave.astype("float32")


def write_audio_data(folder: Path, n_train: int = 16, n_test: int = 6, rate: int = 8000, seed: int = 0) -> dict:
    """Tones at 8 kHz (so loading resamples): `csv` = {split: csv of relative paths}, `parquet` =
    {split: parquet with a datasets Audio column holding the wav bytes, as Hub audio datasets do}."""
    import datasets
    import soundfile as sf

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, str]] = {"csv": {}, "parquet": {}}
    names = sorted(TONES)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            label = names[i % 2]
            rel = f"wav/{split}_{i}.wav"
            (folder / "wav").mkdir(exist_ok=True)
            sf.write(folder / rel, tone(rng, label, rate), rate)
            rows.append((rel, label))
        path = folder / f"{split}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label"])
            w.writerows(rows)
        out["csv"][split] = str(path)
        raw = datasets.Features({"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                 "label": datasets.ClassLabel(names=names)})
        ds = datasets.Dataset.from_dict(
            {"audio": [{"bytes": (folder / r).read_bytes(), "path": Path(r).name} for r, _ in rows],
             "label": [names.index(lab) for _, lab in rows]}, features=raw)
        ds = ds.cast_column("audio", datasets.Audio())
        ds.to_parquet(folder / f"{split}.parquet")
        out["parquet"][split] = str(folder / f"{split}.parquet")
    return out


def speech_recipe(model_dir: Path, files: dict[str, str], out: Path, **finetune) -> dict:
    """A speech recipe over the csv tones: 2 training steps, batch 4, clips cropped to 1 s."""
    return {
        "model": {"name_or_path": str(model_dir), "modality": "speech"},
        "data": {"path": "csv", "data_files": files, "label_column": "label"},
        "speech": {"audio_column": "path", "max_duration": 1.0},
        "finetune": {"strategy": "full", **finetune},
        "training": {
            "output_dir": str(out),
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 8,
            "learning_rate": 1e-3,
            "eval_strategy": "steps",
            "eval_steps": 2,
            "save_steps": 2,
            "seed": 0,
            "disable_tqdm": True,
        },
    }


# --------------------------------------------------------------------------- multi-task

TOPICS = ["pain", "day", "drug"]


def write_multitask_csv(folder: Path, n_train: int = 48, n_test: int = 16, seed: int = 0) -> dict[str, str]:
    """Reviews with two labels: `label` (sentiment) and `topic` (the topic word that starts the text;
    blank on every 5th row; one rare topic `it` in the training split)."""

    def row(rng, split, i):
        pos = i % 2 == 0
        topic = "it" if split == "train" and i == 1 else TOPICS[i % 3]
        return [f"{topic} {review(rng, pos)}", "positive" if pos else "negative", "" if i % 5 == 4 else topic]

    return _write_splits(folder, ["review", "label", "topic"], row, n_train, n_test, seed)


def multitask_recipe(model_dir: Path, files: dict[str, str], out: Path) -> dict:
    """text_recipe with two tasks: sentiment (label) and topic (topic, rare classes -> other)."""
    recipe = text_recipe(model_dir, files, out)
    del recipe["data"]["label_column"], recipe["data"]["label_names"]
    recipe["tasks"] = [
        {"name": "sentiment", "label_column": "label"},
        {"name": "topic", "label_column": "topic", "weight": 0.5, "min_count": 2},
    ]
    return recipe


def write_multitask_audio(folder: Path, n_train: int = 16, n_test: int = 8, rate: int = 8000, seed: int = 0) -> dict:
    """Tones with two labels: `label` (the pitch, low / high) and `level` (loud or quiet: the amplitude;
    blank on every 4th row); returns {split: csv of relative paths}."""
    import soundfile as sf

    rng = random.Random(seed)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    names = sorted(TONES)
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            label, loud = names[i % 2], (i // 2) % 2 == 0
            rel = f"wav/{split}_{i}.wav"
            sf.write(folder / rel, tone(rng, label, rate) * (1.0 if loud else 0.2), rate)
            rows.append((rel, label, "" if i % 4 == 3 else "loud" if loud else "quiet"))
        files[split] = str(folder / f"{split}.csv")
        with open(files[split], "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([("path", "label", "level"), *rows])
    return files


def multitask_speech_recipe(model_dir: Path, files: dict[str, str], out: Path) -> dict:
    """speech_recipe with two tasks: pitch (label) and level (weight 0.5)."""
    recipe = speech_recipe(model_dir, files, out)
    del recipe["data"]["label_column"]
    recipe["tasks"] = [{"name": "pitch", "label_column": "label"},
                       {"name": "level", "label_column": "level", "weight": 0.5}]
    return recipe
