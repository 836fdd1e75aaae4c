"""Domain adaptation on a real offline shift: Fashion-MNIST -> colour-inverted, noisy Fashion-MNIST.

    python benchmarks/domain_adaptation.py [--seeds 0 1 2] [--variants source_only dann mmd target_bn]

Runs recipes/efficientnet_lite0_fashion_mnist_dann.yaml (EfficientNet-Lite0, ImageNet weights, 1,000
labelled source images at 32 px, 2 epochs) once per variant and seed:

- `source_only`: no `domain` section (the target is only evaluated);
- `dann`, `mmd`: the recipe's domain adaptation towards the 1,000 unlabelled shifted validation images;
- `target_bn`: MMD with weight 0, a control: the target batches pass through the model (batch-norm
  statistics see the target domain) but add no loss.

Target accuracy is measured on the first 1,000 shifted test images (their labels never used in
training; passed as the test split so that source-only runs are scored the same way), source
accuracy on the 1,000 original validation images. Builds the shifted data under
outputs/ if missing. Writes benchmarks/results/domain_adaptation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_transfer import finetune  # noqa: E402
from hf_transfer.assets.vision import prepare_fashion_mnist_shifted  # noqa: E402

RECIPE = "recipes/efficientnet_lite0_fashion_mnist_dann.yaml"
VARIANTS = {
    "source_only": {"domain": None},
    "dann": {"domain.method": "dann"},
    "mmd": {"domain.method": "mmd"},
    "target_bn": {"domain.method": "mmd", "domain.weight": 0.0},
}


def run(variant: str, seed: int, target: Path, out: Path) -> dict:
    """One training run; every variant is tested on the same shifted test images (data.data_files.test),
    so the target accuracy of source-only training is measured exactly as the adapted runs' is."""
    files = {"validation": str(target / "validation.parquet"), "test": str(target / "test.parquet")}
    overrides = {"training.seed": seed, "training.output_dir": str(out / f"{variant}-s{seed}"),
                 "training.disable_tqdm": True, "data.data_files.test": files["test"], **VARIANTS[variant]}
    if VARIANTS[variant].get("domain", 1) is not None:
        overrides["domain.target.data_files"] = files
    start = time.perf_counter()
    m = finetune(RECIPE, overwrite=True, **overrides).metrics
    row = {"variant": variant, "seed": seed, "seconds": round(time.perf_counter() - start, 1),
           "target_accuracy": m["test"]["test_accuracy"], "target_samples": m["test"]["test_samples"],
           "source_validation_accuracy": m["validation"]["eval_accuracy"]}
    if "target" in m:  # the recipe's own target evaluation: the same images, so the same figure
        assert abs(m["target"]["target_accuracy"] - row["target_accuracy"]) < 1e-9, (m["target"], m["test"])
    return row


def summarise(rows: list[dict]) -> dict:
    out = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        acc = [r["target_accuracy"] for r in rows if r["variant"] == variant]
        src = [r["source_validation_accuracy"] for r in rows if r["variant"] == variant]
        out[variant] = {
            "target_mean": statistics.mean(acc), "target_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "source_mean": statistics.mean(src), "source_std": statistics.stdev(src) if len(src) > 1 else 0.0,
            "seeds": len(acc),
        }
    return out


def markdown(summary: dict, rows: list[dict]) -> str:
    lines = ["| variant | target test accuracy (mean ± std) | source validation accuracy | seeds |",
             "|---|---|---|---|"]
    for variant, s in summary.items():
        lines.append(f"| {variant} | {s['target_mean']:.3f} ± {s['target_std']:.3f} | "
                     f"{s['source_mean']:.3f} ± {s['source_std']:.3f} | {s['seeds']} |")
    lines += ["", "| variant | seed | target test accuracy | source validation accuracy | seconds |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['seed']} | {r['target_accuracy']:.4f} | {r['source_validation_accuracy']:.4f} | "
              f"{r['seconds']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--target", default="outputs/fashion-mnist-shifted")
    parser.add_argument("--out", default="outputs/bench-domain")
    parser.add_argument("--results", default="benchmarks/results/domain_adaptation")
    args = parser.parse_args()
    target = Path(args.target)
    if not target.is_dir():
        prepare_fashion_mnist_shifted(target, Path("assets/fashion-mnist"))
    rows = []
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for variant in args.variants:
            rows.append(run(variant, seed, target, Path(args.out)))
            print(json.dumps(rows[-1]), flush=True)
            summary = summarise(rows)  # written after every run: a partial table survives an interruption
            results.with_suffix(".json").write_text(json.dumps({"recipe": RECIPE, "summary": summary, "runs": rows},
                                                               indent=2) + "\n", encoding="utf-8")
            results.with_suffix(".md").write_text(markdown(summary, rows), encoding="utf-8")
    print(markdown(summarise(rows), rows))


if __name__ == "__main__":
    main()
