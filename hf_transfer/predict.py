"""`hf-transfer predict OUTPUT_DIR INPUTS...`: labels and scores from a saved folder, batched.

The pipeline task comes from the saved config's architecture (hubuser.TASKS): text inputs are
strings, or files holding one input per line (`-` reads standard input); image and audio inputs
are file paths, handed to the image- or audio-classification pipeline. The folder loads exactly
as `verify` loads it (hubuser.load_pipeline): full models and LoRA adapters alike.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from hf_transfer.errors import HfTransferError


def text_inputs(items: list[str]) -> list[str]:
    """Strings as they are; an existing file (or `-`) contributes its non-empty lines."""
    texts: list[str] = []
    for item in items:
        if item == "-":
            texts += [ln for ln in sys.stdin.read().splitlines() if ln.strip()]
        elif Path(item).is_file():
            texts += [ln for ln in Path(item).read_text(encoding="utf-8").splitlines() if ln.strip()]
        else:
            texts.append(item)
    return texts


def file_inputs(items: list[str]) -> list[str]:
    missing = [i for i in items if not Path(i).is_file()]
    if missing:
        raise HfTransferError(f"predict: input file not found: {missing[0]}")
    return list(items)


def audio_inputs(items: list[str]) -> list[Any]:
    """Audio paths, decoded with soundfile when it is installed (the pipeline needs ffmpeg otherwise)."""
    paths = file_inputs(items)
    try:
        import soundfile
    except ImportError:
        return paths
    out = []
    for path in paths:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        out.append({"raw": data.mean(axis=1), "sampling_rate": rate})
    return out


# pipeline task -> how command-line inputs become pipeline inputs
READERS = {
    "text-classification": text_inputs,
    "image-classification": file_inputs,
    "audio-classification": audio_inputs,
}


def _max_length(out: Path) -> int | None:
    recipe = out / "recipe.yaml"
    if not recipe.is_file():
        return None
    return ((yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("model") or {}).get("max_length")


def predict(out_dir: str | Path, inputs: list[str], top_k: int = 1, batch_size: int = 8,
            device: str | None = None) -> tuple[list[Any], list[list[dict[str, Any]]]]:
    """(inputs as read, [[{label, score}, ...] per input]) with the top_k labels per input."""
    from hf_transfer.hubuser import FolderError, load_pipeline, task_of

    out = Path(out_dir)
    try:
        task = task_of(out)[0]
        items = READERS[task](inputs)
        if not items:
            raise HfTransferError("predict: no inputs")
        pipe = load_pipeline(out, device)
    except FolderError as err:
        raise HfTransferError(f"predict: {err}") from None
    kwargs: dict[str, Any] = {"top_k": top_k, "batch_size": batch_size}
    if task == "text-classification":
        kwargs |= {"truncation": True, "max_length": _max_length(out) or pipe.tokenizer.model_max_length}
    if pipe.model.config.problem_type == "regression":
        kwargs["function_to_apply"] = "none"
    results = pipe(items, **kwargs)
    return items, [r if isinstance(r, list) else [r] for r in results]


def format_results(items: list[Any], results: list[list[dict[str, Any]]]) -> list[str]:
    lines = []
    for item, row in zip(items, results):
        shown = item if isinstance(item, str) else "<audio>"
        scores = "  ".join(f"{r['label']} {r['score']:.4f}" for r in row)
        lines.append(f"{scores}\t{shown}")
    return lines
