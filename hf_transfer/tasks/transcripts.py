"""Transcripts: text normalisation for scoring, the character vocabulary of CTC models, ids and logits decoded
to text, WER and CER.

Scores are computed on normalised text (`speech.normalize`): `english` is Whisper's English normaliser
(transformers' `EnglishTextNormalizer`: lower case, punctuation and fillers dropped, spellings and
numbers unified, "two hundred fifty" and "250" alike), `basic` Whisper's language-independent one, `none`
the text as it is. WER and CER are computed as evaluate's `wer` / `cer` modules compute them (jiwer; the same
computation, tasks/metrics.py): corpus rates, all errors over all reference words (characters).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from hf_transfer.errors import DataError
from hf_transfer.tasks.base import IGNORE
from hf_transfer.tasks.metrics import metric

WORD_DELIMITER, PAD, UNK = "|", "[PAD]", "[UNK]"


def normalizer(kind: str, tokenizer=None) -> Callable[[str], str]:
    """str -> normalised str for `speech.normalize` (english, basic, none)."""
    if kind == "none":
        return lambda text: " ".join(text.split())
    if kind == "basic":
        from transformers.models.whisper.english_normalizer import BasicTextNormalizer

        return BasicTextNormalizer()
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    # Whisper checkpoints ship British -> American spellings (normalizer.json); others get none
    return EnglishTextNormalizer(getattr(tokenizer, "english_spelling_normalizer", None) or {})


def error_rates(references: list[str], hypotheses: list[str], normalize: Callable[[str], str]) -> dict[str, float]:
    """{wer, cer} on normalised text; pairs whose normalised reference is empty are left out (jiwer cannot
    score them), and counted in `unscored`."""
    pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    kept = [(r, h) for r, h in pairs if r.strip()]
    counts = {"samples": len(pairs), "unscored": len(pairs) - len(kept)}
    if not kept:
        return {"wer": float("nan"), "cer": float("nan")} | counts
    refs, hyps = [r for r, _ in kept], [h for _, h in kept]
    wer = metric("wer")(predictions=hyps, references=refs)
    cer = metric("cer")(predictions=hyps, references=refs)
    return {"wer": wer["wer"], "cer": cer["cer"]} | counts


# --------------------------------------------------------------------------- CTC vocabulary


def characters(texts: list[str]) -> list[str]:
    """The CTC vocabulary of `texts`: [PAD] (the CTC blank) first, [UNK], the word delimiter `|` for
    spaces, then their other characters sorted."""
    chars = sorted({c for t in texts for c in t} - {" "})
    return [PAD, UNK, WORD_DELIMITER, *chars]


def ctc_tokenizer(vocabulary: list[str]):
    """A Wav2Vec2CTCTokenizer over `vocabulary` (it reads its vocab.json once, from a temporary folder
    removed right after; save_pretrained writes the vocabulary from memory)."""
    from transformers import Wav2Vec2CTCTokenizer

    with tempfile.TemporaryDirectory(prefix="hf-transfer-vocab-") as folder:
        path = Path(folder) / "vocab.json"
        path.write_text(json.dumps({c: i for i, c in enumerate(vocabulary)}, ensure_ascii=False), encoding="utf-8")
        return Wav2Vec2CTCTokenizer(str(path), unk_token=UNK, pad_token=PAD, word_delimiter_token=WORD_DELIMITER,
                                    bos_token=None, eos_token=None)


def unknown_characters(text: str, vocabulary: set[str]) -> list[str]:
    return sorted({c for c in text if c != " " and c not in vocabulary})


def check_known(texts: list[str], vocabulary: set[str], where: str) -> None:
    """Refuse the first transcript with a character the CTC vocabulary does not hold."""
    for row, text in enumerate(texts):
        bad = unknown_characters(text, vocabulary)
        if bad:
            raise DataError(f"speech.text_column: {where} row {row} has characters outside the model's vocabulary: "
                            f"{''.join(bad)!r} in {text!r:.80} (speech.bad_rows: skip drops such rows)")


def decode_predictions(predictions, tok) -> list[str]:
    """Generated ids (sequence-to-sequence) or logits (CTC: greedy, argmax per frame) -> texts."""
    preds = predictions[0] if isinstance(predictions, tuple) else predictions
    preds = np.asarray(preds)
    if preds.ndim == 3:  # CTC: repeats merge first, then blanks ([PAD]) go, as the pipeline decodes
        return tok.batch_decode(preds.argmax(-1), skip_special_tokens=False)
    preds = np.where(preds < 0, _filler(tok), preds)
    return tok.batch_decode(preds, skip_special_tokens=True)


def _filler(tok) -> int:
    """A special token that decoding skips, in place of the -100 padding."""
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def decode_labels(label_ids, tok) -> list[str]:
    labels = np.where(np.asarray(label_ids) == IGNORE, _filler(tok), label_ids)
    kwargs = {"group_tokens": False} if hasattr(tok, "word_delimiter_token") else {}
    return tok.batch_decode(labels, skip_special_tokens=True, **kwargs)
