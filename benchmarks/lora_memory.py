"""What LoRA's process memory costs and what saving it costs in time (issue 23, point 3), BERT-base size.

Two measurements on bench_text's memory setting (a random-weight BERT-base classifier, batch 8 x 128 tokens,
hf-transfer's build_trainer + Trainer.train, AdamW, LoRA r 8 on query / value):

- `cases`: each case in a fresh CPU process, the cases interleaved, `--repeats` times (median): peak RSS
  (ru_maxrss), peak anonymous memory, the median wall and CPU time of the steps after the first.
  Cases: full fine-tuning and LoRA as hf-transfer runs them (PEFT strategies fix glibc's mmap threshold
  at 1 MiB when training begins, memory.ReturnFreedMemory; full fine-tuning keeps glibc's dynamic one),
  `full_mmap` (full fine-tuning with that callback added), `lora_glibc` (LoRA without it),
  LoRA + `training.activation_checkpointing`, `lora_glibc_trim` (glibc's threshold, `malloc_trim(0)`
  after every optimizer step), and `lora_dropout_0` / `lora_dropout_0.1` (LoRA at either dropout, whatever
  the default). `--cases` picks.
- `ab`: step time only, in one process: LoRA steps plain, checkpointed and with the 1 MiB threshold
  alternated (the order rotating each round) on the same batch, so a machine whose load drifts favours
  none; the per-round ratio to the plain step, median. "plain" fixes the threshold at 32 MiB, glibc's
  ceiling for its dynamic threshold (a fixed value cannot be undone; the dynamic one rises to the size
  of the largest block freed, here the 12 MiB feed-forward activations).

    python benchmarks/lora_memory.py cases [--repeats 3] [--cases full,full_mmap,lora,lora_glibc,...]
    python benchmarks/lora_memory.py ab [--rounds 6] [--strategy lora]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import bench_text  # noqa: E402

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter

MEASURE = """
import ctypes, statistics, time
from transformers import TrainerCallback
from hf_transfer.memory import ReturnFreedMemory
ALLOCATOR = {allocator!r}
class Trim(TrainerCallback):
    def on_step_end(self, *a, **k):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
class Cpu(TrainerCallback):
    times = []
    def on_step_begin(self, *a, **k): self.t0 = time.process_time()
    def on_step_end(self, *a, **k): self.times.append(time.process_time() - self.t0)
if ALLOCATOR in ("glibc", "trim"):
    trainer.remove_callback(ReturnFreedMemory)
if ALLOCATOR == "mmap":
    trainer.add_callback(ReturnFreedMemory())
if ALLOCATOR == "trim":
    trainer.add_callback(Trim())
with torch.no_grad():
    for param in trainer.model.parameters():
        param.data = param.data.clone()
trainer.add_callback(Cpu())
with PeakMemory(0.005, rss_anon_mb) as anon:
    trainer.train()
print(libraries, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, anon.peak_mb,
      statistics.median(trainer_timer.times[1:]), statistics.median(Cpu.times[1:]))
"""

CASES = {  # name: (overrides, allocator: None = hf-transfer's default, "glibc": glibc's dynamic threshold,
    #               "mmap": the 1 MiB threshold, "trim": glibc's + malloc_trim)
    "full": (["finetune.strategy=full"], None),
    "full_mmap": (["finetune.strategy=full"], "mmap"),
    "lora": (["finetune.strategy=lora"], None),
    "lora_glibc": (["finetune.strategy=lora"], "glibc"),
    "lora_checkpointed": (["finetune.strategy=lora", "training.activation_checkpointing=true"], None),
    "lora_glibc_trim": (["finetune.strategy=lora"], "trim"),
    "lora_dropout_0": (["finetune.strategy=lora", "finetune.dropout=0"], None),
    "lora_dropout_0.1": (["finetune.strategy=lora", "finetune.dropout=0.1"], None),
}
KEYS = ("libraries_mb", "peak_rss_mb", "peak_anon_mb", "step_s", "step_cpu_s")


def setting(work: Path) -> tuple[Path, list[str]]:
    """bench_text's memory setting: the BERT-base model and the overrides (4 steps of batch 8 x 128)."""
    files = bench_text.long_reviews({"train": str(ROOT / "assets/drugreview/train.csv"),
                                     "test": str(ROOT / "assets/drugreview/test.csv")}, work / "long")
    model = work / "bert-base-random"
    if not (model / "model.safetensors").exists():
        bench_text.bert_base_model(model)
    return model, bench_text.memory_overrides(model, files)


def cases(work: Path, names: list[str], repeats: int) -> dict:
    _, base = setting(work)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names:
            overrides, allocator = CASES[name]
            load = Path("/proc/loadavg").read_text().split()[0]
            measure = MEASURE.format(allocator=allocator)
            values = bench_text._memory_child(base + overrides, work / f"mem-{name}", measure)
            runs[name].append({**{k: round(v, 2) for k, v in zip(KEYS, values)}, "load": float(load)})
            print(i, name, runs[name][-1], flush=True)
    median = {name: {k: round(statistics.median(r[k] for r in rs), 2) for k in (*KEYS, "load")}
              for name, rs in runs.items()}
    return {"median": median, "runs": runs}


def ab(work: Path, rounds: int, strategy: str) -> dict:
    _, base = setting(work)
    overrides = base + [f"finetune.strategy={strategy}"]
    trainer, _ = bench_text.hf_transfer_trainer(bench_text.RECIPE, overrides, work / "ab")
    model = trainer.model
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    batch, optimizer = next(iter(trainer.get_train_dataloader())), trainer.create_optimizer()
    libc = ctypes.CDLL("libc.so.6")

    def step(mode: str) -> tuple[float, float]:
        inner.activation_checkpointing_enable() if mode == "checkpointed" else inner.activation_checkpointing_disable()
        libc.mallopt(M_MMAP_THRESHOLD, (1 << 20) if mode == "mmap_1MiB" else (32 << 20))
        model.train()
        wall, cpu = time.perf_counter(), time.process_time()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - wall, time.process_time() - cpu

    modes = ["plain", "checkpointed", "mmap_1MiB"]
    for mode in modes:  # warm-up
        step(mode)
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    for r in range(rounds):
        for mode in modes[r % 3:] + modes[:r % 3]:
            times[mode].append(step(mode))
        print(r, {m: [round(x, 2) for x in times[m][-1]] for m in modes},
              Path("/proc/loadavg").read_text().split()[0], flush=True)
    return {"strategy": strategy,
            "median_wall_s": {m: round(statistics.median(t[0] for t in ts), 2) for m, ts in times.items()},
            "median_cpu_s": {m: round(statistics.median(t[1] for t in ts), 2) for m, ts in times.items()},
            "over_plain_per_round_median": {m: round(statistics.median(
                times[m][i][0] / times["plain"][i][0] for i in range(rounds)), 3) for m in modes}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("cases", "ab"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default="full,full_mmap,lora,lora_glibc,lora_checkpointed")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--strategy", default="lora")
    parser.add_argument("--work", default=None, help="folder for the model, data and runs (default: a temp folder)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="hf-transfer-lora-memory-"))
    out = (cases(work, args.cases.split(","), args.repeats) if args.what == "cases"
           else ab(work, args.rounds, args.strategy))
    print(json.dumps(out if args.what == "ab" else out["median"], indent=1))
    return out


if __name__ == "__main__":
    main()
