"""Does `hf-transfer rank` pick the backbone that fine-tunes best? (issue #19, acceptance point 1)

    python benchmarks/rank_vs_finetune.py [--only text|vision] [--out benchmarks/results/rank_vs_finetune]

For each default (text: drug reviews with MiniLM-L3 / MiniLM-L6 / MPNet-base; vision: Fashion-MNIST with
EfficientNet-Lite0 / Lite1 / Lite2 / MobileNetV2) the candidates are ranked once, then each is fine-tuned
with the same shortened recipe (SETTINGS below: the same overrides for every candidate). Reported: every
score per candidate, the fine-tuned test accuracy, Kendall's tau of each score against it, LogME's first
choice vs the best fine-tuned candidate, and the wall time of ranking all vs fine-tuning all. Needs
`make assets assets-vision assets-backbones assets-mpnet`. Timings on a shared machine are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_transfer.runs import run  # noqa: E402
from hf_transfer.runs.rank import SCORES, rank  # noqa: E402
from hf_transfer.validate import load_recipe  # noqa: E402

SETTINGS = {
    "text": {
        "recipe": "recipes/minilm_drugreview.yaml",
        "candidates": ["assets/minilm-l3", "assets/minilm-l6", "assets/mpnet-base"],
        "data": ["model.max_length=64"],  # ranking and fine-tuning alike
        "finetune": ["training.num_train_epochs=3"],
        "sample": 1000,
    },
    "vision": {
        "recipe": "recipes/efficientnet_lite0_fashion_mnist.yaml",
        "candidates": ["assets/efficientnet-lite0", "assets/efficientnet-lite1", "assets/efficientnet-lite2",
                       "assets/mobilenetv2"],
        # all 5,000 training images (500 for 2 epochs, 32 steps, left every candidate below its linear probe
        # and ordered them by noise), 2,000 validation / test images, 64 px
        "data": ["data.max_eval_samples=2000", "vision.image_size=64"],
        "finetune": ["training.num_train_epochs=2", "finetune={strategy: full}"],  # every layer, as measured (README)
        "sample": 1000,
    },
}


def kendall(xs: list, ys: list) -> float | None:
    from scipy.stats import kendalltau

    if any(v is None for v in xs) or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return round(float(kendalltau(xs, ys).statistic), 3)


def measure(name: str, setting: dict, out: Path) -> dict:
    base = setting["data"] + ["verify=false", "compare=null", "training.disable_tqdm=true"]
    start = time.perf_counter()
    report = rank(load_recipe(setting["recipe"], base), candidates=setting["candidates"], sample=setting["sample"],
                  out=str(out / name / "rank"))
    rank_seconds = time.perf_counter() - start
    rows = {r["candidate"]: r for r in report["candidates"]}
    finetune_seconds = 0.0
    for cand in setting["candidates"]:
        overrides = base + setting["finetune"] + [f"model.name_or_path={cand}",
                                                  f"training.output_dir={out / name / Path(cand).name}"]
        start = time.perf_counter()
        metrics = run(load_recipe(setting["recipe"], overrides), overwrite=True).metrics
        rows[cand]["finetune_seconds"] = round(time.perf_counter() - start, 1)
        rows[cand]["test_accuracy"] = metrics["test"]["test_accuracy"]
        finetune_seconds += rows[cand]["finetune_seconds"]
        print(f"{name}: {cand}: test accuracy {rows[cand]['test_accuracy']:.4f} "
              f"({rows[cand]['finetune_seconds']:.0f} s)", flush=True)
    accuracy = [rows[c]["test_accuracy"] for c in setting["candidates"]]
    best = max(setting["candidates"], key=lambda c: rows[c]["test_accuracy"])
    return {
        "candidates": [rows[c] for c in setting["candidates"]],
        "kendall_tau": {s: kendall([rows[c][s] for c in setting["candidates"]], accuracy) for s in SCORES},
        "logme_choice": report["best"], "best_finetuned": best,
        "logme_choice_gap_points": round(100 * (rows[best]["test_accuracy"] - rows[report["best"]]["test_accuracy"]), 2),
        "rank_seconds": round(rank_seconds, 1), "finetune_seconds": round(finetune_seconds, 1),
        "rank_over_finetune": round(rank_seconds / finetune_seconds, 3),
        "overrides": {"both": setting["data"], "finetune": setting["finetune"]},
    }


def table(name: str, res: dict) -> str:
    def cell(v):
        return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [f"### {name}", "", "| candidate | LogME | LEEP | NCE | probe | fine-tuned test acc | rank s | fine-tune s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["candidates"]:
        lines.append(f"| {r['candidate']} | {cell(r['logme'])} | {cell(r['leep'])} | {cell(r['nce'])} | "
                     f"{cell(r['probe'])} | {cell(r['test_accuracy'])} | {r['seconds']:.0f} | {r['finetune_seconds']:.0f} |")
    taus = ", ".join(f"{s} {cell(t)}" for s, t in res["kendall_tau"].items())
    lines += ["", f"Kendall tau vs fine-tuned test accuracy: {taus}. LogME's choice {res['logme_choice']}, best "
              f"fine-tuned {res['best_finetuned']} (gap {res['logme_choice_gap_points']} points). Ranking "
              f"{res['rank_seconds']:.0f} s vs fine-tuning {res['finetune_seconds']:.0f} s "
              f"(ratio {res['rank_over_finetune']})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SETTINGS))
    parser.add_argument("--out", default="benchmarks/results/rank_vs_finetune")
    args = parser.parse_args()
    out = Path(args.out)
    results = {}
    for name, setting in SETTINGS.items():
        if args.only in (None, name):
            results[name] = measure(name, setting, out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
            print(table(name, results[name]), flush=True)
    (out / "results.md").write_text("\n\n".join(table(n, r) for n, r in results.items()) + "\n")


if __name__ == "__main__":
    main()
