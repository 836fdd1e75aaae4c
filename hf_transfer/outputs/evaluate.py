"""`hf-transfer evaluate OUTPUT_DIR DATA...`: the metrics of a finished run on new labelled data.

Each DATA is one file (csv, json / jsonl, parquet, conll) or a folder (imagefolder for image runs,
audiofolder for audio runs: one sub-folder per class), scored on its own. Its columns are the ones the
run's recipe names (text / image / audio column, label column). Labels are matched by name against the
saved model's labels (`config.json`), so new data may hold fewer classes or number them its own way; a
label the model does not know ends in one line naming it. The folder loads exactly as `predict` loads it
(hubuser.load_pipeline, a Hub user's path; onnxruntime for an `hf-transfer export` folder, which keeps the
run's recipe.yaml), the inputs go through the pipeline as in
`verify`, and the scores are the task record's own metrics (`compute_metrics`, or `score_texts` on the
pipeline's transcripts for speech recognition) plus its per-class details (`details`): the same figures
as the run's metrics.json.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hf_transfer.console import progress
from hf_transfer.errors import DataError, HfTransferError
from hf_transfer.folder import RECIPE, require_model_run
from hf_transfer.arguments import as_paths, require_count
from hf_transfer.outputs.multitask import multitask_root
from hf_transfer.outputs.hubuser import (
    FolderError, as_input, load_config, logits, transcripts, word_logits,
)
from hf_transfer.outputs.onnx_model import load_any_pipeline, onnx_file
from hf_transfer.outputs.verify import hub_user_task, label_array, word_label_array
from hf_transfer.tasks import TASKS, multitask, resolve
from hf_transfer.tasks.data import TABLE_LOADERS, in_memory_table, load_raw, require_columns
from hf_transfer.tasks.images import rgb_image
from hf_transfer.tasks.readers import read_audio_folder
from hf_transfer.validate import load_recipe

# file suffix -> datasets loader (a folder: the modality's folder loader)
LOADERS = {**TABLE_LOADERS, ".conll": "conll"}
FOLDER_LOADERS = {"vision": "imagefolder", "speech": "audiofolder"}


def _data_config(recipe, task, path: Path):
    """The recipe's data section pointed at one DATA file or folder, as split `path`."""
    if path.is_dir():
        loader = FOLDER_LOADERS.get(task.modality)
        if loader is None:
            raise HfTransferError(f"evaluate: {path} is a folder; a {task.name} run reads files "
                                  f"({', '.join(sorted(LOADERS))})")
        files = str(path / "**")
    elif path.is_file():
        loader = LOADERS.get(path.suffix.lower(), recipe.data.path)
        if loader not in LOADERS.values():
            raise HfTransferError(f"evaluate: {path}: unknown file type {path.suffix!r} "
                                  f"(expected {', '.join(sorted(LOADERS))})")
        files = str(path)
    else:
        raise HfTransferError(f"evaluate: data not found: {path}")
    return dataclasses.replace(recipe.data, path=loader, name=None, data_files={"evaluate": files})


def _read_folder(cfg, path: Path):
    """An image / audio folder, labelled by its sub-folders even when it holds one class (datasets drops
    the label column of a single-class folder unless told `drop_labels=False`)."""
    import datasets

    if cfg.path == "audiofolder":  # read without torchcodec, as training reads it
        return read_audio_folder(cfg.data_files["evaluate"], str(path))
    try:
        return datasets.load_dataset(cfg.path, data_files=cfg.data_files, drop_labels=False)["evaluate"]
    except Exception as err:  # noqa: BLE001 - the folder readers fail in many types
        text = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        raise HfTransferError(f"evaluate: cannot read {path} as {cfg.path}: {text}") from None


def _named_labels(ds, columns: list[str]):
    """ClassLabel columns (or lists of ClassLabels) as their names: new data numbers its classes its own
    way, and the model's labels are matched by name."""
    for col in columns:
        feature = ds.features[col]
        names = getattr(feature, "names", None)
        inner = getattr(getattr(feature, "feature", None), "names", None)
        if names:
            values = [names[i] for i in ds[col]]
        elif inner:
            values = [[inner[i] for i in row] for row in ds[col]]
        else:
            continue
        ds = ds.remove_columns(col).add_column(col, values)
    return ds


def _split(recipe, task, spec, path: Path | _Table, label_names, entry=None):
    """One DATA argument (a file or folder, or a table in memory) as a labelled split (a `labels` column, as
    training's splits have); `entry`: the multi-task run's task that the folder holds, whose labels are encoded
    as that run encoded them (rare classes as it grouped them, a row without a label left out)."""
    if isinstance(path, Path):
        cfg = _data_config(recipe, task, path)
        raw = _read_folder(cfg, path) if path.is_dir() else load_raw(cfg)["evaluate"]
    else:  # a table in memory: a datasets.Dataset, or a pandas DataFrame made one
        cfg, raw = recipe.data, path.table
        path = path.name
    if entry is None:
        labeler = task.labeler(dataclasses.replace(spec, data=cfg))
    else:  # the task's own key in the recipe
        labeler = dataclasses.replace(multitask.labeler([entry]), columns=[
            (f"tasks[{recipe.tasks.index(entry)}].label_column", entry.label_column)])
    require_columns(raw, str(path), labeler.columns + list(task.input_columns(spec).items()))
    raw = _named_labels(raw, [col for _, col in labeler.columns])
    if task.modality == "vision":
        _check_images(raw, spec.options.image_column, path)
    return labeler.encode(raw, label_names if entry is None else {entry.name: label_names}, str(path))


@dataclasses.dataclass
class _Table:
    """A DATA argument given in memory (Python API): a datasets.Dataset or a pandas DataFrame, and its name."""

    table: Any
    name: str


def _data_items(data: Any) -> list[Any]:
    """evaluate's DATA: paths (as_paths), where a datasets.Dataset or a pandas DataFrame may stand for a file
    (as `data[i]`); a DataFrame alone is one table, not its column names."""
    alone = in_memory_table(data)
    items = [data] if alone is not None else list(data) if isinstance(data, (list, tuple)) else []
    tables = [alone] if alone is not None else [in_memory_table(x) for x in items]
    if not any(t is not None for t in tables):
        return as_paths("evaluate", data, "data files")
    return [_Table(t, f"data[{i}]") if t is not None else as_paths("evaluate", x, "data files")[0]
            for i, (x, t) in enumerate(zip(items, tables))]


def _check_images(ds, column: str, path: Path) -> None:
    """Decode every image once, so that a file PIL cannot read is one line naming it (the pipeline's decoding
    would fail with a traceback, naming no data argument)."""
    import datasets

    if isinstance(ds.features.get(column), datasets.Image):
        try:
            for value in ds.cast_column(column, datasets.Image(decode=False))[column]:
                rgb_image(value, column)
        except DataError as err:
            raise DataError(f"evaluate: {path}: {err}") from None


def evaluate(out_dir: str | Path, data: Any, batch_size: int | None = None,
             device: str | None = None) -> dict[str, dict[str, Any]]:
    """{DATA: {"metrics": {name: value}, "per_class": task details or None}} for each DATA argument (a path, or
    in Python a datasets.Dataset or pandas DataFrame, named `data[i]`); a multi-task run's root: each task
    folder's, as "DATA [task]"."""
    import numpy as np
    from transformers import EvalPrediction

    out = Path(out_dir)
    if batch_size is not None:
        batch_size = require_count("evaluate", "batch_size", batch_size)
    data = _data_items(data)
    root, name = multitask_root(out)
    entry = None
    if root is not None and name is None:  # a multi-task run: each task folder on the same data
        tasks = load_recipe(root / RECIPE).tasks
        return {f"{item} [{t.name}]": found for t in tasks
                for item, found in evaluate(root / t.name, data, batch_size, device).items()}
    if name is not None:  # a multi-task run's task folder: the task's labels, the run's inputs
        recipe = load_recipe(root / RECIPE)
        entry = next(t for t in recipe.tasks if t.name == name)
        task = TASKS[recipe.task]
        spec = multitask.task_spec(resolve(recipe)[1], entry)
    else:
        if onnx_file(out) is None:
            require_model_run(out, HfTransferError, why=" (evaluate reads its recipe.yaml and model)")
        elif not (out / RECIPE).is_file():  # an ONNX folder: `hf-transfer export` copies the run's recipe
            raise HfTransferError(f"evaluate: {out}: an ONNX folder without recipe.yaml (export it from a finished "
                                  "run)")
        recipe = load_recipe(out / RECIPE)
        task, spec = resolve(recipe)
    if task.verify_inputs is None:
        raise HfTransferError(f"evaluate: task {task.name} of {out} has no pipeline to evaluate through")
    hub_task = hub_user_task(task)
    try:  # the labels first: bad data is refused before the model loads
        id2label = {int(k): v for k, v in load_config(out).id2label.items()}
    except FolderError as err:
        raise HfTransferError(f"evaluate: {err}") from None
    label_names = None if spec.data.problem_type == "regression" else [id2label[i] for i in sorted(id2label)]
    splits = {getattr(item, "name", item): _split(recipe, task, spec, item if isinstance(item, _Table) else Path(item),
                                                  label_names, entry) for item in data}
    try:
        pipe = load_any_pipeline(out, hub_task, device)
    except FolderError as err:
        raise HfTransferError(f"evaluate: {err}") from None
    batch = batch_size or int(recipe.training.get("per_device_eval_batch_size", 8))
    compute = task.compute_metrics(spec)
    processor = getattr(pipe, hub_task["processor"])  # the folder's own, as the pipeline loaded it
    results = {}
    for item, split in splits.items():
        try:
            inputs = [as_input(x) for x in task.verify_inputs(spec, split, processor)["inputs"]]
        except DataError as err:
            raise DataError(f"evaluate: {item}: {err}") from None
        with progress(len(inputs), f"evaluate {Path(item).name}") as bar:
            if task.score_texts:  # speech recognition: the pipeline's transcripts against the references
                texts = transcripts(pipe, inputs, batch, bar, **task.pipeline_kwargs(spec))
                results[item] = {"metrics": task.score_texts(spec)(list(split["labels"]), texts), "per_class": None}
                continue
            read = word_logits if task.entities else logits
            scores = read(pipe, inputs, batch, bar, **task.pipeline_kwargs(spec))
        labels = word_label_array(split, scores) if task.entities else label_array(split)
        if entry is not None:  # one value per row, NaN where the row has no label for the task
            kept = ~np.isnan(labels[:, 0])
            if not kept.any():
                raise DataError(f"evaluate: {item}: no row has a label in column {entry.label_column!r}")
            scores, labels = scores[kept], labels[kept, 0]
            labels = labels if spec.data.problem_type == "regression" else labels.astype(np.int64)
        pred = EvalPrediction(predictions=scores, label_ids=labels)
        results[item] = {"metrics": compute(pred), "per_class": task.details(spec, pred, label_names)}
    return results


def format_results(results: dict[str, dict[str, Any]]) -> list[str]:
    """One line per DATA argument: its scalar metrics (per-class details only with --json)."""
    return [f"{item}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in found["metrics"].items())
            for item, found in results.items()]
