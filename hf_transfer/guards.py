"""Run-time guards: non-finite losses, incomplete checkpoints, secrets in written files."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from hf_transfer.errors import HfTransferError

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_SECRET_KEY = re.compile(r"token|secret|password|api_key", re.I)
REDACTED = "<redacted>"


class TrainingError(HfTransferError):
    """Training cannot go on (e.g. the loss became NaN)."""


def install_nan_guard(model, trainer, policy: str) -> dict[str, int]:
    """Check the loss of every training forward pass; stop (or skip the batch) when not finite.

    A forward hook sees the model output's `loss`; under `skip` it is replaced by a zero that
    carries no gradient, so the optimizer step leaves the weights as they were.
    """
    import torch

    counts = {"skipped_nonfinite_batches": 0}

    def hook(module, inputs, output):
        loss = getattr(output, "loss", None)
        if not module.training or loss is None or bool(torch.isfinite(loss.detach()).all()):
            return None
        step = trainer.state.global_step + 1
        if policy == "stop":
            raise TrainingError(
                f"training: loss is {loss.detach().float().item()} at step {step}; lower "
                "training.learning_rate or set nan_policy: skip"
            )
        counts["skipped_nonfinite_batches"] += 1
        log.warning("non-finite loss at step %d: batch skipped", step)
        output.loss = torch.zeros((), device=loss.device, dtype=loss.dtype, requires_grad=True).clone()
        return output

    model.register_forward_hook(hook)
    return counts


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


def redact(data: Any) -> Any:
    """A copy of `data` with the values of secret-looking keys (token, password ...) removed."""
    if isinstance(data, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) and v else redact(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data
