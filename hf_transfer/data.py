"""Load a dataset as the recipe's `data` section describes it: splits and labels.

The result is a `DatasetDict` with `train`, `validation` and (when present) `test` splits and a
`labels` column (int for single-label, list of floats for multi-label, float for regression),
plus the ordered label names. Modality modules turn the input columns into model inputs.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from hf_transfer.errors import DataError
from hf_transfer.schema import DataConfig

log = logging.getLogger(__name__)

LOCAL_LOADERS = ("csv", "json", "parquet", "imagefolder", "audiofolder", "arrow", "text")


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


def _load_raw(cfg: DataConfig):
    import datasets

    if cfg.data_files:
        for split, file in cfg.data_files.items():
            if not glob.glob(file):
                raise DataError(f"data.data_files.{split}: file not found: {file}")
        if cfg.path not in LOCAL_LOADERS:
            raise DataError(
                f"data.path: with data_files, path must be a loader name "
                f"({', '.join(LOCAL_LOADERS)}), got {cfg.path!r}"
            )
    try:
        return datasets.load_dataset(cfg.path, cfg.name, data_files=cfg.data_files)
    except FileNotFoundError as err:
        raise DataError(f"data.path: dataset {cfg.path!r} not found ({_first_line(err)})") from None
    except (ValueError, ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as err:
        raise DataError(f"data.path: cannot load dataset {cfg.path!r}: {_first_line(err)}") from None
    except Exception as err:  # parse errors of csv/json/parquet readers come as many types
        raise DataError(
            f"data: cannot read dataset {cfg.path!r} ({err.__class__.__name__}: {_first_line(err)})"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else err.__class__.__name__


def _require_columns(ds, split: str, wanted: list[tuple[str, str]]) -> None:
    """`wanted`: (recipe key, e.g. data.text_column; the column it names)."""
    for key, col in wanted:
        if col not in ds.column_names:
            raise DataError(
                f"{key}: column {col!r} not in split {split!r} (columns: {', '.join(ds.column_names)})"
            )
    if len(ds) == 0:
        raise DataError(f"data: split {split!r} is empty")


def _label_columns(cfg: DataConfig) -> list[str]:
    return cfg.label_column if isinstance(cfg.label_column, list) else [cfg.label_column]


def _infer_label_names(train, cfg: DataConfig) -> list[str] | None:
    if cfg.problem_type == "regression":
        return None
    if cfg.label_names:
        return [str(n) for n in cfg.label_names]
    columns = _label_columns(cfg)
    if cfg.problem_type == "multi_label_classification" and len(columns) > 1:
        return columns
    feature = train.features[columns[0]]
    names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    if names:
        return list(names)
    values = train[columns[0]]
    if cfg.problem_type == "multi_label_classification":
        values = [v for row in values for v in (row or [])]
    try:
        return [str(v) for v in sorted(set(values))]
    except TypeError:
        raise DataError(
            f"data.label_column: column {columns[0]!r} mixes value types; set data.label_names"
        ) from None


def _encoder(cfg: DataConfig, label_names: list[str] | None, split: str):
    """Return a function mapping one raw example to its `labels` value."""
    columns = _label_columns(cfg)
    index = {name: i for i, name in enumerate(label_names or [])}

    def one(value: Any) -> int:
        if isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int) and 0 <= value < len(index):
            return value
        elif str(value) in index:
            return index[str(value)]
        raise DataError(
            f"data.label_column: label {value!r} in split {split!r} is not one of "
            f"label_names {list(index)}"
        )

    def regression(ex):
        value = ex[columns[0]]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(
                f"data.label_column: regression label {value!r} in split {split!r} is not a number"
            )
        return float(value)

    def multi(ex):
        if len(columns) > 1:
            values = [ex[c] for c in columns]
            if any(v not in (0, 1, True, False) for v in values):
                raise DataError(
                    f"data.label_column: multi-label columns must hold 0/1 in split {split!r}, "
                    f"got {values}"
                )
            return [float(v) for v in values]
        hot = [0.0] * len(index)
        for value in ex[columns[0]] or []:
            hot[one(value)] = 1.0
        return hot

    return {
        "regression": regression,
        "multi_label_classification": multi,
        "single_label_classification": lambda ex: one(ex[columns[0]]),
    }[cfg.problem_type]


@dataclass
class Labeler:
    """How label columns become the `labels` column: `data.label_column` by default (`single_labeler`);
    multi-task labels come from hf_transfer.multitask."""

    columns: list[tuple[str, str]]
    """(recipe key, label column), checked in every split."""
    names: Callable[[Any], Any]
    """Training split -> label names."""
    encode: Callable[[Any, Any, str], Any]
    """(split, label names, split name) -> the split with `labels` instead of the label columns."""
    stratify: str | None
    """Integer column of the encoded splits that stratified splits keep balanced (None: not stratified)."""


def single_labeler(cfg: DataConfig) -> Labeler:
    single = cfg.problem_type == "single_label_classification"
    return Labeler(
        columns=[("data.label_column", c) for c in _label_columns(cfg)],
        names=lambda train: _infer_label_names(train, cfg),
        encode=lambda ds, names, split: _encode_labels(ds, cfg, names, split),
        stratify="labels" if single else None,
    )


def _encode_labels(ds, cfg: DataConfig, label_names, split: str):
    encode = _encoder(cfg, label_names, split)
    labels = [encode(ex) for ex in ds.select_columns(_label_columns(cfg))]  # never decodes audio/images
    drop = [c for c in _label_columns(cfg) if c in ds.column_names] + (
        ["labels"] if "labels" in ds.column_names else []
    )
    return ds.remove_columns(sorted(set(drop))).add_column("labels", labels)


def load_data(
    cfg: DataConfig, input_columns: dict[str, str], seed: int, labeler: Labeler | None = None,
    fold: Callable | None = None,
) -> LoadedData:
    """Load, check and label-encode the splits named by the recipe. `fold(train, stratify_column)`
    -> (train, validation) replaces the validation split (cross-validation: hf_transfer.cv)."""
    import datasets

    labeler = labeler or single_labeler(cfg)

    raw = _load_raw(cfg)
    if cfg.train_split not in raw:
        raise DataError(
            f"data.train_split: split {cfg.train_split!r} not in dataset (has: {', '.join(raw)})"
        )
    named = {"train": cfg.train_split, "validation": cfg.validation_split, "test": cfg.test_split}
    present = {k: v for k, v in named.items() if v and v in raw}
    if cfg.test_split and cfg.test_split not in raw:
        log.warning("data.test_split %r not in dataset; no test evaluation", cfg.test_split)
    for role, split in present.items():
        _require_columns(raw[split], split, labeler.columns + list(input_columns.items()))
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
    if cfg.max_eval_samples:
        for role in ("validation", "test"):
            if role in splits:
                splits[role] = splits[role].select(range(min(cfg.max_eval_samples, len(splits[role]))))
    return LoadedData(datasets.DatasetDict(splits), label_names)


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
