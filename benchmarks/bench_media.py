"""Vision and speech cases: the offline defaults through hf-transfer's build_trainer.

- vision: recipes/efficientnet_lite0_fashion_mnist.yaml (EfficientNet-Lite0, 80 px): today's path
  (every layer trained, `vision.image_cache: false`, `vision.channels_last: false`: every image decoded,
  crop-resized, flipped and normalised by timm's PIL transforms every step, NCHW batches) against the
  defaults (the uint8 image cache: decoded and resized once, augmented and normalised per batch;
  channels-last training batches; the stem and the first 2 stages frozen), each with 0 dataloader
  workers and with hf-transfer's default for the machine, in `--media-repeats` rounds that alternate
  which path runs first (benchmarks/vision_cache_ab.py separates the switches, step by step);
- speech: recipes/whisper_digits.yaml (Whisper tiny.en encoder, 1 s clips, crop + noise every step).

Per case: training samples/s (median of timed windows after warm-up), evaluation samples/s, MFU
(FLOPs of one forward counted by torch.utils.flop_counter, × 3 per training sample, over the
measured matmul peak), peak memory. bf16 cases where the hardware supports bf16.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from common import VISION_TODAY, PeakMemory, StepTimer, bf16_supported, forward_flops, median_rate

ROOT = Path(__file__).resolve().parents[1]
VISION = ROOT / "recipes/efficientnet_lite0_fashion_mnist.yaml"
SPEECH = ROOT / "recipes/whisper_digits.yaml"


def build(recipe_path: Path, overrides: list[str], out: Path):
    from hf_transfer.validate import load_recipe
    from hf_transfer.train import build_trainer

    recipe = load_recipe(recipe_path, overrides + [f"training.output_dir={out}"])
    trainer, splits = build_trainer(recipe, out)
    timer = StepTimer()
    trainer.add_callback(timer)
    return trainer, timer


def train_flops_per_sample(trainer) -> float:
    """3 × the forward FLOPs of one training batch, per sample."""
    batch = next(iter(trainer.get_train_dataloader()))
    n = len(batch["labels"])
    return 3 * forward_flops(trainer.model, batch) / n


def run_case(name: str, trainer, timer: StepTimer, peak: dict, precision: str) -> dict:
    flops = train_flops_per_sample(trainer)
    batch = trainer.args.per_device_train_batch_size
    with PeakMemory() as mem:
        trainer.train()
    start = time.perf_counter()
    ev = trainer.evaluate()
    sps = median_rate(timer.times, float(batch))
    return {
        "case": name, "precision": precision, "train_samples_per_s": round(sps, 2),
        "eval_samples_per_s": round(ev["eval_samples_per_second"], 2),
        "eval_seconds": round(time.perf_counter() - start, 1),
        "mfu": round(flops * sps / (peak[precision] * 1e9), 4), "peak_mem_mb": round(mem.peak_mb),
        "train_gflop_per_sample": round(flops / 1e9, 3),
        "dataloader_num_workers": trainer.args.dataloader_num_workers,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "steps": trainer.args.max_steps,
    }


def common_overrides(args) -> list[str]:
    over = [f"training.max_steps={args.media_steps}", "training.eval_strategy=no", "training.save_strategy=no",
            "training.load_best_model_at_end=false", "training.disable_tqdm=true", "training.logging_strategy=no",
            f"data.max_eval_samples={args.media_eval}"]
    return over + (["model.pretrained=false"] if args.random_weights else [])


VISION_PATHS = {  # the defaults? -> (case name, overrides)
    False: ("every layer, per-image PIL transforms, NCHW (before issue 23)", VISION_TODAY),
    True: ("uint8 image cache + channels-last, first 2 stages frozen (defaults)", []),
}


def vision_rounds(case, workers: list[int], repeats: int) -> list[dict]:
    """Today's path and the defaults at each worker count, `repeats` rounds, alternating which path runs
    first, so a machine whose speed drifts favours neither; each row carries `round`."""
    rows = []
    for i in range(1, repeats + 1):
        for w in workers:
            for defaults in ((False, True) if i % 2 else (True, False)):
                label, switches = VISION_PATHS[defaults]
                name = f"vision: EfficientNet-Lite0, {label}, {w} workers"
                over = switches + [f"training.dataloader_num_workers={w}"]
                rows.append(case(name, VISION, over, f"v{int(defaults)}w{w}") | {"defaults": defaults, "round": i})
    return rows


def defaults_speedups(rows: list[dict]) -> dict:
    """Per round and worker count, defaults / today's path training samples/s; their geometric mean."""
    pairs: dict[tuple[int, int], dict[bool, float]] = {}
    for r in rows:
        if "defaults" in r:
            pairs.setdefault((r["dataloader_num_workers"], r["round"]), {})[r["defaults"]] = r["train_samples_per_s"]
    out = {}
    for w in sorted({w for w, _ in pairs}):
        ratios = [d[True] / d[False] for (k, _), d in sorted(pairs.items()) if k == w and len(d) == 2]
        if ratios:
            out[f"vision_defaults_speedup_{w}_workers"] = round(statistics.geometric_mean(ratios), 3)
            out[f"vision_defaults_speedup_{w}_workers_per_round"] = [round(x, 3) for x in ratios]
    return out


def cases(args, peak: dict, out: Path) -> list[dict]:
    from hf_transfer.tasks.data import default_num_workers

    over = common_overrides(args)
    workers = default_num_workers()
    only = {m.strip() for m in args.media_only.split(",")}

    def case(name, recipe, extra, tag, precision="fp32"):
        return run_case(name, *build(recipe, over + extra, out / tag), peak, precision)

    rows = []
    if "vision" in only:
        rows += vision_rounds(case, sorted({0, workers}), args.media_repeats)
    if "speech" in only:
        rows.append(case("speech: Whisper tiny.en encoder full, 0 workers", SPEECH,
                         ["training.dataloader_num_workers=0"], "s0"))
        if workers:
            rows.append(case(f"speech: Whisper tiny.en encoder full, {workers} workers (default here)", SPEECH,
                             [f"training.dataloader_num_workers={workers}"], "s1"))
    if bf16_supported():
        if "vision" in only:
            rows.append(case("vision: EfficientNet-Lite0 (defaults), bf16", VISION, ["training.bf16=true"], "v2", "bf16"))
        if "speech" in only:
            rows.append(case("speech: Whisper tiny.en encoder full, bf16", SPEECH, ["training.bf16=true"], "s2", "bf16"))
    return rows
