"""Cached-feature linear probe vs the same probe trained through the frozen backbone by Trainer.

    python benchmarks/linear_probe.py [RECIPE] [--epochs 3] [--lr 5e-3] [--out outputs/bench-probe]

Both runs use the recipe's data, model and training settings with `finetune: {strategy: partial,
freeze: backbone}`, the same seed, sampler, optimizer and schedule; they differ only in
`cache_features` (false: every epoch runs the frozen backbone; true: features are computed once into
a fresh cache, then the head trains on them). Per-epoch evaluation is off so that `train_runtime`
is head training only; both are evaluated on the test split at the end. Prints a table and writes
`<out>/benchmark.json`. Timings on a shared machine are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_transfer import finetune  # noqa: E402


def run(recipe: str, out: Path, cached: bool, epochs: int, lr: float, **overrides) -> dict:
    """One probe run; `overrides`: more dotted recipe keys (e.g. model.name_or_path)."""
    result = finetune(recipe, overwrite=True, **overrides, **{
        "finetune": {"strategy": "partial", "freeze": "backbone", "cache_features": cached},
        "training.output_dir": str(out),
        "training.num_train_epochs": epochs,
        "training.learning_rate": lr,
        "training.eval_strategy": "no",
        "training.save_strategy": "no",
        "training.load_best_model_at_end": False,
        "training.disable_tqdm": True,
        "compare": None,
    })
    m = result.metrics
    features = m.get("cached_features") or {}
    return {
        "cache_features": cached,
        "train_seconds": m["train"]["train_runtime"],
        "seconds_per_epoch": m["train"]["train_runtime"] / epochs,
        "train_samples_per_s": m["train"]["train_samples_per_second"],
        "feature_seconds": features.get("seconds", 0.0),
        "feature_cache_hits": features.get("cache_hits"),
        "test_accuracy": m["test"]["test_accuracy"],
        "test_loss": m["test"]["test_loss"],
        "validation_accuracy": m["validation"]["eval_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="recipes/minilm_drugreview.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--out", default="outputs/bench-probe")
    args = parser.parse_args()
    out = Path(args.out)
    cache = Path(tempfile.mkdtemp(prefix="hf-transfer-bench-"))
    os.environ["HF_TRANSFER_CACHE"] = str(cache)  # a fresh cache: feature extraction is timed
    try:
        through = run(args.recipe, out / "through-backbone", False, args.epochs, args.lr)
        cached = run(args.recipe, out / "cached-features", True, args.epochs, args.lr)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    speedup = through["seconds_per_epoch"] / cached["seconds_per_epoch"]
    diff = 100 * (cached["test_accuracy"] - through["test_accuracy"])
    summary = {
        "recipe": args.recipe, "epochs": args.epochs, "learning_rate": args.lr,
        "through_backbone": through, "cached_features": cached,
        "speedup_per_epoch": speedup, "test_accuracy_difference_points": diff,
        "break_even_epochs": cached["feature_seconds"]
        / max(through["seconds_per_epoch"] - cached["seconds_per_epoch"], 1e-9),
    }
    (out / "benchmark.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\n{'':28}{'through backbone':>18}{'cached features':>18}")
    print(f"{'head training s / epoch':28}{through['seconds_per_epoch']:18.3f}{cached['seconds_per_epoch']:18.3f}")
    print(f"{'feature extraction s (once)':28}{'—':>18}{cached['feature_seconds']:18.1f}")
    print(f"{'test accuracy':28}{through['test_accuracy']:18.4f}{cached['test_accuracy']:18.4f}")
    print(f"{'test loss':28}{through['test_loss']:18.5f}{cached['test_loss']:18.5f}")
    print(f"speed-up per epoch: {speedup:.0f}x; accuracy difference: {diff:+.2f} points; "
          f"features pay for themselves after {summary['break_even_epochs']:.2f} epochs")


if __name__ == "__main__":
    main()
