"""The vision default's training throughput, today's path vs the fast paths, interleaved step by step.

    python benchmarks/vision_cache_ab.py [--workers 0 1] [--rounds 6] [--window 5]
                                         [--variants per-image cache+channels-last defaults]

On a machine shared with other jobs, case-by-case runs (bench.py's media section) drift by 2x between
cases. Here one Trainer per variant (VARIANTS: the recipe with `vision.image_cache` and
`vision.channels_last` set) lives in one process: each round times `--window` training steps of each
in turn (the order reversed every other round), each step being the Trainer's own: the next batch
from its DataLoader (`--workers` DataLoader workers), `training_step`, optimizer step. Reported per
worker count: the median over rounds of each variant's samples/s and of its per-round ratio to the
first variant, and the 1-minute load average before and after. Besides the two switches (every layer
trained, as before the recipe froze its first stages), VARIANTS holds what else was tried on them: the
64 px phase of progressive resizing (`vision.train_image_size`: every timed step at 64 px), bf16
autocast, batch 64, `training.torch_compile` (the model compiled as Trainer would, the compilation in
the warm-up steps), the stem and the first N stages frozen (`finetune.freeze: N`), and `defaults`: the
recipe as it ships. Every other variant trains on 80 px crops.
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

from common import VISION_TODAY  # noqa: E402
from hf_transfer.tasks.progressive import set_crop  # noqa: E402
from hf_transfer.train import build_trainer  # noqa: E402
from hf_transfer.validate import load_recipe  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes/efficientnet_lite0_fashion_mnist.yaml"
FULL = "vision.train_image_size=null"  # training crops at vision.image_size (80 px), whatever the recipe sets


def every_layer(*switches: str) -> list[str]:
    """The recipe with every layer trained (strategy full, as before the default froze its first stages)."""
    return ["finetune={strategy: full}", FULL, *switches]


CACHE_CL = ("vision.image_cache=true", "vision.channels_last=true")
VARIANTS = {
    "per-image": [*VISION_TODAY, FULL],  # before issue 23
    "cache": every_layer("vision.image_cache=true", "vision.channels_last=false"),
    "per-image+channels-last": every_layer("vision.image_cache=false", "vision.channels_last=true"),
    "cache+channels-last": every_layer(*CACHE_CL),
    # progressive resizing's 64 px phase (this later override wins over FULL)
    "cache+channels-last+64px": every_layer(*CACHE_CL, "vision.train_image_size=64"),
    "cache+channels-last+bf16": every_layer(*CACHE_CL, "training.bf16=true"),
    "cache+channels-last+batch-64": every_layer(*CACHE_CL, "training.per_device_train_batch_size=64"),
    "cache+channels-last+compile": every_layer(*CACHE_CL, "training.torch_compile=true"),
    # the stem and the first N stages frozen (finetune.freeze: N): no backward through the high-resolution layers
    **{f"cache+channels-last+freeze-{n}": ["finetune.strategy=partial", f"finetune.freeze={n}", FULL, *CACHE_CL]
       for n in (1, 2, 3)},
    "defaults": [FULL],  # the recipe as it ships (today: image cache, channels-last, freeze 2)
}


def stepper(overrides: list[str], workers: int, out: Path):
    """A function that runs `n` training steps of a fresh Trainer and returns their seconds."""
    recipe = load_recipe(RECIPE, overrides + [f"training.output_dir={out}", f"training.dataloader_num_workers={workers}",
                                              "training.max_steps=1000"])
    trainer, _ = build_trainer(recipe, out)
    trainer.create_optimizer_and_scheduler(num_training_steps=1000)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(), which this loop stands in for
    model, batches = trainer.model, iter(trainer.get_train_dataloader())
    if recipe.sections["vision"].train_image_size:  # no Trainer.train() here to run the schedule: its first phase
        set_crop(model, recipe.sections["vision"].train_image_size)
    if trainer.args.torch_compile:  # what Trainer.train() would do through accelerate (TorchInductor)
        import torch

        model = torch.compile(model)

    def steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            trainer.training_step(model, next(batches))
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()
        return time.perf_counter() - start

    return steps, trainer.args.per_device_train_batch_size


def compare(variants: list[str], workers: int, rounds: int, window: int, out: Path) -> dict:
    paths = {v: stepper(VARIANTS[v], workers, out / f"{v}-w{workers}") for v in variants}
    for steps, _ in paths.values():
        steps(2)  # warm-up: first batches, allocator, workers
    rates: dict[str, list[float]] = {v: [] for v in variants}
    load = os.getloadavg()[0]
    for i in range(rounds):
        for v in (variants if i % 2 == 0 else variants[::-1]):
            steps, batch = paths[v]
            rates[v].append(window * batch / steps(window))
    row = {"dataloader_num_workers": workers, "rounds": rounds, "steps_per_window": window}
    row |= {f"{v}_samples_per_s": round(statistics.median(rates[v]), 2) for v in variants}
    for v in variants[1:]:
        ratios = [b / a for a, b in zip(rates[variants[0]], rates[v])]
        row[f"{v}_speedup_median"] = round(statistics.median(ratios), 3)
        row[f"{v}_speedup_per_round"] = [round(r, 3) for r in ratios]
    return row | {"load_1min_before": round(load, 2), "load_1min_after": round(os.getloadavg()[0], 2)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--window", type=int, default=5, help="training steps per variant per round")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=["per-image", "cache+channels-last", "defaults"], help="the first is the baseline")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hf-transfer-vision-ab-") as tmp:
        for w in args.workers:
            rows.append(compare(args.variants, w, args.rounds, args.window, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
