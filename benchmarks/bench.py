"""hf-transfer's benchmark suite: every case side by side, in one run, on this machine (`make bench`).

    python benchmarks/bench.py [--only text,media,cache,startup,memory,probe] [--steps 31] [--repeats 4]
                               [--memory-repeats 3] [--media-steps 18] [--media-repeats 2] [--media-only vision]
                               [--random-weights] [--no-compile]
                               [--out benchmarks/results]

Runs on the GPU when torch sees one (every case, the plain Trainer too; peak GPU memory; bf16 cases),
else on CPU. Writes benchmarks/results/bench.json and bench.md; BENCHMARKS.md explains each figure.
Needs only assets/ (`make assets assets-vision assets-speech`); with --random-weights only the models'
config and tokenizer/feature-extractor files are read (throughput does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import torch  # noqa: E402

import common  # noqa: E402

SECTIONS = ("text", "probe", "media", "cache", "startup", "memory")
FIRST_STEP_RECIPE = ROOT / "recipes/minilm_drugreview.yaml"


def hf_transfer_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("hf-transfer")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "hf_transfer"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


# Children get no terminal: under job control a background child that touches one is stopped (SIGTTOU).
DETACHED = {"stdin": subprocess.DEVNULL, "start_new_session": True}


def help_seconds(repeats: int = 3) -> float:
    """Best of `repeats` wall times of `hf-transfer --help` (a fresh interpreter each time)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([*hf_transfer_cmd(), "--help"], capture_output=True, check=True, env=env(), **DETACHED)
        times.append(time.perf_counter() - start)
    return min(times)


def first_step_seconds(overrides: list[str], out: Path, datasets_cache: Path) -> float:
    """Wall time from launching `hf-transfer finetune` to the first training step's logged loss
    (Trainer prints it when that step ends); the run is then stopped."""
    cmd = [*hf_transfer_cmd(), "finetune", str(FIRST_STEP_RECIPE), *overrides, f"training.output_dir={out}",
           "training.max_steps=5", "training.logging_strategy=steps", "training.logging_steps=1",
           "training.eval_strategy=no", "training.save_strategy=no", "training.load_best_model_at_end=false",
           "training.disable_tqdm=true", "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env(), "HF_DATASETS_CACHE": str(datasets_cache)}, **DETACHED)
    try:
        for line in proc.stdout:
            if "'loss'" in line:
                return time.perf_counter() - start
        raise RuntimeError(f"`{' '.join(cmd)}` ended (rc {proc.wait()}) before a training step")
    finally:
        proc.kill()
        proc.wait()


CACHE_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
from hf_transfer.validate import load_recipe
from hf_transfer.tasks import resolve
from hf_transfer.tasks.data import load_data
recipe = load_recipe(sys.argv[1], sys.argv[2:])
task, spec = resolve(recipe)
t1 = time.perf_counter()
loaded = load_data(recipe.data, task.input_columns(spec), 42, task.labeler(spec))
splits = task.preprocess(loaded.splits, task.load_processor(spec), spec)
print(json.dumps({"seconds": time.perf_counter() - t1, "fingerprint": splits["train"]._fingerprint}))
"""


def preprocessing_seconds(recipe: Path, overrides: list[str], cache: Path) -> tuple[dict, bool]:
    """Data loading + preprocessing of `recipe` in a fresh process with HF_DATASETS_CACHE=`cache`;
    also whether datasets warned that a function could not be hashed (then nothing is reused)."""
    proc = subprocess.run([sys.executable, "-c", CACHE_SNIPPET, str(recipe), *overrides], capture_output=True,
                          text=True, env={**env(), "HF_DATASETS_CACHE": str(cache)}, check=True, **DETACHED)
    return json.loads(proc.stdout.strip().splitlines()[-1]), "couldn't be hashed" in proc.stderr


def cache_rows() -> list[dict]:
    """Preprocessing of the text, speech and vision defaults: first run (empty datasets cache) vs second run.
    (Vision: the uint8 image cache, `vision.image_cache`; its first run is the one-off cache build.)"""
    rows = []
    for name, recipe in (("text: tokenize drug reviews", "minilm_drugreview.yaml"),
                         ("speech: decode + resample spoken digits", "whisper_digits.yaml"),
                         ("vision: decode + resize 16,000 images to a uint8 cache", "efficientnet_lite0_fashion_mnist.yaml")):
        with tempfile.TemporaryDirectory(prefix="hf-transfer-bench-datasets-") as cache:
            first, warn1 = preprocessing_seconds(ROOT / "recipes" / recipe, [], Path(cache))
            second, warn2 = preprocessing_seconds(ROOT / "recipes" / recipe, [], Path(cache))
        rows.append({"case": name, "first_run_s": round(first["seconds"], 2), "second_run_s": round(second["seconds"], 2),
                     "speedup": round(first["seconds"] / second["seconds"], 1),
                     "same_fingerprint": first["fingerprint"] == second["fingerprint"],
                     "unhashable_function_warning": warn1 or warn2})
    return rows


def environment(peak: dict) -> dict:
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"device": common.device_name(), "torch": torch.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1min_at_start": load, "gemm_peak_gflops": peak,
            "bf16": "measured" if common.bf16_supported() else
            f"not supported here ({common.device_name()}): no bf16 cases"}


def markdown(results: dict) -> str:
    parts = [f"# hf-transfer benchmark ({time.strftime('%Y-%m-%d %H:%M')})", ""]
    parts += [f"- {k}: {v}" for k, v in results["environment"].items()]
    for section in ("text", "probe", "media", "cache", "memory"):
        rows = results.get(section)
        if rows:
            parts += ["", f"## {section}", "", common.markdown_table(rows)]
    summary = {k: v for k, v in results.items() if k not in (*SECTIONS, "environment")}
    if summary:
        parts += ["## summary", "", *(f"- {k}: {v}" for k, v in summary.items())]
    return "\n".join(parts) + "\n"


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--steps", type=int, default=31, help="text training steps per case (31 = one epoch)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4,
                        help="rounds of the fixed-128 pair, alternating which pipeline runs first (even: balanced)")
    parser.add_argument("--memory-repeats", type=int, default=3, help="runs of each memory case (median)")
    parser.add_argument("--media-steps", type=int, default=18, help="vision / speech training steps per case")
    parser.add_argument("--media-eval", type=int, default=256, help="evaluation rows per vision / speech case")
    parser.add_argument("--media-repeats", type=int, default=2,
                        help="rounds of the vision pair (per-image transforms vs the image cache), alternating order")
    parser.add_argument("--media-only", default="vision,speech", help="media cases to run: vision, speech or both")
    parser.add_argument("--probe-epochs", type=int, default=2)
    parser.add_argument("--random-weights", action="store_true",
                        help="models from their config.json with random weights (no weight files needed)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile case")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (ROOT / "assets/minilm-l6").is_dir():
        sys.exit("bench: run `make assets` first (and `make assets-vision assets-speech` for the media cases)")
    peak = common.peaks()
    results: dict = {"environment": environment(peak)}
    work = out / "runs"
    if "startup" in args.only:
        results["hf_transfer_help_seconds"] = round(help_seconds(), 2)
        over = [f"model.name_or_path={work / 'minilm-random'}"] if args.random_weights else []
        if args.random_weights:
            import bench_text

            bench_text.random_weights_model(ROOT / "assets/minilm-l6", work / "minilm-random")
        with tempfile.TemporaryDirectory(prefix="hf-transfer-bench-datasets-") as cache:
            for run in ("empty_datasets_cache", "second_run"):
                seconds = first_step_seconds(over, work / "first-step", Path(cache))
                results[f"text_seconds_to_first_training_step_{run}"] = round(seconds, 1)
    if "cache" in args.only:
        results["cache"] = cache_rows()
    if "text" in args.only:
        import bench_text

        results["text"] = bench_text.cases(args, peak, work)
        results |= bench_text.speedups(results["text"])
    if "probe" in args.only:
        import bench_text

        model = str(work / "minilm-random") if args.random_weights else None
        if model:
            bench_text.random_weights_model(ROOT / "assets/minilm-l6", Path(model))
        results["probe"], summary = bench_text.probe_cases(args, model)
        results |= summary
    if "media" in args.only:
        import bench_media

        results["media"] = bench_media.cases(args, peak, work)
        results |= bench_media.defaults_speedups(results["media"])
    if "memory" in args.only:
        import bench_text

        results["memory"], summary = bench_text.memory_summary(work, args.memory_repeats)
        results |= summary
    (out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "bench.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
