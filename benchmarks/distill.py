"""Knowledge distillation on the offline text default: a 2-layer MiniLM student, distilled vs labels alone.

    python benchmarks/distill.py [--seeds 42 43] [--settings 0.5:2.0 0.1:4.0]

The teacher is MiniLM-L6 fully fine-tuned with recipes/minilm_drugreview.yaml (trained into
outputs/minilm-drugreview-teacher first if that folder has no metrics.json). Each student is the
same pretrained MiniLM cut to its first 2 layers (model.config_overrides), trained with
recipes/minilm_drugreview_distill.yaml: the same data, epochs, learning rate, batch size and seed,
once on labels alone (`distill: null`) and once per distillation setting alpha:temperature.
Writes benchmarks/results/distill.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_transfer import finetune  # noqa: E402

TEACHER_RECIPE = "recipes/minilm_drugreview.yaml"
STUDENT_RECIPE = "recipes/minilm_drugreview_distill.yaml"


def teacher(folder: Path) -> dict:
    if not (folder / "metrics.json").is_file():
        finetune(TEACHER_RECIPE, overwrite=True, **{"training.output_dir": str(folder), "verify": False})
    return json.loads((folder / "metrics.json").read_text())["test"]


def student(setting: str, seed: int, teacher_dir: Path, out: Path) -> dict:
    overrides = {"training.seed": seed, "training.output_dir": str(out / f"{setting.replace(':', '-')}-s{seed}"),
                 "training.disable_tqdm": True, "verify": False}
    if setting == "labels":
        overrides["distill"] = None
    else:
        alpha, temperature = (float(v) for v in setting.split(":"))
        overrides |= {"distill.teacher": str(teacher_dir), "distill.alpha": alpha, "distill.temperature": temperature}
    start = time.perf_counter()
    m = finetune(STUDENT_RECIPE, overwrite=True, **overrides).metrics
    return {"setting": setting, "seed": seed, "seconds": round(time.perf_counter() - start, 1),
            "test_accuracy": m["test"]["test_accuracy"], "test_f1_macro": m["test"]["test_f1_macro"],
            "parameters": m["total_parameters"]}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for setting in dict.fromkeys(r["setting"] for r in rows):
        runs = [r for r in rows if r["setting"] == setting]
        out[setting] = {"seeds": len(runs)}
        for key in ("test_accuracy", "test_f1_macro"):
            values = [r[key] for r in runs]
            out[setting][key] = statistics.mean(values)
            out[setting][key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def markdown(teacher_test: dict, summary: dict, rows: list[dict]) -> str:
    lines = [f"Teacher (MiniLM-L6, 6 layers): test accuracy {teacher_test['test_accuracy']:.4f}, "
             f"macro F1 {teacher_test['test_f1_macro']:.4f}", "",
             "| student (2 layers) | test accuracy (mean ± std) | test macro F1 (mean ± std) | seeds |",
             "|---|---|---|---|"]
    for setting, s in summary.items():
        name = "labels only" if setting == "labels" else f"distilled, alpha:T = {setting}"
        lines.append(f"| {name} | {s['test_accuracy']:.4f} ± {s['test_accuracy_std']:.4f} | "
                     f"{s['test_f1_macro']:.4f} ± {s['test_f1_macro_std']:.4f} | {s['seeds']} |")
    lines += ["", "| setting | seed | test accuracy | test macro F1 | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['seed']} | {r['test_accuracy']:.4f} | {r['test_f1_macro']:.4f} | {r['seconds']} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--settings", nargs="+", default=["0.5:2.0"], help="alpha:temperature, besides labels only")
    parser.add_argument("--teacher", default="outputs/minilm-drugreview-teacher")
    parser.add_argument("--out", default="outputs/bench-distill")
    parser.add_argument("--results", default="benchmarks/results/distill")
    args = parser.parse_args()
    teacher_dir = Path(args.teacher)
    teacher_test = teacher(teacher_dir)
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for setting in ["labels", *args.settings]:
            rows.append(student(setting, seed, teacher_dir.resolve(), Path(args.out)))
            print(json.dumps(rows[-1]), flush=True)
            summary = summarise(rows)  # after every run: a partial table survives an interruption
            results.with_suffix(".json").write_text(json.dumps(
                {"teacher": str(teacher_dir), "teacher_test": teacher_test, "summary": summary, "runs": rows},
                indent=2) + "\n", encoding="utf-8")
            results.with_suffix(".md").write_text(markdown(teacher_test, summary, rows), encoding="utf-8")
    print(markdown(teacher_test, summarise(rows), rows))


if __name__ == "__main__":
    main()
