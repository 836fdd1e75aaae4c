"""PyTorch `pipeline` vs ONNX Runtime fp32 vs ONNX Runtime int8 on one finished run, side by side.

The three run on the same inputs (the run's test split, rebuilt from its recipe.yaml as `hf-transfer verify`
and `export` rebuild it: run this from the folder training ran in), through the same `transformers.pipeline`
pre- and post-processing, in the same batches; only the model call differs (onnx_model.OnnxModel). torch's
intra-op threads (`torch.set_num_threads`) and onnxruntime's (`intra_op_num_threads`) are both `--threads`.
Each case runs once to warm up, then `--rounds` times in turn (PyTorch, fp32, int8, PyTorch, ...); the table
keeps each case's best round (the CPU may be shared) and its test metric.

    python benchmarks/onnx_speed.py outputs/minilm-drugreview [--onnx outputs/minilm-drugreview/onnx] \
        [--batch-size 16] [--threads 2] [--rounds 3] [--samples N] [--json out.json]

Without --onnx the run is exported (`--quantize int8`) into a temporary folder first, never into the run folder.
`--plain-int8` adds a fourth case: the fp32 graph quantized dynamically without the outlier split
(outputs/quantize.py), to weigh what the split costs and gives.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from hf_transfer.outputs.export import check_inputs, export  # noqa: E402
from hf_transfer.outputs.onnx_graph import raw_scores  # noqa: E402
from hf_transfer.outputs.hubuser import load_pipeline, transcripts  # noqa: E402
from hf_transfer.outputs.onnx_model import FP32, INT8, load_onnx_pipeline  # noqa: E402
from hf_transfer.outputs.predict import task_of_folder  # noqa: E402
from hf_transfer.outputs.quantize import dynamic  # noqa: E402
from hf_transfer.outputs.verify import hub_user_task, label_array  # noqa: E402
from hf_transfer.validate import load_recipe  # noqa: E402


def measure(pipe, task, spec, inputs, labels, batch_size: int, kwargs: dict) -> tuple[float, dict]:
    """(samples/s, the task's metrics) of one pass over `inputs`: the pipeline's logits, or for a speech
    recogniser its transcripts (WER, CER against the references in `labels`)."""
    from transformers import EvalPrediction

    start = time.perf_counter()
    if task.score_texts:
        texts = transcripts(pipe, inputs, batch_size, **kwargs)
        return len(inputs) / (time.perf_counter() - start), task.score_texts(spec)(labels, texts)
    scores = raw_scores(pipe, task, inputs, batch_size, kwargs)
    seconds = time.perf_counter() - start
    metrics = task.compute_metrics(spec)(EvalPrediction(predictions=scores, label_ids=labels))
    return len(inputs) / seconds, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run folder (its recipe.yaml names the test split)")
    parser.add_argument("--onnx", help="its exported folder, with model.onnx and model_quantized.onnx "
                                       "(default: export it now into a temporary folder)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, help="the first N test inputs only")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--plain-int8", action="store_true",
                        help="also the fp32 graph quantized dynamically without the outlier split")
    args = parser.parse_args(argv)

    run = Path(args.run)
    torch.set_num_threads(args.threads)
    task, spec = task_of_folder(run)
    hub_task = hub_user_task(task)
    with tempfile.TemporaryDirectory(prefix="onnx-speed-") as tmp:
        onnx_dir = Path(args.onnx) if args.onnx else export(run, Path(tmp) / "onnx", quantize="int8").dest
        pipes = {
            "PyTorch pipeline (fp32)": load_pipeline(run, hub_task, "cpu"),
            "ONNX Runtime fp32": load_onnx_pipeline(onnx_dir, hub_task, FP32, threads=args.threads),
            "ONNX Runtime int8": load_onnx_pipeline(onnx_dir, hub_task, INT8, threads=args.threads),
        }
        if args.plain_int8:
            plain = Path(tmp) / "plain"
            shutil.copytree(onnx_dir, plain, ignore=shutil.ignore_patterns("*.onnx"))
            shutil.copy(onnx_dir / FP32, plain / FP32)
            dynamic(plain / FP32, plain / INT8)
            pipes["ONNX Runtime int8, no outlier split"] = load_onnx_pipeline(plain, hub_task, INT8, threads=args.threads)
        checked = check_inputs(load_recipe(run / "recipe.yaml"), task, spec,
                               getattr(pipes["PyTorch pipeline (fp32)"], hub_task["processor"]))
        if checked.split is None:
            raise SystemExit(f"{run}: its test split cannot be read here; run from the folder training ran in")
        split = checked.split.select(range(min(args.samples or len(checked.split), len(checked.split))))
        inputs = checked.inputs[:len(split)]
        labels = list(split["labels"]) if task.score_texts else label_array(split)
        kwargs = task.pipeline_kwargs(spec)
        metric = task.best_metric(spec)[0].removeprefix("eval_")
        for pipe in pipes.values():  # warm-up: one batch each
            measure(pipe, task, spec, inputs[:args.batch_size], labels[:args.batch_size], args.batch_size, kwargs)
        best: dict[str, tuple[float, dict]] = {}
        for _ in range(args.rounds):
            for name, pipe in pipes.items():
                rate, metrics = measure(pipe, task, spec, inputs, labels, args.batch_size, kwargs)
                if name not in best or rate > best[name][0]:
                    best[name] = (rate, metrics)
    base = best["PyTorch pipeline (fp32)"][0]
    print(f"{run}: {len(inputs)} {checked.source} inputs, batch {args.batch_size}, {args.threads} threads "
          f"(torch.set_num_threads = ORT intra_op_num_threads), best of {args.rounds} rounds, "
          f"torch {torch.__version__}")
    extra = [m for m in ("cer",) if m in best["PyTorch pipeline (fp32)"][1] and m != metric]
    print(f"\n| case | samples/s | × PyTorch | test {' | test '.join([metric, *extra])} |\n|---|---|---|---|"
          + "---|" * len(extra))
    for name, (rate, metrics) in best.items():
        print(f"| {name} | {rate:.1f} | {rate / base:.2f} | " + " | ".join(f"{metrics[m]:.4f}" for m in [metric, *extra])
              + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "run": str(run), "inputs": len(inputs), "batch_size": args.batch_size, "threads": args.threads,
            "rounds": args.rounds, "metric": metric,
            "cases": {name: {"samples_per_s": rate, "metrics": metrics} for name, (rate, metrics) in best.items()},
        }, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
