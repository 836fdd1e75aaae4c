"""Load a dataset as the recipe's `data` section describes it: splits, labels, folds.

The result is a `DatasetDict` with `train`, `validation` and (when present) `test` splits and a
`labels` column made by the task's `Labeler` (classification: int, list of floats or float), plus the
label names. A validation split absent from the dataset is carved from train (stratified when the
labeler says how); a cross-validation fold (`cv.fold`) replaces it; a learning-curve point (`curve.fraction`)
keeps a nested, stratified share of the training rows (both chosen in subsets.py). The task's `preprocess` then
turns the input columns into model inputs. With `data.streaming` the training split is an
`IterableDataset` read lazily (and the result a plain dict of splits): see `_load_stream`.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hf_transfer.errors import DataError, HfTransferError, RecipeError, first_line, not_utf8
from hf_transfer.recipe.schema import STREAM_EVAL_SAMPLES, DataConfig, ExtraData, file_patterns
from hf_transfer.tasks.base import Labeler
from hf_transfer.tasks.readers import read_audio_folder, read_conll

log = logging.getLogger(__name__)

# a table file's suffix -> its datasets loader (predict and evaluate read such files)
TABLE_LOADERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
FOLDER_LOADERS = ("imagefolder", "audiofolder")  # data_files name folders (globs such as train/**)
LOCAL_LOADERS = ("csv", "json", "parquet", "imagefolder", "audiofolder", "arrow", "text", "conll")
EMPTY = "empty (a missing value: a CSV reads '', 'NA', 'nan', 'null' and the like as missing); fill or drop those rows"


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

    options = reader_options(cfg)
    if cfg.data_files:
        for split, value in cfg.data_files.items():
            for file in file_patterns(value):
                if not glob.glob(file):
                    raise DataError(f"data.data_files.{split}: file not found: {file}")
                if Path(file).is_dir() and cfg.path not in FOLDER_LOADERS:  # datasets: "Unable to find" it
                    suffix = {"json": "jsonl", "text": "txt"}.get(cfg.path, cfg.path)
                    raise DataError(f"data.data_files.{split}: {file} is a folder; name its files, e.g. "
                                    f"{Path(file) / ('*.' + suffix)}")
                if cfg.path == "csv":
                    _check_csv_header(split, file, options.get("sep", ","))
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
    if not cfg.streaming:
        _check_datasets_cache()
    try:
        return datasets.load_dataset(cfg.path, cfg.name, data_files=cfg.data_files, streaming=cfg.streaming, **options)
    except Exception as err:  # the readers of csv/json/parquet fail in many types, wrapped by datasets
        if cfg.data_files:
            _raise_for_file(cfg, options)  # names the file that does not read, and why
        if isinstance(err, FileNotFoundError):
            raise DataError(f"data.path: dataset {cfg.path!r} not found ({first_line(err)})") from None
        if isinstance(err, (ValueError, ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError)):
            raise DataError(f"data.path: cannot load dataset {cfg.path!r}: {first_line(err)}") from None
        raise DataError(f"data: cannot read dataset {cfg.path!r} ({_cause(err)})") from None


def _check_datasets_cache() -> None:
    """datasets writes every loaded split into its cache folder: one that cannot be written is said as such, not
    as the first data file that 'cannot be read'."""
    import datasets

    folder = Path(datasets.config.HF_DATASETS_CACHE)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK)
        reason = "not writable"
    except OSError as err:
        writable, reason = False, err.strerror or first_line(err)
    if not writable:
        raise DataError(f"HF_DATASETS_CACHE: datasets cannot write its cache folder {folder} ({reason}); set "
                        "HF_DATASETS_CACHE to a writable folder")


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


def in_memory_table(value: Any):
    """A pandas DataFrame (as a datasets.Dataset) or a datasets.Dataset given from Python where files are
    expected; None for anything else."""
    import datasets
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return datasets.Dataset.from_pandas(value, preserve_index=False)
    return value if isinstance(value, datasets.Dataset) else None


def reader_options(cfg: DataConfig) -> dict[str, Any]:
    """The csv loader's separator: a tab for .tsv files (GLUE's own format), else datasets' comma; one
    recipe's files are all of one kind."""
    if cfg.path != "csv" or not cfg.data_files:
        return {}
    files = [f for v in cfg.data_files.values() for f in file_patterns(v)]
    tabs = [f.lower().removesuffix(".gz").endswith(".tsv") for f in files]
    if any(tabs) and not all(tabs):
        raise DataError(f"data.data_files: {files[tabs.index(True)]} is tab-separated (.tsv) but "
                        f"{files[tabs.index(False)]} is not; give files of one kind")
    return {"sep": "\t"} if any(tabs) else {}


def _raise_for_file(cfg: DataConfig, options: dict[str, Any]) -> None:
    """Load each data file alone; the first that fails is named with the reader's own reason."""
    import datasets

    first = None  # (split, file, columns) of the first file read
    for split, value in cfg.data_files.items():
        for file in (f for pattern in file_patterns(value) for f in sorted(glob.glob(pattern)) or [pattern]):
            try:
                columns = datasets.load_dataset(cfg.path, data_files={split: file}, **options)[split].column_names
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
            return not_utf8(e)
        if "corresponds to no data" in str(e):
            return "it holds no rows"
    inner = next((e for e in chain if type(e).__name__ != "DatasetGenerationError"), chain[0])
    return f"{inner.__class__.__name__}: {first_line(inner)}"


def _check_csv_header(split: str, pattern: str, sep: str = ",") -> None:
    """A column named twice in a CSV header (datasets would rename one silently)."""
    for file in glob.glob(pattern):
        try:
            with open(file, encoding="utf-8", newline="") as f:
                header = [c for c in next(csv.reader(f, delimiter=sep), []) if c]
        except (OSError, UnicodeDecodeError, csv.Error):
            continue  # compressed or unreadable: the loader reports it
        twice = sorted({c for c in header if header.count(c) > 1})
        if twice:
            raise DataError(f"data.data_files.{split}: column {twice[0]!r} appears twice in the header of {file}")


def require_columns(ds, split: str, wanted: list[tuple[str, str]]) -> None:
    """`wanted`: (recipe key, e.g. data.text_column; the column it names)."""
    for key, col in wanted:
        if col not in ds.column_names:
            raise DataError(
                f"{key}: column {col!r} not in split {split!r} (columns: {', '.join(ds.column_names)})"
                + _separator_hint(ds.column_names)
            )
    if len(ds) == 0:
        raise DataError(f"data: split {split!r} is empty")


def _separator_hint(columns: list[str]) -> str:
    """Where a CSV header read as one column holds tabs or semicolons: what the file is."""
    if len(columns) != 1:
        return ""
    if "\t" in columns[0]:
        return "; the file is tab-separated: name it .tsv"
    if ";" in columns[0]:
        return "; the file is semicolon-separated: save it with commas"
    return ""


def require_distinct(input_columns: dict[str, str], label_columns: list[tuple[str, str]]) -> None:
    """A column the model reads may not also be a label column: encoding the labels replaces it."""
    labels = {col: key for key, col in label_columns}
    for key, col in input_columns.items():
        if col in labels:
            raise RecipeError(f"{key}: column {col!r} is also {labels[col]}; the model cannot read its own label")


def load_data(
    cfg: DataConfig, input_columns: dict[str, str], seed: int, labeler: Labeler, fold: Callable | None = None,
    subset: Callable | None = None,
) -> LoadedData:
    """Load, check and label-encode the splits named by the recipe. `fold(train, stratify_column)`
    -> (train, validation) replaces the validation split (cross-validation: `fold_of`); `subset(train,
    stratify_column)` -> train keeps a share of the training rows, after validation is carved and
    max_train_samples applied (learning curves: `subset_of`)."""
    import datasets

    require_distinct(input_columns, labeler.columns)
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
