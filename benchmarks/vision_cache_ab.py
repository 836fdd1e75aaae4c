"""The vision default's training throughput, per-image path vs image cache, interleaved step by step.

    python benchmarks/vision_cache_ab.py [--workers 0 1] [--rounds 6] [--window 5]

On a machine shared with other jobs, case-by-case runs (bench.py's media section) drift by 2x between
cases. Here both Trainers (`vision.image_cache=false` and `=true`, otherwise the same recipe) live in
one process: each round times `--window` training steps of one, then of the other (the first path
alternates by round), each step being the Trainer's own: the next batch from its DataLoader
(`--workers` DataLoader workers), `training_step`, optimizer step. Reported per worker count: the
median over rounds of each path's samples/s and of the per-round ratio (cache / per-image), and the
1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_transfer.train import build_trainer  # noqa: E402
from hf_transfer.validate import load_recipe  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes/efficientnet_lite0_fashion_mnist.yaml"


def stepper(cached: bool, workers: int, out: Path):
    """A function that runs `n` training steps of a fresh Trainer and returns their seconds."""
    recipe = load_recipe(RECIPE, [f"vision.image_cache={str(cached).lower()}", f"training.output_dir={out}",
                                  f"training.dataloader_num_workers={workers}", "training.max_steps=1000"])
    trainer, _ = build_trainer(recipe, out)
    trainer.create_optimizer_and_scheduler(num_training_steps=1000)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(), which this loop stands in for
    model, batches = trainer.model, iter(trainer.get_train_dataloader())

    def steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            trainer.training_step(model, next(batches))
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()
        return time.perf_counter() - start

    return steps, trainer.args.per_device_train_batch_size


def compare(workers: int, rounds: int, window: int, out: Path) -> dict:
    paths = {cached: stepper(cached, workers, out / f"c{int(cached)}w{workers}") for cached in (False, True)}
    for steps, _ in paths.values():
        steps(2)  # warm-up: first batches, allocator, workers
    rates: dict[bool, list[float]] = {False: [], True: []}
    load = os.getloadavg()[0]
    for i in range(rounds):
        for cached in ((False, True) if i % 2 == 0 else (True, False)):
            steps, batch = paths[cached]
            rates[cached].append(window * batch / steps(window))
    ratios = [c / p for p, c in zip(rates[False], rates[True])]
    return {"dataloader_num_workers": workers, "rounds": rounds, "steps_per_window": window,
            "per_image_samples_per_s": round(statistics.median(rates[False]), 2),
            "cache_samples_per_s": round(statistics.median(rates[True]), 2),
            "speedup_median": round(statistics.median(ratios), 3),
            "speedup_per_round": [round(r, 3) for r in ratios],
            "load_1min_before": round(load, 2), "load_1min_after": round(os.getloadavg()[0], 2)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--window", type=int, default=5, help="training steps per path per round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hf-transfer-vision-ab-") as tmp:
        rows = [compare(w, args.rounds, args.window, Path(tmp)) for w in args.workers]
    for row in rows:
        print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
