"""Local formats that hf-transfer reads itself: CoNLL token/tag files (`data.path: conll`) and audio
folders (`data.path: audiofolder`) decoded with soundfile, without datasets' torchcodec (FFmpeg).
"""

from __future__ import annotations

import csv
import glob
import os

from hf_transfer.errors import DataError, not_utf8
from hf_transfer.recipe.schema import file_patterns


def read_conll(path: str | list[str]):
    """A CoNLL file (or every file a glob matches, in name order; or a list of them, in its order) as a Dataset of `tokens` and `ner_tags`
    (string lists): one `token<TAB>tag` or `token tag` per line (more columns: the first is the token, the
    last the tag), a blank line between sentences, `-DOCSTART-` lines skipped; UTF-8, with or without a
    byte-order mark."""
    import datasets

    sentences: list[tuple[list[str], list[str]]] = []
    for file in (f for pattern in file_patterns(path) for f in sorted(glob.glob(pattern))):
        try:
            sentences += _conll_sentences(file)
        except UnicodeDecodeError as err:
            raise DataError(f"{file}: {not_utf8(err)}") from None
    if not sentences:
        raise DataError(f"{', '.join(file_patterns(path))}: no sentences (expected `token<TAB>tag` lines, a blank line between sentences)")
    return datasets.Dataset.from_dict({"tokens": [w for w, _ in sentences], "ner_tags": [t for _, t in sentences]})


def _conll_sentences(file: str) -> list[tuple[list[str], list[str]]]:
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    with open(file, encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not part of the first token
        for number, line in enumerate(fh, 1):
            line = line.rstrip()  # the line break, and trailing spaces or tabs
            if not line.strip() or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2 or not fields[0] or not fields[-1].strip():
                raise DataError(f"{file}:{number}: expected `token<TAB>tag`, got {line!r}")
            words.append(fields[0])
            tags.append(fields[-1].strip())
    if words:
        sentences.append((words, tags))
    return sentences


# what soundfile (libsndfile) decodes; hf-transfer reads audio without FFmpeg
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")


def read_audio_folder(pattern: str | list[str], where: str):
    """datasets' `audiofolder` layout without its torchcodec (FFmpeg) dependency: every audio file the
    glob (or a list of globs) matches becomes a row, column `audio` (the file's path, decoded later with soundfile) and
    column `label` (the name of the folder holding it: `<root>/<class>/<clip>.wav`). A `metadata.csv` beside
    the files (column `file_name`, relative to the csv, and any others, e.g. a transcript) adds its columns."""
    import datasets

    files = sorted({os.path.abspath(f) for p in file_patterns(pattern) for f in glob.glob(p, recursive=True)
                    if os.path.isfile(f) and os.path.splitext(f)[1].lower() in AUDIO_SUFFIXES})
    if not files:
        raise DataError(f"{where}: no audio files ({', '.join(AUDIO_SUFFIXES)}) match "
                        f"{', '.join(file_patterns(pattern))}")
    columns: dict[str, list] = {"audio": files, "label": [os.path.basename(os.path.dirname(f)) for f in files]}
    extra = _folder_metadata(files, where)
    if extra:
        names = sorted({k for row in extra.values() for k in row})
        missing = [f for f in files if f not in extra]
        if missing:
            raise DataError(f"{where}: {missing[0]} has no row in metadata.csv (column file_name)")
        columns |= {name: [extra[f].get(name) for f in files] for name in names}
    return datasets.Dataset.from_dict(columns)


def _folder_metadata(files: list[str], where: str) -> dict[str, dict[str, str]]:
    """Rows of the metadata.csv files in the matched files' folders and their parents, by absolute path."""
    rows: dict[str, dict[str, str]] = {}
    folders = {os.path.dirname(f) for f in files}
    folders |= {os.path.dirname(d) for d in folders}
    for folder in sorted(folders):
        path = os.path.join(folder, "metadata.csv")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", newline="") as fh:
            for number, row in enumerate(csv.DictReader(fh), 2):
                if not row.get("file_name"):
                    raise DataError(f"{where}: {path}:{number}: no file_name")
                rows[os.path.abspath(os.path.join(folder, row.pop("file_name")))] = row
    return rows
