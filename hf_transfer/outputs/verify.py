"""Round-trip check: reload a finished run as a Hub user would and reproduce its metrics.

The evaluation splits are rebuilt from the folder's `recipe.yaml` exactly as training built them
(tasks/data.py: same files, seed, carved validation, sample caps), turned into pipeline inputs by the
task's record (`verify_inputs`) and saved to a temporary folder. A separate Python process runs
`hubuser.py` with `hf_transfer` blocked from import: it loads the folder through
`transformers.pipeline` (full models) or `peft.AutoPeftModel*` (adapters), checks the head,
`id2label` and the adapter, and returns the pipeline's raw logits (token classification: per-word
logits from the pipeline's model and tokenizer, `mode: words`). The metrics are computed from them
with the task's own `compute_metrics` and compared with `metrics.json` (the Trainer's final
`evaluate()` calls).

Exactness: the pipeline runs the same batches as the Trainer's evaluation (same order and
`per_device_eval_batch_size`, each batch padded to its longest input, the same truncation, fp32),
so on the same device the logits are bit-identical and the default tolerance is 0. A run evaluated
under fp16/bf16 or on another device may need `--tolerance`.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from hf_transfer.console import bar_options, datasets_quiet
from hf_transfer.errors import HfTransferError, ModelError, VerifyError
from hf_transfer.folder import RECIPE, not_a_model, read_metrics, require_model_run
from hf_transfer.arguments import require_tolerance
from hf_transfer.outputs.hubuser import FolderError, check_device
from hf_transfer.outputs.multitask import multitask_root
from hf_transfer.validate import load_recipe
from hf_transfer.tasks import TASKS, resolve
from hf_transfer.tasks.base import Task
from hf_transfer.tasks.multitask import task_spec
from hf_transfer.train import load_splits
from hf_transfer.trainer import training_arguments

log = logging.getLogger(__name__)

SPLITS = {"validation": "eval", "test": "test"}  # metrics.json section -> metric key prefix
HUBUSER = Path(__file__).with_name("hubuser.py")
BLOCK_IMPORT = "import sys; sys.modules['hf_transfer'] = None  # a Hub user has no hf_transfer\n"


@dataclass
class VerifyResult:
    folder: Path
    loader: str
    task: str
    compared: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    """split -> metric -> (metrics.json value, value after reloading)."""
    tasks: list[VerifyResult] = field(default_factory=list)
    """A multi-task run: one result per task folder."""

    def summary(self) -> str:
        if self.tasks:
            return "\n".join(part.summary() for part in self.tasks)
        parts = []
        for role, pairs in self.compared.items():
            shown = ", ".join(f"{k} {new:.4f}" for k, (_, new) in list(pairs.items())[:2])
            parts.append(f"{role}: {len(pairs)} metrics reproduced ({shown})")
        return f"verify: {self.folder} reloads with {self.loader} ({self.task}); " + "; ".join(parts)


def hub_user_task(task: Task) -> dict[str, Any]:
    """What the Hub-user side (hubuser.py, without hf_transfer) needs to know of a task record."""
    mode = "texts" if task.score_texts else "words" if task.entities else "labels"
    return {"pipeline": task.pipeline_task, "auto": task.auto_class, "autos": [task.auto_class, *task.auto_classes],
            "processor": task.processor_arg, "processors": [task.processor_arg, *task.more_processor_args],
            "peft": task.peft_task_type, "mode": mode}


def label_array(ds):
    """The label array the Trainer's evaluation saw: integer labels stay int64, floats (and lists of
    floats) become float32, as the collators' torch.tensor makes them."""
    import numpy as np

    labels = np.asarray(ds["labels"])
    return labels.astype(np.int64) if np.issubdtype(labels.dtype, np.integer) else labels.astype(np.float32)


def word_label_array(ds, logits):
    """Word-level labels (token classification) as an array shaped like the per-word logits: padded with
    -100, and -100 where the Hub-user side found no sub-token (words cut by truncation: training's
    evaluation did not score them either)."""
    import numpy as np

    labels = np.full(logits.shape[:2], -100, dtype=np.int64)
    for i, row in enumerate(ds["labels"]):
        labels[i, :len(row)] = row
    labels[np.isnan(logits).any(axis=-1)] = -100
    return labels


def _reload_bar(disable: bool | None) -> dict[str, Any] | None:
    """The options of the reload process's bar (one per split): this terminal's width, which it cannot see."""
    options = bar_options(unit="ex", disable=disable)
    return options and {**options, "dynamic_ncols": False, "ncols": shutil.get_terminal_size().columns}


def _relay(fd: int) -> None:
    """Copy what the reload process writes to `fd` (its progress bar) to this process's stderr as it comes."""
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode
    with open(fd, "rb", buffering=0) as source:
        while chunk := source.read(4096):
            sys.stderr.write(decode(chunk))
            sys.stderr.flush()


def _run_hub_user(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run hubuser.py in a fresh interpreter that cannot import hf_transfer; its progress bar (on a pipe of
    its own: its stdout and stderr are captured) shows on this process's stderr."""
    source = BLOCK_IMPORT + HUBUSER.read_text(encoding="utf-8")
    bar_read, bar_write = os.pipe()
    spec_path = tmp / "spec.json"
    spec_path.write_text(json.dumps({**spec, "progress_fd": bar_write}), encoding="utf-8")
    relay = threading.Thread(target=_relay, args=(bar_read,), daemon=True)
    relay.start()
    try:
        proc = subprocess.run([sys.executable, "-c", source, str(spec_path)], capture_output=True, text=True,
                              cwd=tmp, pass_fds=(bar_write,))
    finally:
        os.close(bar_write)  # the reload process has exited: the relay reads to the end of the pipe
        relay.join()
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


def _save_quietly(make: Callable[[], Any], path: Path) -> None:
    """Save the dataset `make()` returns, without datasets' progress bars for either step."""
    with datasets_quiet():
        make().save_to_disk(str(path))


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


def _processor(task: Task, spec, out: Path):
    """(spec, processor) that prepare the evaluation inputs: the recipe's base model's processor, as training made
    it; where that model is gone (a local folder moved or deleted, a Hub id offline), the one the run saved,
    which is what a Hub user's pipeline loads (a finished run needs nothing but its own folder)."""
    try:
        return spec, task.load_processor(spec)
    except ModelError as err:
        own = replace(spec, model=replace(spec.model, name_or_path=str(out)))
        try:
            processor = task.load_processor(own)
        except HfTransferError:
            raise err from None
        log.info("%s; the run's own processor prepares the inputs", err)
        return own, processor


def verify(out_dir: str | Path, device: str | None = None, tolerance: float = 0.0) -> VerifyResult:
    """Reload `out_dir` in a subprocess without hf_transfer and re-evaluate it; raise VerifyError. A multi-task
    run (its root, or one of its task folders) reloads each task folder and reproduces that task's metrics."""
    from transformers import EvalPrediction

    out = Path(out_dir)
    tolerance = require_tolerance("verify", "tolerance", tolerance)
    try:
        check_device(device)
    except FolderError as err:
        raise VerifyError(f"verify: {err}") from None
    root, only = multitask_root(out)
    if root is not None:
        return _verify_tasks(root, only, device, tolerance)
    require_model_run(out, VerifyError)
    metrics = read_metrics(out, VerifyError)
    recipe = _recipe(out)
    task, spec = resolve(recipe)
    if task.verify_inputs is None:
        raise VerifyError(f"{out}: task {task.name} has no round-trip check")
    args = training_arguments(recipe, out)
    loaded = load_splits(recipe, args.seed)
    roles = _roles(out, metrics, loaded.splits)
    spec, processor = _processor(task, spec, out)
    answer, outputs = _reload(out, task, spec, processor, {r: loaded.splits[r] for r in roles}, args, device,
                              loaded.label_names)
    result = VerifyResult(out, answer["loader"], answer["task"])
    compute = task.compute_metrics(spec)
    for role in roles:
        split = loaded.splits[role]
        if task.score_texts:
            reloaded = task.score_texts(spec)(list(split["labels"]), outputs[role])
        else:
            labels = word_label_array(split, outputs[role]) if task.entities else label_array(split)
            reloaded = compute(EvalPrediction(predictions=outputs[role], label_ids=labels))
        result.compared[role] = _compare(out, role, metrics[role], reloaded, SPLITS[role], tolerance)
    return result


def _recipe(out: Path):
    where = out / RECIPE
    try:
        return load_recipe(where)
    except HfTransferError as err:  # named once: some errors name the file, others only the recipe key
        raise VerifyError(str(err) if str(err).startswith(str(where)) else f"{where}: {err}") from None


def _roles(out: Path, metrics: dict[str, Any], splits) -> list[str]:
    roles = [r for r in SPLITS if r in metrics and r in splits]
    if not roles:
        raise VerifyError(f"{out}: metrics.json holds no validation or test metrics to reproduce")
    return roles


def _compare(out: Path, role: str, saved: dict[str, Any], reloaded: dict[str, float], prefix: str, tolerance: float):
    try:
        return compare(saved, reloaded, prefix, tolerance)
    except VerifyError as err:
        raise VerifyError(f"{out}: {role} split: {err}") from None


def _reload(folder: Path, task: Task, spec, processor, splits: dict[str, Any], args, device: str | None,
            label_names) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the reload process's answer, its outputs per split: logits, or texts for speech recognition): `folder`
    loaded as a Hub user loads it and run on `splits` in the batches of the Trainer's evaluation."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="hf-transfer-verify-") as tmp_name:
        tmp = Path(tmp_name)
        for role, split in splits.items():
            _save_quietly(lambda: task.verify_inputs(spec, split, processor), tmp / role)
        hub_spec = {
            "folder": str(folder.resolve()),
            "task": hub_user_task(task),
            "splits": {role: str(tmp / role) for role in splits},
            "batch_size": args.per_device_eval_batch_size,
            "call_kwargs": task.pipeline_kwargs(spec),
            "device": device,
            "expected_labels": label_names,  # as training named them; None for regression
            "out": str(tmp),
            "progress": _reload_bar(args.disable_tqdm),
        }
        answer = _run_hub_user(hub_spec, tmp)
        if task.score_texts:
            return answer, {role: json.loads((tmp / f"{role}.json").read_text(encoding="utf-8")) for role in splits}
        return answer, {role: np.load(tmp / f"{role}.npy") for role in splits}


def _verify_tasks(root: Path, only: str | None, device: str | None, tolerance: float) -> VerifyResult:
    """Each task folder of the multi-task run in `root` (or only task `only`) reloaded as a Hub user loads it, on
    the run's evaluation splits (every row, in the Trainer's batches); the task's metrics are computed on the rows
    labelled for it, as training scored them, and compared with metrics.json's <split>_<task>_<metric>."""
    import numpy as np
    from transformers import EvalPrediction

    metrics = read_metrics(root, VerifyError)
    recipe = _recipe(root)
    single = TASKS[recipe.task]
    if single.verify_inputs is None:
        raise VerifyError(f"{root}: task {single.name} has no round-trip check")
    _, spec = resolve(recipe)
    args = training_arguments(recipe, root)
    loaded = load_splits(recipe, args.seed)
    roles = _roles(root, metrics, loaded.splits)
    spec, processor = _processor(single, spec, root)
    result = VerifyResult(root, "", single.name)
    for i, t in enumerate(recipe.tasks):
        if only is not None and t.name != only:
            continue
        folder = root / t.name
        hint = not_a_model(folder)
        if hint:
            raise VerifyError(hint)
        one = task_spec(spec, t)
        answer, logits = _reload(folder, single, one, processor, {r: loaded.splits[r] for r in roles}, args, device,
                                 loaded.label_names[t.name])
        part = VerifyResult(folder, answer["loader"], answer["task"])
        compute = single.compute_metrics(one)
        for role in roles:
            refs = np.asarray([row[i] for row in loaded.splits[role]["labels"]], dtype=np.float64)
            kept = ~np.isnan(refs)
            if not kept.any():
                continue
            labels = refs[kept].astype(np.float32 if t.problem_type == "regression" else np.int64)
            reloaded = compute(EvalPrediction(predictions=logits[role][kept], label_ids=labels))
            part.compared[role] = _compare(folder, role, metrics[role], reloaded, f"{SPLITS[role]}_{t.name}",
                                           tolerance)
        result.tasks.append(part)
    return result
