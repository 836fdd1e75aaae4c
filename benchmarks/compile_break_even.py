"""When does `training.torch_compile` pay for its compilation? The text default, whole runs, side by side.

Each case is one whole `build_trainer` + `Trainer.train()` of a recipe (default: the text default,
recipes/minilm_drugreview.yaml: 5 epochs of 31 steps at real lengths, evaluation each epoch) in a fresh
process, eager and compiled in turn (`--rounds`, the order alternating), every compiled run with an empty
TorchInductor cache (`TORCHINDUCTOR_CACHE_DIR`: a first run on a machine; `--warm-cache` also reruns
with the cache the first compiled run filled). Both runs draw the same batches in the same order (same seed
and sampler), so steps are compared one by one:

- `step_ratio`: the median over steps of compiled / eager step time, leaving out the steps in which the
  compiled run compiled (any step over 3x its eager twin);
- `saving_per_step_s`: (1 - step_ratio) x the eager run's mean step;
- `fixed_cost_s`: what compiling costs once, whatever the run's length: the compiled run's whole
  `train()` wall time (its evaluations included) minus the eager run's, plus the steps' savings;
- `break_even_steps`: fixed_cost_s / saving_per_step_s, the optimizer steps after which compiling has paid;
- `mfu_eager` / `mfu_compiled`: training-step MFU as bench_text counts it (model FLOPs of each batch's padded
  shape over the fp32 GEMM peak this process measures first), median over the steps that compiled nothing.

`--long`: every review repeated past 128 tokens (bench_text.long_reviews), so nearly every batch has the same
shape (the text cases' "fixed 128"); without it the reviews' real lengths, padded per batch. Compiling
follows Trainer (accelerate's TorchDynamoPlugin, `dynamic=None`: after a second batch shape torch recompiles
with dynamic shapes); `--static` compiles one static graph per batch shape instead
(`ACCELERATE_DYNAMO_USE_DYNAMIC=false`).

    python benchmarks/compile_break_even.py [--recipe R] [--rounds 1] [--warm-cache] [--long] [-- overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

RECIPE = ROOT / "recipes/minilm_drugreview.yaml"


def child(recipe: str, overrides: list[str], out: str) -> None:
    """One whole training run; prints a JSON line: step times, train() wall time, the metrics."""
    import torch

    from bench_text import train_flops_per_token
    from common import StepTimer
    from hf_transfer.train import build_trainer
    from hf_transfer.validate import load_recipe

    recipe_obj = load_recipe(recipe, overrides + [f"training.output_dir={out}", "training.save_strategy=no",
                                                  "training.load_best_model_at_end=false"])
    trainer, _ = build_trainer(recipe_obj, Path(out))
    timer = StepTimer()
    trainer.add_callback(timer)
    batch = trainer.args.per_device_train_batch_size
    collate, shapes = trainer.data_collator, []

    def counting(features):  # (rows, padded length) of each batch built, in order
        built = collate(features)
        shapes.append(tuple(built["input_ids"].shape))
        return built

    trainer.data_collator = counting
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    # the training batches: at most `batch` rows (this setting's evaluation batches hold 55 rows); the
    # DataLoader may build one batch ahead of the last step
    train_shapes = [s for s in shapes if s[0] <= batch][:len(timer.times)]
    flops = [n * length * train_flops_per_token(trainer.model.config, length) for n, length in train_shapes]
    print(json.dumps({"compiled": bool(trainer.args.torch_compile), "steps": result.global_step,
                      "train_wall_s": round(wall, 2), "step_times": [round(t, 4) for t in timer.times],
                      "step_flops": flops, "shapes": sorted(set(train_shapes)),
                      "last_eval": evals[-1] if evals else None, "threads": torch.get_num_threads()}))


def run(recipe: str, overrides: list[str], compiled: bool, cache: str | None, static: bool = False) -> dict:
    env = dict(os.environ)
    if static:  # accelerate's TorchDynamoPlugin(dynamic=False): every new batch shape compiles a static graph
        env["ACCELERATE_DYNAMO_USE_DYNAMIC"] = "false"
    if cache:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
    with tempfile.TemporaryDirectory() as out:
        flag = [f"training.torch_compile={str(compiled).lower()}"]
        cmd = [sys.executable, __file__, "--child", "--recipe", recipe, "--out", out, "--", *overrides, *flag]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{'compiled' if compiled else 'eager'} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(eager: dict, compiled: dict, peak: float | None) -> dict:
    te, tc = eager["step_times"], compiled["step_times"]
    if len(te) != len(tc):
        raise SystemExit(f"different step counts: {len(te)} eager, {len(tc)} compiled")
    compiling = [i for i, (a, b) in enumerate(zip(te, tc)) if b > 3 * a]
    ratio = statistics.median(b / a for i, (a, b) in enumerate(zip(te, tc)) if i not in compiling)
    saving = (1 - ratio) * statistics.fmean(te)
    extra = compiled["train_wall_s"] - eager["train_wall_s"]
    fixed = extra + saving * len(te)

    def mfu(run):  # median over the steps that compiled nothing, of model FLOP/s over the GEMM peak
        rates = [f / t for i, (f, t) in enumerate(zip(run["step_flops"], run["step_times"])) if i not in compiling]
        return round(statistics.median(rates) / (peak * 1e9), 3) if peak and rates else None

    return {"steps": len(te), "batch_shapes": len(compiled["shapes"]), "eager_train_wall_s": eager["train_wall_s"],
            "compiled_train_wall_s": compiled["train_wall_s"], "eager_mean_step_s": round(statistics.fmean(te), 3),
            "compiling_steps": compiling, "seconds_in_compiling_steps": round(sum(tc[i] for i in compiling), 1),
            "step_ratio": round(ratio, 3), "saving_per_step_s": round(saving, 4), "fixed_cost_s": round(fixed, 1),
            "break_even_steps": round(fixed / saving) if saving > 0 else None,
            "gemm_peak_gflops": peak, "mfu_eager": mfu(eager), "mfu_compiled": mfu(compiled),
            "eval_eager": eager["last_eval"], "eval_compiled": compiled["last_eval"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--warm-cache", action="store_true")
    parser.add_argument("--long", action="store_true", help="every review repeated past 128 tokens")
    parser.add_argument("--static", action="store_true", help="compile a static graph per batch shape")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.child:
        return child(args.recipe, args.overrides, args.out)
    load = os.getloadavg()[0]
    from common import gemm_peak_gflops

    peak = round(gemm_peak_gflops(), 1)  # fp32, this process's threads: MFU's denominator
    with tempfile.TemporaryDirectory(prefix="long-reviews-") as long_dir:
        if args.long:
            import bench_text

            data = ROOT / "assets/drugreview"
            files = bench_text.long_reviews({s: str(data / f"{s}.csv") for s in ("train", "test")}, Path(long_dir))
            args.overrides += [f"data.data_files.{s}={f}" for s, f in files.items()]
        rounds(args, peak)
    print(json.dumps({"load_1min_before": round(load, 2), "load_1min_after": round(os.getloadavg()[0], 2)}))


def rounds(args, peak: float) -> None:
    """Each round's eager and compiled runs (and the warm-cache rerun), one JSON line per comparison."""
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as cache:
            pair = {}
            for compiled in ((False, True) if i % 2 == 0 else (True, False)):
                pair[compiled] = run(args.recipe, args.overrides, compiled, cache if compiled else None, args.static)
            print(json.dumps({"round": i + 1, "cache": "empty", **compare(pair[False], pair[True], peak)}), flush=True)
            if args.warm_cache:
                warm = run(args.recipe, args.overrides, True, cache, args.static)
                print(json.dumps({"round": i + 1, "cache": "warm", **compare(pair[False], warm, peak)}), flush=True)


if __name__ == "__main__":
    main()
