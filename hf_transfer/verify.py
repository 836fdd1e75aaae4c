"""Round-trip check: reload a finished run as a Hub user would and reproduce its metrics.

The evaluation splits are rebuilt from the folder's `recipe.yaml` exactly as training built them
(`hf_transfer.data`: same files, seed, carved validation, sample caps) and saved to a temporary
folder. A separate Python process runs `hubuser.py` with `hf_transfer` blocked from import: it
loads the folder through `transformers.pipeline` (full models) or `peft.AutoPeftModel*`
(adapters), checks the head, `id2label` and the adapter, and returns the pipeline's raw logits.
The metrics are computed from them with the Trainer's own `compute_metrics` and compared with
`metrics.json` (the Trainer's final `evaluate()` calls).

Exactness: the pipeline runs the same batches as the Trainer's evaluation (same order and
`per_device_eval_batch_size`, each batch padded to its longest input, the same truncation, fp32),
so on the same device the logits are bit-identical and the default tolerance is 0. A run evaluated
under fp16/bf16 or on another device may need `--tolerance`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_transfer.errors import HfTransferError, VerifyError

log = logging.getLogger(__name__)

SPLITS = {"validation": "eval", "test": "test"}  # metrics.json section -> metric key prefix
AUTO_MODALITIES = {"text"}  # verified automatically after training (exactness measured)
BLOCK_IMPORT = "import sys; sys.modules['hf_transfer'] = None  # a Hub user has no hf_transfer\n"


@dataclass
class VerifyResult:
    folder: Path
    loader: str
    task: str
    compared: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    """split -> metric -> (metrics.json value, value after reloading)."""

    def summary(self) -> str:
        parts = []
        for role, pairs in self.compared.items():
            shown = ", ".join(f"{k} {new:.4f}" for k, (_, new) in list(pairs.items())[:2])
            parts.append(f"{role}: {len(pairs)} metrics reproduced ({shown})")
        return f"verify: {self.folder} reloads with {self.loader} ({self.task}); " + "; ".join(parts)


def read_metrics(out: Path) -> dict[str, Any]:
    path = out / "metrics.json"
    if not path.is_file():
        raise VerifyError(f"{out}: no metrics.json; not a finished hf-transfer run")
    return json.loads(path.read_text(encoding="utf-8"))


def _labels(ds, problem_type: str):
    """The label array the Trainer's evaluation saw (int64 classes, float32 otherwise)."""
    import numpy as np

    dtype = np.int64 if problem_type == "single_label_classification" else np.float32
    return np.asarray(ds["labels"], dtype=dtype)


def _run_hub_user(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run hubuser.py in a fresh interpreter that cannot import hf_transfer."""
    source = BLOCK_IMPORT + (Path(__file__).with_name("hubuser.py")).read_text(encoding="utf-8")
    spec_path = tmp / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-c", source, str(spec_path)], capture_output=True, text=True, cwd=tmp
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if lines:
        answer = json.loads(lines[-1])
        if answer.get("ok") and proc.returncode == 0:
            return answer
        if answer.get("error"):
            raise VerifyError(answer["error"])
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    raise VerifyError(
        f"{spec['folder']}: the reload process failed (exit {proc.returncode}): {tail[-1] if tail else 'no output'}"
    )


def _save_quietly(ds, path: Path) -> None:
    import datasets

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        ds.save_to_disk(str(path))
    finally:
        if shown:
            datasets.enable_progress_bars()


def compare(saved: dict[str, Any], reloaded: dict[str, float], prefix: str, tolerance: float):
    """(metric -> (saved, reloaded)) for every metric; raise on the first that differs."""
    pairs = {}
    for key, new in reloaded.items():
        old = saved.get(f"{prefix}_{key}")
        if old is None:
            raise VerifyError(f"metrics.json has no {prefix}_{key} to compare with")
        if abs(old - new) > tolerance:
            raise VerifyError(
                f"{prefix}_{key} is {new!r} after reloading but {old!r} in metrics.json "
                f"(tolerance {tolerance})"
            )
        pairs[key] = (old, new)
    return pairs


def verify(out_dir: str | Path, device: str | None = None, tolerance: float = 0.0) -> VerifyResult:
    """Reload `out_dir` in a subprocess without hf_transfer and re-evaluate it; raise VerifyError."""
    import numpy as np
    from transformers import EvalPrediction

    from hf_transfer.config import load_recipe
    from hf_transfer.metrics import compute_metrics_fn
    from hf_transfer.train import MODALITIES, load_splits, training_arguments

    out = Path(out_dir)
    metrics = read_metrics(out)
    try:
        recipe = load_recipe(out / "recipe.yaml")
    except HfTransferError as err:
        raise VerifyError(f"{out}/recipe.yaml: {err}") from None
    modality = MODALITIES[recipe.model.modality]
    columns = list(modality.input_columns(recipe).values())
    args = training_arguments(recipe, out)
    loaded = load_splits(recipe, args.seed)
    splits = loaded.splits
    roles = [r for r in SPLITS if r in metrics and r in splits]
    if not roles:
        raise VerifyError(f"{out}: metrics.json holds no validation or test metrics to reproduce")
    with tempfile.TemporaryDirectory(prefix="hf-transfer-verify-") as tmp_name:
        tmp = Path(tmp_name)
        for role in roles:
            _save_quietly(splits[role].select_columns(columns), tmp / role)
        spec = {
            "folder": str(out.resolve()),
            "splits": {role: str(tmp / role) for role in roles},
            "input_columns": columns,
            "batch_size": args.per_device_eval_batch_size,
            "max_length": recipe.model.max_length if recipe.model.modality == "text" else None,
            "device": device,
            "expected_labels": loaded.label_names,  # as training named them; None for regression
            "out": str(tmp),
        }
        answer = _run_hub_user(spec, tmp)
        logits = {role: np.load(tmp / f"{role}.npy") for role in roles}
    compute = compute_metrics_fn(recipe.data.problem_type)
    result = VerifyResult(out, answer["loader"], answer["task"])
    for role in roles:
        reloaded = compute(EvalPrediction(predictions=logits[role], label_ids=_labels(splits[role], recipe.data.problem_type)))
        try:
            result.compared[role] = compare(metrics[role], reloaded, SPLITS[role], tolerance)
        except VerifyError as err:
            raise VerifyError(f"{out}: {role} split: {err}") from None
    return result

