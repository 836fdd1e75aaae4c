"""`hf-transfer predict OUTPUT_DIR INPUTS...`: labels and scores (transcripts, entities) from a saved folder, batched.

The task comes from the folder's recipe.yaml (its record says how command-line inputs become pipeline
inputs: texts or files of texts, image paths, audio paths) or, for a folder without one, from the
saved config's architecture. The folder loads exactly as `verify` loads it (hubuser.load_pipeline):
full models and PEFT adapters alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_transfer.console import progress
from hf_transfer.errors import HfTransferError
from hf_transfer.folder import not_a_model
from hf_transfer.arguments import as_paths, require_count
from hf_transfer.outputs.hubuser import FolderError, each, read_json, task_of
from hf_transfer.outputs.onnx_model import load_any_pipeline
from hf_transfer.outputs.verify import hub_user_task
from hf_transfer.validate import load_recipe
from hf_transfer.tasks import TASKS, resolve
from hf_transfer.tasks.inputs import at_rate

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
    entry = task_of(out, [hub_user_task(t) for t in TASKS.values()])
    return next(t for t in TASKS.values() if hub_user_task(t) == entry), None


def predict(out_dir: str | Path, inputs: list[str], top_k: int = 1, batch_size: int = 8,
            device: str | None = None) -> tuple[list[Any], list[list[dict[str, Any]]]]:
    """(inputs as read, [[{label, score}, ...] per input]) with the top_k labels per input; a progress bar
    while the pipeline runs (hf_transfer.console's rule)."""
    out = Path(out_dir)
    top_k = require_count("predict", "top_k", top_k)
    batch_size = require_count("predict", "batch_size", batch_size)
    inputs = as_paths("predict", inputs, "inputs")
    try:
        task, spec = task_of_folder(out)
        items = task.read_inputs(inputs)
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
    """What an input is called beside its predictions: the text or file, a decoded clip's file (None for
    one without, such as a serve upload)."""
    return item if isinstance(item, str) else item.get("path") if isinstance(item, dict) else None


def format_results(items: list[Any], results: list[list[dict[str, Any]]]) -> list[str]:
    lines = []
    for item, row in zip(items, results):
        shown = shown_input(item) or "<audio>"
        scores = "  ".join(_shown(r) for r in row) if row or not isinstance(item, str) else "(no entities)"
        lines.append(f"{scores}\t{shown}")
    return lines
