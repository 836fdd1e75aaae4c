"""`hf-transfer predict OUTPUT_DIR INPUTS...`: labels and scores (transcripts, entities) from a saved folder, batched.

The task comes from the folder's recipe.yaml (its record says how command-line inputs become pipeline
inputs: texts or files of texts, image paths, audio paths) or, for a folder without one, from the
saved config's architecture. A text model also reads tables (csv, json / jsonl, parquet): the recipe's text
column (and text pair column), or the one `text_column` names. The folder loads exactly as `verify` loads it
(hubuser.load_pipeline): full models and PEFT adapters alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_transfer.console import datasets_quiet, progress
from hf_transfer.errors import HfTransferError
from hf_transfer.folder import not_a_model
from hf_transfer.arguments import as_paths, require_count
from hf_transfer.outputs.hubuser import FolderError, each, read_json, task_of
from hf_transfer.outputs.multitask import multitask_root, task_view
from hf_transfer.outputs.onnx_model import load_any_pipeline
from hf_transfer.outputs.verify import hub_user_task
from hf_transfer.validate import load_recipe
from hf_transfer.recipe.schema import DataConfig
from hf_transfer.tasks import TASKS, resolve
from hf_transfer.tasks.data import TABLE_LOADERS, in_memory_table, load_raw
from hf_transfer.tasks.text_classification import check_text
from hf_transfer.tasks.inputs import at_rate

TABLES = TABLE_LOADERS  # the table files a text model reads

# pipeline task -> how command-line inputs become pipeline inputs
READERS = {task.pipeline_task: task.read_inputs for task in TASKS.values()}


def task_of_folder(out: Path):
    """(task record, its spec or None) of a saved folder."""
    hint = not_a_model(out)  # a cv, seeds or multi-task root: where its models are
    if hint:
        raise FolderError(hint)
    read_json(out / "config.json")  # a folder without one is no model: say so first
    if (out / "recipe.yaml").is_file():
        return resolve(load_recipe(out / "recipe.yaml"))
    root, name = multitask_root(out)
    if name is not None:  # a multi-task run's task folder: its task's view of the run's recipe
        return resolve(task_view(root, name)[0])
    entry = task_of(out, [hub_user_task(t) for t in TASKS.values()])
    return next(t for t in TASKS.values() if hub_user_task(t) == entry), None


def table_texts(path: Path | Any, spec, text_column: str | None) -> list[Any]:
    """The texts of a table file (or of a datasets.Dataset, from Python), in row order: column `text_column`, else
    the recipe's text column (with its text pair column: {"text", "text_pair"} per row), else a column named `text`
    or the table's one text column."""
    if isinstance(path, Path):
        with datasets_quiet():  # no "Generating predict split" before the predictions
            rows = load_raw(DataConfig(path=TABLES[path.suffix.lower()], data_files={"predict": str(path)}))["predict"]
    else:
        rows, path = path, "the table"
    flag = "text_column=" if path == "the table" else "--text-column"  # Python's argument, or the command's
    names = rows.column_names
    pair = spec.data.text_pair_column if spec is not None and text_column is None else None
    text = text_column or (spec.data.text_column if spec is not None else None)
    if text is None:
        strings = [c for c in names if getattr(rows.features[c], "dtype", None) in ("string", "large_string")]
        text = "text" if "text" in names else strings[0] if len(strings) == 1 else None
        if text is None:
            raise HfTransferError(f"predict: {path} is a table with columns {', '.join(names)}; name the one to "
                                  f"classify with {flag}")
    key = flag if text_column else "data.text_column"
    for col, where in ((text, key), (pair, "data.text_pair_column")):
        if col is not None and col not in names:
            raise HfTransferError(f"predict: {path}: no column {col!r} ({where}; the table's columns: "
                                  f"{', '.join(names)})" + ("" if text_column else f"; name another with {flag}"))
    columns = {key: text} | ({"data.text_pair_column": pair} if pair else {})
    try:
        check_text(rows.select_columns(list(columns.values()))[:], columns)
    except HfTransferError as err:
        raise HfTransferError(f"predict: {path}: {err}") from None
    if pair:
        return [{"text": a, "text_pair": b} for a, b in zip(rows[text], rows[pair])]
    return list(rows[text])


def predict(out_dir: str | Path, inputs: Any, top_k: int = 1, batch_size: int = 8,
            device: str | None = None, text_column: str | None = None) -> tuple[list[Any], list[list[dict[str, Any]]]]:
    """(inputs as read, [[{label, score}, ...] per input]) with the top_k labels per input; a progress bar
    while the pipeline runs (hf_transfer.console's rule). A text model reads table files (TABLES), and from
    Python a pandas DataFrame or datasets.Dataset given as `inputs`, by their text column (table_texts)."""
    out = Path(out_dir)
    top_k = require_count("predict", "top_k", top_k)
    batch_size = require_count("predict", "batch_size", batch_size)
    frame = in_memory_table(inputs)  # from Python: a DataFrame is one table, not its column names
    inputs = [] if frame is not None else as_paths("predict", inputs, "inputs")
    try:
        task, spec = task_of_folder(out)
        if text_column is not None and task.modality != "text":
            raise HfTransferError(f"predict: --text-column is for text models; {out} is a {task.name} model")
        if frame is not None and task.modality != "text":
            raise HfTransferError(f"predict: a table of inputs is for text models; {out} is a {task.name} model: "
                                  "give its files' paths")
        pair = spec.data.text_pair_column if spec is not None and task.modality == "text" else None
        items = [] if frame is None else table_texts(frame, spec, text_column)
        for item in inputs:  # one at a time: a table's texts are never read as file names
            table = task.modality == "text" and Path(item).suffix.lower() in TABLES and Path(item).is_file()
            if pair and not table:
                raise HfTransferError(f"predict: {out} classifies text pairs (data.text_pair_column {pair!r}); give "
                                      f"a table ({', '.join(sorted(TABLES))}) with columns "
                                      f"{spec.data.text_column!r} and {pair!r}, not {item!r}")
            items += table_texts(Path(item), spec, text_column) if table else task.read_inputs([item])
        if not items:
            raise HfTransferError("predict: no inputs")
        pipe = load_any_pipeline(out, hub_user_task(task), device=device)  # an export folder: onnxruntime
    except FolderError as err:
        raise HfTransferError(f"predict: {err}") from None
    with progress(len(items), "predict") as bar:
        return items, run(pipe, task, spec, items, top_k, batch_size, bar)


def call_kwargs(pipe, task, spec, top_k: int, batch_size: int) -> dict[str, Any]:
    """The pipeline's call arguments: preprocessing as training did, top_k labels (classification)."""
    kwargs: dict[str, Any] = {"top_k": top_k, "batch_size": batch_size}
    if task.entities:  # the saved tokenizer truncates as training did
        kwargs = {"aggregation_strategy": "simple", "batch_size": batch_size}
    elif task.score_texts:  # a transcript per input, generated as the evaluation did (saved generation config)
        kwargs = {"batch_size": batch_size}
    elif spec is not None:
        kwargs |= task.pipeline_kwargs(spec)
    elif task.processor_arg == "tokenizer":
        kwargs |= {"truncation": True, "max_length": pipe.tokenizer.model_max_length}
    if getattr(pipe.model.config, "problem_type", None) == "regression":
        kwargs["function_to_apply"] = "none"
    return kwargs


def run(pipe, task, spec, items: list[Any], top_k: int = 1, batch_size: int = 8,
        bar=None) -> list[list[dict[str, Any]]]:
    """One row of results per input item (read as `task.read_inputs` reads them): labels and scores,
    entities, or a transcript; `bar` (a progress bar) advances by each. `hf-transfer serve` calls this on
    each gathered batch (without a bar)."""
    kwargs = call_kwargs(pipe, task, spec, top_k, batch_size)
    rate = getattr(getattr(pipe, "feature_extractor", None), "sampling_rate", None)
    results = each(pipe, at_rate(items, rate), bar, **kwargs)
    if task.entities and items and (not results or isinstance(results[0], dict)):
        results = [results]  # one text: the pipeline answers its entity list
    return [r if isinstance(r, list) else [r] for r in results]


def _shown(r: dict[str, Any]) -> str:
    """`label score`, for an entity `type "text" [start:end] score`, for a transcript its text."""
    if "text" in r and "label" not in r:
        return r["text"].strip()
    if "entity_group" in r:
        return f"{r['entity_group']} {r['word']!r} [{r['start']}:{r['end']}] {r['score']:.4f}"
    return f"{r['label']} {r['score']:.4f}"


def shown_input(item: Any) -> str | None:
    """What an input is called beside its predictions: the text or file, a text pair as its two texts with a tab
    between, a decoded clip's file (None for one without, such as a serve upload)."""
    if isinstance(item, dict) and "text_pair" in item:
        return f"{item['text']}\t{item['text_pair']}"
    return item if isinstance(item, str) else item.get("path") if isinstance(item, dict) else None


def format_results(items: list[Any], results: list[list[dict[str, Any]]]) -> list[str]:
    lines = []
    for item, row in zip(items, results):
        shown = shown_input(item) or "<audio>"
        scores = "  ".join(_shown(r) for r in row) if row or not isinstance(item, str) else "(no entities)"
        lines.append(f"{scores}\t{shown}")
    return lines
