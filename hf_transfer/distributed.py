"""Running under any launcher: which process writes, the DeepSpeed extra, the effective batch size.

The Trainer already shards data, gathers evaluation predictions (`gather_for_metrics` drops the
samples padded onto the last batch) and saves from the main process; this module covers what
hf-transfer adds around it: one process decides about and writes the output folder, a missing
DeepSpeed is one clear line, sharded (ZeRO-3) saves are checked for empty tensors.
"""

from __future__ import annotations

import atexit
import faulthandler
import importlib.util
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from hf_transfer.errors import DependencyError, HfTransferError, OutputError

log = logging.getLogger(__name__)
T = TypeVar("T")

DEEPSPEED_HINT = "pip install 'hf-transfer-learning[deepspeed]'"
ZERO3_HINT = "under DeepSpeed ZeRO-3 set zero3_save_16bit_model: true (accelerate_configs/deepspeed_zero3.yaml)"


def launcher_rank() -> int:
    """Global rank set by the launcher (torchrun / accelerate launch / deepspeed); 0 when not launched."""
    return int(os.environ.get("RANK", "0") or 0)


def report_crashes() -> None:
    """A launched process that dies in native code (a signal, an abort) prints every thread's Python
    stack first, so a failed launch says where each rank was."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        faulthandler.enable()


def end_process(code: int) -> int:
    """How a command that finished (`code`) ends its process: under a launcher with several processes,
    without the interpreter's final teardown.

    The process groups outlive `destroy_process_group()`: DDP's reducer and DeepSpeed's engine,
    optimizer and parameters still hold them, and gloo's worker and transport threads keep running
    (seen in `/proc/self/task`). They are torn down during interpreter shutdown: the stage where, twice
    in CI's ZeRO-3 tests, a rank that had finished and saved aborted (SIGABRT, "terminate called without
    an active exception") and the launcher reported the run as failed. So once the command has finished,
    a launched process runs its exit handlers, flushes its output and leaves with `os._exit(code)`, as
    multiprocessing's children do. It goes the ordinary way when a non-daemon thread still runs
    (os._exit would cut it off), and in a one-process group, which is destroyed first. Called on success
    only: a rank that failed cannot take part in an orderly shutdown.
    """
    dist = sys.modules.get("torch.distributed")  # never import torch for a command that did not
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return code
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if dist.get_world_size() == 1 or others:
        dist.destroy_process_group()
        return code
    atexit._run_exitfuncs()  # what Python would run at exit: logging's flush, weakref finalizers, ...
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def log_level() -> int:
    """INFO on the main process, WARNING on the others (one copy of each log line)."""
    return logging.INFO if launcher_rank() == 0 else logging.WARNING


def main_decides(decide: Callable[[], T], args) -> T:
    """`decide()` runs on the main process only; every process gets its answer, or raises its one-line error.

    On several machines the others may see another file system (or the same one a moment later, after
    the main process changed it): they act on what the main process found instead of checking again,
    and a refusal stops every process with the same line instead of leaving the others at a barrier.
    """
    if args.world_size <= 1:
        return decide()
    import torch.distributed as dist

    answer: list[Any] = [None]
    if args.process_index == 0:
        try:
            answer = [(decide(), None)]
        except HfTransferError as err:
            answer = [(None, err)]
    dist.broadcast_object_list(answer, src=0)
    value, err = answer[0]
    if err is not None:
        raise err
    return value


def deepspeed_requested(training: dict[str, Any]) -> str | None:
    """Who asks for DeepSpeed: the recipe key, the launcher, or nobody (None)."""
    if training.get("deepspeed"):
        return "training.deepspeed"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "the launcher's Accelerate config (distributed_type: DEEPSPEED)"
    return None


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def require_extras(training: dict[str, Any]) -> None:
    """Fail with one line, before any model is loaded, when DeepSpeed is asked for but not installed."""
    who = deepspeed_requested(training)
    if who and not installed("deepspeed"):
        raise DependencyError(f"{who} asks for DeepSpeed, which is not installed: {DEEPSPEED_HINT}")


def effective_batch_size(args) -> int:
    """Samples per optimizer step: per device x processes x gradient accumulation."""
    return args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps


def log_batch_size(args) -> int:
    size = effective_batch_size(args)
    log.info(
        "effective batch size %d = %d per device x %d processes x %d accumulation steps",
        size, args.per_device_train_batch_size, args.world_size, args.gradient_accumulation_steps,
    )
    return size


def declare_mean_loss(model) -> None:
    """Tell the Trainer the model's loss is already a mean over its batch.

    Classification models accept `**kwargs` but ignore `num_items_in_batch`; the Trainer then
    assumes the loss is a sum-normalised token loss, multiplies it by the number of processes
    (doubling gradients and the reported loss under two processes) and skips the division by
    gradient-accumulation steps. `accepts_loss_kwargs = False` restores plain averaging.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.accepts_loss_kwargs = False


def match_deepspeed_dtype(model, args):
    """Under DeepSpeed with bf16/fp16, every parameter in that dtype before the engine partitions
    them: ZeRO-3 refuses a trainable group of mixed dtypes (seen on a GPU with a LoRA adapter and
    its saved head). DeepSpeed keeps fp32 master weights in the optimizer either way."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(getattr(args, "mixed_precision", "no"))
    if getattr(args, "deepspeed_plugin", None) is None or dtype is None:
        return model
    return model.to(dtype)


def zero_stage(trainer) -> int:
    """The DeepSpeed ZeRO stage of a Trainer (0 without DeepSpeed)."""
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return 0
    return int(trainer.accelerator.state.deepspeed_plugin.zero_stage or 0)


def is_sharded(trainer) -> bool:
    """True when no single process holds the full weights (ZeRO-3 or FSDP)."""
    return zero_stage(trainer) == 3 or getattr(trainer, "is_fsdp_enabled", False)


def check_saved_weights(out: Path) -> dict[str, int]:
    """Tensor count per weights file in `out`; raise if nothing, or an empty tensor, was saved.

    Both are what a sharded (ZeRO-3) save without gathering leaves behind.
    """
    from safetensors import safe_open

    counts = {}
    for path in sorted(out.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
            empty = [k for k in keys if 0 in fh.get_slice(k).get_shape()]
        counts[path.name] = len(keys)
        if empty or not keys:
            what = f"{len(empty)} empty tensors (e.g. {empty[0]})" if empty else "no tensors"
            raise OutputError(f"training.output_dir: {path} holds {what}; {ZERO3_HINT}")
    if not counts:
        raise OutputError(f"training.output_dir: no weights (*.safetensors) were saved in {out}; {ZERO3_HINT}")
    return counts
