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
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def review(rng: random.Random, positive: bool) -> str:
    words = rng.sample(POSITIVE if positive else NEGATIVE, 2) + rng.sample(FILLER, 4)
    rng.shuffle(words)
    return " ".join(words)


def write_sentiment_csv(folder: Path, n_train: int = 48, n_test: int = 16, seed: int = 0) -> dict[str, str]:
    """Separable positive/negative reviews as train.csv and test.csv (columns review, label, score)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        path = folder / f"{split}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["review", "label", "score", "is_good", "is_bad"])
            for i in range(n):
                pos = i % 2 == 0
                w.writerow([review(rng, pos), "positive" if pos else "negative",
                            0.9 if pos else 0.1, int(pos), int(not pos)])
        files[split] = str(path)
    return files


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
        "verify": False,  # the round-trip check spawns a process; tests/test_verify.py runs it
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
