"""What every benchmark case measures, the same way on CPU and GPU.

- the device's measured matmul peak (fp32 always; bf16 on a GPU or a CPU with bf16 instructions),
- per-step wall time through a Trainer callback (median of windows after warm-up),
- peak memory during a case: torch.cuda.max_memory_allocated (reset per case) on a GPU, the
  process's resident set size sampled every 20 ms on CPU; on CPU also the peak held by live tensors
  (PeakTensorMemory, the counterpart of max_memory_allocated),
- model FLOPs per sample counted by torch.utils.flop_counter on one forward (× 3 for a training step).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time

import torch
from transformers import TrainerCallback

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

VISION_TODAY = ["finetune={strategy: full}", "vision.image_cache=false", "vision.channels_last=false"]
"""Overrides that put the vision default back on its path before issue 23 (the acceptance's "today"): every
layer trained, every image decoded and transformed by PIL per step, NCHW batches."""


def bf16_supported() -> bool:
    """bf16 autocast that runs at hardware speed: CUDA with bf16, or a CPU with AVX512-BF16 / AMX (the test
    `training.bf16: auto` makes)."""
    from hf_transfer.precision import native_bf16

    return native_bf16()


def device_name() -> str:
    if CUDA:
        return torch.cuda.get_device_name()
    return f"CPU ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def gemm_peak_gflops(dtype=torch.float32, n: int | None = None, reps: int | None = None) -> float:
    """Measured matmul peak (GFLOP/s) of this device in `dtype`; fp32 on a GPU with TF32 off."""
    n = n or (8192 if CUDA else 2048)
    reps = reps or (20 if CUDA else 10)
    a = torch.randn(n, n, device=DEVICE, dtype=dtype)
    b = torch.randn(n, n, device=DEVICE, dtype=dtype)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for _ in range(3):
            torch.matmul(a, b)
        _sync()
        start = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        _sync()
        return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def peaks() -> dict[str, float]:
    """{"fp32": GFLOP/s, "bf16": GFLOP/s (where supported)}."""
    out = {"fp32": round(gemm_peak_gflops(torch.float32), 1)}
    if bf16_supported():
        out["bf16"] = round(gemm_peak_gflops(torch.bfloat16), 1)
    return out


class StepTimer(TrainerCallback):
    """Wall time of every training step (the device synchronised at both ends)."""

    def __init__(self):
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kw):
        _sync()
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        _sync()
        self.times.append(time.perf_counter() - self._t0)


def windows(times: list[float], warmup: int = 3, window: int = 5) -> list[float]:
    """Seconds of each full window of `window` steps after the first `warmup` steps."""
    times = times[warmup:]
    return [sum(times[i:i + window]) for i in range(0, len(times) - window + 1, window)]


def median_rate(times: list[float], per_step: list[float] | float, warmup: int = 3, window: int = 5) -> float:
    """Median over windows of (work done in the window) / (its seconds); work per step a list or a constant."""
    times = times[warmup:]
    work = per_step[warmup: warmup + len(times)] if isinstance(per_step, list) else [per_step] * len(times)
    rates = [sum(work[i:i + window]) / sum(times[i:i + window]) for i in range(0, len(times) - window + 1, window)]
    if not rates:
        raise ValueError(f"too few steps: {len(times) + warmup} (need at least {warmup + window})")
    return statistics.median(rates)


def rss_mb() -> float:
    """This process's resident set size, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_anon_mb() -> float:
    """This process's anonymous resident memory (RssAnon: heap and tensors, no mapped files), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakMemory:
    """Peak memory (MB) inside a `with` block: GPU allocated on CUDA, else `read()` (default: process
    RSS) sampled every `interval` seconds."""

    def __init__(self, interval: float = 0.02, read=rss_mb):
        self.interval, self.read, self.peak_mb, self._stop = interval, read, 0.0, threading.Event()

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self.read())

    def __enter__(self):
        if CUDA:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak_mb = self.read()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if CUDA:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self.read())
        return False

    @property
    def label(self) -> str:
        return "peak GPU memory allocated" if CUDA else "peak process RSS"


def module_tensor_mb(module: torch.nn.Module) -> float:
    """MB held by a module's parameters and buffers (each storage once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in [*module.parameters(), *module.buffers()]}
    return sum(storages.values()) / 2**20


class PeakTensorMemory:
    """Peak memory held by CPU tensors inside a `with` block (MB): `start_mb` (what was live at entry,
    e.g. the model's weights) plus the most the CPU allocator had handed out at once since, summed from
    torch.profiler's memory events. The CPU counterpart of torch.cuda.max_memory_allocated: it leaves
    out library code, the Python heap and the freed pages malloc keeps, all of which RSS counts."""

    def __init__(self, start_mb: float = 0.0):
        self.start_mb, self.peak_mb = start_mb, start_mb
        self._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)

    def __enter__(self):
        self._prof.__enter__()
        return self

    def __exit__(self, *exc):
        self._prof.__exit__(*exc)
        with tempfile.TemporaryDirectory() as tmp:
            trace = os.path.join(tmp, "trace.json")
            self._prof.export_chrome_trace(trace)
            with open(trace) as f:
                events = json.load(f)["traceEvents"]
        self.peak_mb = self.start_mb + allocation_peak_bytes(events) / 2**20
        return False


def allocation_peak_bytes(events: list[dict]) -> int:
    """The most CPU bytes live at once above the start, from a chrome trace's "[memory]" events (each an
    allocation, positive bytes, or a free, negative; Device Type 0 is the CPU), in time order."""
    cpu = [e for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == 0]
    changes = sorted(((e["ts"], e["args"]["Bytes"]) for e in cpu),
                     key=lambda change: change[0])  # stable: same-time events keep the trace's order
    live = peak = 0
    for _, size in changes:
        live += size
        peak = max(peak, live)
    return peak


def forward_flops(model, batch: dict) -> int:
    """FLOPs of one forward pass on `batch` (torch.utils.flop_counter: matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), counter:
            model(**{k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()})
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def markdown_table(rows: list[dict], keys: list[str] | None = None) -> str:
    keys = keys or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
