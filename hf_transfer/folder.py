"""The run folder: what a finished hf-transfer run leaves on disk, and the one place that writes it.

    <output_dir>/
      model files          (config.json, model.safetensors or adapter_model.safetensors, processor files)
      recipe.yaml          the resolved recipe (secrets redacted)
      metrics.json         written LAST: a folder without it is not a finished run
      checkpoints/         Trainer's checkpoints (checkpoint-<step>/, trainer_state.json written last)

Everything that reads or writes these names goes through this module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from hf_transfer.errors import OutputError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
COMPLETE_MARKER = "metrics.json"  # written last: a folder without it is not a finished run
RECIPE = "recipe.yaml"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def default_output_dir(model_name: str, strategy: str) -> str:
    name = Path(model_name.rstrip("/")).name
    return f"outputs/{name}-{strategy}"


def check_output_dir(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to touch an existing non-empty output folder unless told to."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"training.output_dir: {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()) or resume:
        return
    if not overwrite:
        raise OutputError(
            f"training.output_dir: {out} is not empty; pass --overwrite to replace it "
            "or --resume to continue from its last checkpoint"
        )
    shutil.rmtree(out)


def is_finished(out: Path) -> bool:
    return (Path(out) / COMPLETE_MARKER).is_file()


def mark_unfinished(out: Path) -> None:
    """Resuming: the folder is unfinished until it is saved again."""
    (out / COMPLETE_MARKER).unlink(missing_ok=True)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def finish(out: Path, recipe_yaml: str, metrics: dict[str, Any]) -> None:
    """The last writes of a run: its recipe, then metrics.json (which marks the folder finished)."""
    (out / RECIPE).write_text(recipe_yaml, encoding="utf-8")
    write_json_atomic(out / COMPLETE_MARKER, metrics)


def require_finished(out: Path, error: type[Exception] = OutputError, why: str = "") -> None:
    """`error` naming the folder unless it holds a finished run (`why` is appended to the message)."""
    if not is_finished(out):
        raise error(f"{out}: no metrics.json; not a finished hf-transfer run{why}")


def read_metrics(out: Path, error: type[Exception] = OutputError) -> dict[str, Any]:
    """metrics.json of a finished run (`error` naming the folder otherwise)."""
    require_finished(out, error)
    return json.loads((Path(out) / COMPLETE_MARKER).read_text(encoding="utf-8"))


def is_complete_checkpoint(folder: Path) -> bool:
    """Trainer writes trainer_state.json last: without a readable one, the save was cut short."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    found = sorted(
        (int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()
    )
    for step, path in reversed(found):
        if is_complete_checkpoint(path):
            return str(path)
        log.warning("ignoring incomplete checkpoint %s (its save was interrupted)", path)
    return None
