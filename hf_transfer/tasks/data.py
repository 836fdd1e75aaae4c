"""Load a dataset as the recipe's `data` section describes it: splits, labels, folds.

The result is a `DatasetDict` with `train`, `validation` and (when present) `test` splits and a
`labels` column made by the task's `Labeler` (classification: int, list of floats or float), plus the
label names. A validation split absent from the dataset is carved from train (stratified when the
labeler says how); a cross-validation fold (`cv.fold`) replaces it; a learning-curve point (`curve.fraction`)
keeps a nested, stratified share of the training rows (`curve_subset`). The task's `preprocess` then
turns the input columns into model inputs. With `data.streaming` the training split is an
`IterableDataset` read lazily (and the result a plain dict of splits): see `_load_stream`.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np

from hf_transfer.errors import DataError, HfTransferError
from hf_transfer.recipe.schema import STREAM_EVAL_SAMPLES, DataConfig, ExtraData
from hf_transfer.tasks.base import Labeler

log = logging.getLogger(__name__)

LOCAL_LOADERS = ("csv", "json", "parquet", "imagefolder", "audiofolder", "arrow", "text", "conll")


@dataclass
class LoadedData:
    splits: Any  # datasets.DatasetDict
    label_names: list[str] | None  # None for regression


def default_num_workers(max_workers: int = 4) -> int:
    """DataLoader workers for data decoded / augmented every step (images, audio), when the recipe sets
    no `training.dataloader_num_workers`: the cores this process may use, one left to the training loop,
    shared among the processes a launcher started on this machine, at most `max_workers`; 0 (load in
    the training process) with one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(0, min(max_workers, per_process - 1))


def is_stream(ds) -> bool:
    """Whether a split is read as a stream (data.streaming: an IterableDataset, no length)."""
    import datasets

    return isinstance(ds, datasets.IterableDataset)


def column_names(ds) -> list[str]:
    """A split's columns; a stream whose features are not known yet is asked for its first row."""
    if ds.column_names is not None:
        return list(ds.column_names)
    first = next(iter(ds.take(1)), None)
    return list(first) if first is not None else []


def load_raw(cfg: DataConfig):
    import datasets

    if cfg.data_files:
        for split, file in cfg.data_files.items():
            if not glob.glob(file):
                raise DataError(f"data.data_files.{split}: file not found: {file}")
            if cfg.path == "csv":
                _check_csv_header(split, file)
        if cfg.path not in LOCAL_LOADERS:
            raise DataError(
                f"data.path: with data_files, path must be a loader name "
                f"({', '.join(LOCAL_LOADERS)}), got {cfg.path!r}"
            )
    if cfg.streaming and cfg.path in ("conll", "audiofolder"):
        raise DataError(f"data.streaming: not available with data.path {cfg.path!r} (read into memory by hf-transfer)")
    if cfg.path == "conll":
        if not cfg.data_files:
            raise DataError("data.path: conll reads local files: set data.data_files")
        return datasets.DatasetDict({split: read_conll(file) for split, file in cfg.data_files.items()})
    if cfg.path == "audiofolder" and cfg.data_files:
        return datasets.DatasetDict({split: read_audio_folder(pattern, f"data.data_files.{split}")
                                     for split, pattern in cfg.data_files.items()})
    try:
        return datasets.load_dataset(cfg.path, cfg.name, data_files=cfg.data_files, streaming=cfg.streaming)
    except Exception as err:  # the readers of csv/json/parquet fail in many types, wrapped by datasets
        if cfg.data_files:
            _raise_for_file(cfg)  # names the file that does not read, and why
        if isinstance(err, FileNotFoundError):
            raise DataError(f"data.path: dataset {cfg.path!r} not found ({_first_line(err)})") from None
        if isinstance(err, (ValueError, ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError)):
            raise DataError(f"data.path: cannot load dataset {cfg.path!r}: {_first_line(err)}") from None
        raise DataError(f"data: cannot read dataset {cfg.path!r} ({_cause(err)})") from None


def load_extra(extra: ExtraData, data: DataConfig, columns: dict[str, str], split: str, key: str = "split"):
    """One split of an extra dataset (`domain.target`, `distill.unlabelled`) read like `data` (its reader,
    its input `columns`: recipe key -> column), cut to `extra.max_samples`; errors name `extra.KEY`."""
    cfg = dataclasses.replace(data, path=extra.path, name=extra.name, data_files=extra.data_files,
                              class_weights=None, streaming=False)
    try:
        raw = load_raw(cfg)
    except HfTransferError as err:
        raise DataError(str(err).replace("data.", f"{extra.KEY}.", 1)) from None
    if split not in raw:
        raise DataError(f"{extra.KEY}.{key}: split {split!r} not in the {extra.KEY} dataset (has: {', '.join(raw)})")
    ds = raw[split]
    for name, col in columns.items():
        if col not in ds.column_names:
            raise DataError(f"{extra.KEY}: column {col!r} ({name}) not in the split {split!r}")
    if extra.max_samples:
        ds = ds.select(range(min(extra.max_samples, len(ds))))
    if len(ds) == 0:
        raise DataError(f"{extra.KEY}.{key}: split {split!r} is empty")
    return ds


def _raise_for_file(cfg: DataConfig) -> None:
    """Load each data file alone; the first that fails is named with the reader's own reason."""
    import datasets

    first = None  # (split, file, columns) of the first file read
    for split, pattern in cfg.data_files.items():
        for file in sorted(glob.glob(pattern)) or [pattern]:
            try:
                columns = datasets.load_dataset(cfg.path, data_files={split: file})[split].column_names
            except Exception as err:  # noqa: BLE001 - every reader error becomes the one line below
                raise DataError(f"data.data_files.{split}: cannot read {file}: {_cause(err)}") from None
            first = first or (split, file, columns)
            if sorted(columns) != sorted(first[2]):
                raise DataError(
                    f"data.data_files.{split}: {file} has columns {columns}, but {first[1]} "
                    f"(data_files.{first[0]}) has {first[2]}; every file needs the same columns"
                )


def _cause(err: BaseException) -> str:
    """The reason under datasets' wrappers (DatasetGenerationError hides the reader's own error)."""
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    for e in chain:
        if isinstance(e, UnicodeDecodeError):
            return f"not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at position {e.start}); save it as UTF-8"
        if "corresponds to no data" in str(e):
            return "it holds no rows"
    inner = next((e for e in chain if type(e).__name__ != "DatasetGenerationError"), chain[0])
    return f"{inner.__class__.__name__}: {_first_line(inner)}"


def _check_csv_header(split: str, pattern: str) -> None:
    """A column named twice in a CSV header (datasets would rename one silently)."""
    for file in glob.glob(pattern):
        try:
            with open(file, encoding="utf-8", newline="") as f:
                header = [c for c in next(csv.reader(f), []) if c]
        except (OSError, UnicodeDecodeError, csv.Error):
            continue  # compressed or unreadable: the loader reports it
        twice = sorted({c for c in header if header.count(c) > 1})
        if twice:
            raise DataError(f"data.data_files.{split}: column {twice[0]!r} appears twice in the header of {file}")


def read_conll(path: str):
    """A CoNLL file as a Dataset of `tokens` and `ner_tags` (string lists): one `token<TAB>tag` or
    `token tag` per line (more columns: the first is the token, the last the tag), a blank line between
    sentences, `-DOCSTART-` lines skipped."""
    import datasets

    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    with open(glob.glob(path)[0], encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2 or not fields[0] or not fields[-1].strip():
                raise DataError(f"{path}:{number}: expected `token<TAB>tag`, got {line!r}")
            words.append(fields[0])
            tags.append(fields[-1].strip())
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise DataError(f"{path}: no sentences (expected `token<TAB>tag` lines, a blank line between sentences)")
    return datasets.Dataset.from_dict({"tokens": [w for w, _ in sentences], "ner_tags": [t for _, t in sentences]})


# what soundfile (libsndfile) decodes; hf-transfer reads audio without FFmpeg
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")


def read_audio_folder(pattern: str, where: str):
    """datasets' `audiofolder` layout without its torchcodec (FFmpeg) dependency: every audio file the
    glob matches becomes a row, column `audio` (the file's path, decoded later with soundfile) and
    column `label` (the name of the folder holding it: `<root>/<class>/<clip>.wav`). A `metadata.csv` beside
    the files (column `file_name`, relative to the csv, and any others, e.g. a transcript) adds its columns."""
    import datasets

    files = sorted(os.path.abspath(f) for f in glob.glob(pattern, recursive=True)
                   if os.path.isfile(f) and os.path.splitext(f)[1].lower() in AUDIO_SUFFIXES)
    if not files:
        raise DataError(f"{where}: no audio files ({', '.join(AUDIO_SUFFIXES)}) match {pattern}")
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else err.__class__.__name__


def require_columns(ds, split: str, wanted: list[tuple[str, str]]) -> None:
    """`wanted`: (recipe key, e.g. data.text_column; the column it names)."""
    for key, col in wanted:
        if col not in ds.column_names:
            raise DataError(
                f"{key}: column {col!r} not in split {split!r} (columns: {', '.join(ds.column_names)})"
            )
    if len(ds) == 0:
        raise DataError(f"data: split {split!r} is empty")


def load_data(
    cfg: DataConfig, input_columns: dict[str, str], seed: int, labeler: Labeler, fold: Callable | None = None,
    subset: Callable | None = None,
) -> LoadedData:
    """Load, check and label-encode the splits named by the recipe. `fold(train, stratify_column)`
    -> (train, validation) replaces the validation split (cross-validation: `fold_of`); `subset(train,
    stratify_column)` -> train keeps a share of the training rows, after validation is carved and
    max_train_samples applied (learning curves: `subset_of`)."""
    import datasets

    if cfg.streaming:
        return _load_stream(cfg, input_columns, seed, labeler)
    raw = load_raw(cfg)
    if cfg.train_split not in raw:
        raise DataError(
            f"data.train_split: split {cfg.train_split!r} not in dataset (has: {', '.join(raw)})"
        )
    named = {"train": cfg.train_split, "validation": cfg.validation_split, "test": cfg.test_split}
    present = {k: v for k, v in named.items() if v and v in raw}
    if cfg.test_split and cfg.test_split not in raw:
        log.warning("data.test_split %r not in dataset; no test evaluation", cfg.test_split)
    for role, split in present.items():
        require_columns(raw[split], split, labeler.columns + list(input_columns.items()))
    label_names = labeler.names(raw[cfg.train_split])
    splits = {role: labeler.encode(raw[split], label_names, split) for role, split in present.items()}
    if fold is not None:
        if "validation" in splits:
            log.info("cross-validation: the held-out fold replaces split %r", cfg.validation_split)
        splits["train"], splits["validation"] = fold(splits["train"], labeler.stratify)
    elif "validation" not in splits:
        splits["train"], splits["validation"] = _carve_validation(splits["train"], cfg, seed, labeler.stratify)
    if cfg.max_train_samples:
        splits["train"] = splits["train"].select(range(min(cfg.max_train_samples, len(splits["train"]))))
    if subset is not None:
        splits["train"] = subset(splits["train"], labeler.stratify)
    if cfg.max_eval_samples:
        for role in ("validation", "test"):
            if role in splits:
                splits[role] = splits[role].select(range(min(cfg.max_eval_samples, len(splits[role]))))
    return LoadedData(datasets.DatasetDict(splits), label_names)


def _load_stream(cfg: DataConfig, input_columns: dict[str, str], seed: int, labeler: Labeler) -> LoadedData:
    """data.streaming: the training split stays a stream (labelled lazily, shuffled in a buffer of
    data.shuffle_buffer rows, its first max_train_samples rows when set); validation and test are their
    first max_eval_samples rows (default STREAM_EVAL_SAMPLES), held in memory: metrics need a finite split.
    No validation split in the dataset: the training stream's first rows are held out instead."""
    import datasets

    raw = load_raw(cfg)
    if cfg.train_split not in raw:
        raise DataError(f"data.train_split: split {cfg.train_split!r} not in dataset (has: {', '.join(raw)})")
    wanted = labeler.columns + list(input_columns.items())
    n_eval = cfg.max_eval_samples or STREAM_EVAL_SAMPLES
    train = raw[cfg.train_split]
    _require_stream_columns(train, cfg.train_split, wanted)
    held = {}  # role -> the rows held in memory
    for role, split in (("validation", cfg.validation_split), ("test", cfg.test_split)):
        if split and split in raw:
            held[role] = _materialise(raw[split], n_eval)
        elif role == "test" and split:
            log.warning("data.test_split %r not in dataset; no test evaluation", split)
    if "validation" not in held:
        held["validation"] = _materialise(train, n_eval)
        train = train.skip(n_eval)
        log.info("streaming: the first %d training rows are the validation split (no split %r in the dataset)",
                 len(held["validation"]), cfg.validation_split)
    for role, ds in held.items():
        require_columns(ds, role, wanted)
    label_names = labeler.names(train)
    splits = {role: labeler.encode(ds, label_names, role) for role, ds in held.items()}
    train = labeler.encode(train, label_names, cfg.train_split)
    if cfg.max_train_samples:
        train = train.take(cfg.max_train_samples)
    splits["train"] = train.shuffle(seed=seed, buffer_size=cfg.shuffle_buffer)
    return LoadedData(splits, label_names)


def _materialise(stream, n: int):
    """The first `n` rows of a stream as an in-memory Dataset (its features kept when known)."""
    import datasets

    rows = list(stream.take(n))
    if not rows:
        return datasets.Dataset.from_dict({c: [] for c in column_names(stream)}, features=stream.features)
    return datasets.Dataset.from_list(rows, features=stream.features)


def _require_stream_columns(stream, split: str, wanted: list[tuple[str, str]]) -> None:
    columns = column_names(stream)
    if not columns:
        raise DataError(f"data: split {split!r} is empty")
    for key, col in wanted:
        if col not in columns:
            raise DataError(f"{key}: column {col!r} not in split {split!r} (columns: {', '.join(columns)})")


def _carve_validation(train, cfg: DataConfig, seed: int, column: str | None):
    if not 0 < cfg.validation_size < 1:
        raise DataError("data.validation_size: must be between 0 and 1 to carve a validation split")
    n_val = max(1, round(len(train) * cfg.validation_size))
    if len(train) - n_val < 1:
        raise DataError(f"data.train_split: {len(train)} rows are too few to carve a validation split")
    stratify = None
    if column is not None:
        import datasets

        labels = sorted(set(train[column]))
        train = train.cast_column(column, datasets.ClassLabel(num_classes=max(labels) + 1))
        counts = {lab: train[column].count(lab) for lab in labels}
        stratify = column if min(counts.values()) >= 2 and n_val >= len(labels) else None
    parts = train.train_test_split(test_size=n_val, seed=seed, stratify_by_column=stratify)
    log.info("carved a validation split of %d rows from %d training rows", n_val, len(train))
    return parts["train"], parts["test"]


# --------------------------------------------------------------------------- cross-validation folds


def fold_indices(n: int, strata: list[int] | None, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out row indices of each fold: disjoint, together all n rows, class-balanced when
    `strata` (a class per row) is given."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if n < folds:
        raise DataError(f"cv.folds: {folds} folds need at least {folds} training rows, the split has {n}")
    x = np.zeros(n)
    if strata is not None:
        try:  # scikit-learn warns when a class has fewer rows than folds, and refuses when all do
            return [held for _, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, strata)]
        except ValueError as err:
            log.warning("cv: folds not stratified (%s)", str(err).splitlines()[0])
    return [held for _, held in KFold(folds, shuffle=True, random_state=seed).split(x)]


def select_fold(train, stratify: str | None, folds: int, seed: int, index: int):
    """(training part, held-out fold `index`) of the encoded training split."""
    strata = list(train[stratify]) if stratify else None
    held = fold_indices(len(train), strata, folds, seed)[index]
    rest = np.setdiff1d(np.arange(len(train)), held)
    log.info("cv: fold %d of %d: %d training rows, %d held out", index, folds, len(rest), len(held))
    return train.select(rest), train.select(np.sort(held))


def fold_of(cv):
    """The `fold` argument of load_data for a one-fold recipe (`cv.fold` set); None otherwise."""
    if cv is None or cv.fold is None:
        return None
    return partial(select_fold, folds=cv.folds, seed=cv.seed, index=cv.fold)


# --------------------------------------------------------------------------- learning-curve subsets


def share(count: int, fraction: float) -> int:
    """Rows of a class (or of an unstratified split) kept at `fraction`: the nearest whole number, at
    least one. Never smaller at a larger fraction, so the subsets nest."""
    return min(count, max(1, int(np.floor(fraction * count + 0.5))))


def curve_groups(strata: list[int] | None, n: int, seed: int) -> dict[Any, np.ndarray]:
    """{class: its row indices in the order the curve draws them at `seed`} (one group `None` without strata)."""
    rng = np.random.default_rng(seed)
    if strata is None:
        return {None: rng.permutation(n)}
    strata = np.asarray(strata)
    return {c.item(): rng.permutation(np.flatnonzero(strata == c)) for c in np.unique(strata)}


def subset_indices(strata: list[int] | None, n: int, fraction: float, seed: int) -> np.ndarray:
    """The training rows of the learning-curve point at `fraction` (sorted): the first share(n_c, fraction)
    rows of every class in the seed's order. A smaller fraction's rows are among a larger one's (nested);
    every class keeps its share, and at least one row (stratified); another seed draws other rows."""
    groups = curve_groups(strata, n, seed).values()
    return np.sort(np.concatenate([g[: share(len(g), fraction)] for g in groups]))


def too_small(strata: list[int] | None, fraction: float) -> list[Any]:
    """Classes that `fraction` of their rows would leave without a row (each keeps one)."""
    if strata is None:
        return []
    values, counts = np.unique(np.asarray(strata), return_counts=True)
    return [v.item() for v, c in zip(values, counts) if np.floor(fraction * c + 0.5) < 1]


def select_share(train, stratify: str | None, fraction: float, seed: int):
    """The encoded training split cut to the learning-curve point at `fraction` (seeded by `seed`)."""
    strata = list(train[stratify]) if stratify else None
    rows = subset_indices(strata, len(train), fraction, seed)
    missing = too_small(strata, fraction)
    if missing:
        log.warning("curve: %g of the training split leaves classes %s without an example; each keeps one",
                    fraction, ", ".join(map(str, missing)))
    log.info("curve: training on %d of %d rows (fraction %g%s, seed %d)", len(rows), len(train), fraction,
             ", stratified by label" if strata is not None else "", seed)
    return train.select(rows)


def subset_of(curve, seed: int):
    """The `subset` argument of load_data for a learning-curve point (`curve.fraction` set); None otherwise."""
    if curve is None or curve.fraction is None:
        return None
    return partial(select_share, fraction=curve.fraction, seed=seed)
