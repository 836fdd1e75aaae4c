"""Side-by-side text benchmark: hf-transfer against a plain run_glue-style Trainer script.

Both run in this one process, on the same machine, model, data, batch size, sequence length and
number of steps. Reported per case: training samples/s and tokens/s (median of timed windows after
warm-up), evaluation samples/s, MFU (model FLOP/s over this machine's fp32 matmul peak, measured
here with a large torch.matmul), trainable parameters. Separately, in subprocesses: peak RSS of
full fine-tuning vs LoRA on a BERT-base-size model (random weights), and `hf-transfer --help` time.

    python benchmarks/bench_text.py [--steps 30] [--out benchmarks/results]   (or: make bench)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402


def gemm_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    start = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


class StepTimer(TrainerCallback):
    """Wall time and token count of every training step."""

    def __init__(self):
        self.times, self.tokens, self._t0 = [], [], 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t0)


def train_flops_per_token(config, seq_len: int) -> float:
    """6 × non-embedding parameters + attention scores (12 · layers · seq · hidden), per token."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * h * h + 2 * h * inter
    return 6 * layers * per_layer + 12 * layers * seq_len * h


def summarise(name, trainer, timer, token_counts, batch, peak, warmup=3, window=5):
    times = timer.times[warmup:]
    tokens = token_counts[warmup: warmup + len(times)]
    windows = [(sum(times[i:i + window]), sum(tokens[i:i + window])) for i in range(0, len(times) - window + 1, window)]
    sps = statistics.median(window * batch / t for t, _ in windows)
    tps = statistics.median(n / t for t, n in windows)
    mean_len = sum(tokens) / len(tokens) / batch
    flops = train_flops_per_token(trainer.model.config, mean_len) * tps
    ev = trainer.evaluate()
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {
        "case": name, "train_samples_per_s": round(sps, 2), "train_tokens_per_s": round(tps, 1),
        "mean_padded_len": round(mean_len, 1), "eval_samples_per_s": round(ev["eval_samples_per_second"], 2),
        "eval_accuracy": round(ev.get("eval_accuracy", float("nan")), 4),
        "mfu": round(flops / (peak * 1e9), 3), "trainable_params": trainable,
    }


def count_tokens(trainer, steps: int) -> list[int]:
    """Padded tokens per batch, in the order the Trainer's dataloader yields them."""
    counts = []
    for batch in trainer.get_train_dataloader():
        counts.append(int(batch["input_ids"].numel()))
        if len(counts) >= steps:
            break
    return counts


def plain_trainer(model_dir, files, steps, batch, seq_len, fixed: bool, out):
    """The run_glue way: pad every example to max_length, default collator, plain Trainer."""
    import datasets
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments, default_data_collator)

    from hf_transfer.metrics import compute_metrics_fn

    tok = AutoTokenizer.from_pretrained(model_dir)
    raw = datasets.load_dataset("csv", data_files=files)
    labels = {"negative": 0, "positive": 1}

    def prep(ex):
        enc = tok(ex["review"], truncation=True, max_length=seq_len, padding="max_length" if fixed else False)
        enc["labels"] = [labels[x] for x in ex["label"]]
        return enc

    ds = raw.map(prep, batched=True, remove_columns=raw["train"].column_names)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch,
                             per_device_eval_batch_size=64, learning_rate=1e-4, report_to="none",
                             save_strategy="no", eval_strategy="no", use_cpu=True, disable_tqdm=True, seed=42)
    collator = default_data_collator if fixed else DataCollatorWithPadding(tok)
    timer = StepTimer()
    trainer = Trainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["test"],
                      data_collator=collator, compute_metrics=compute_metrics_fn("single_label_classification"),
                      callbacks=[timer])
    return trainer, timer


def hf_transfer_trainer(recipe_path, overrides, out):
    from hf_transfer.config import load_recipe
    from hf_transfer.train import build_trainer

    recipe = load_recipe(recipe_path, overrides + [f"training.output_dir={out}"])
    trainer, splits = build_trainer(recipe, out)
    trainer.eval_dataset = splits["test"]
    timer = StepTimer()
    trainer.add_callback(timer)
    return trainer, timer


def run_case(name, trainer, timer, steps, batch, peak):
    tokens = count_tokens(trainer, steps)
    trainer.train()
    return summarise(name, trainer, timer, tokens, batch, peak)


def peak_rss_mb(strategy: str) -> float:
    """Peak RSS of a few training steps of a BERT-base-size model (random weights), in a fresh process."""
    code = f"""
import resource, torch
from transformers import BertConfig, BertForSequenceClassification
from hf_transfer.config import STRATEGY_CONFIGS
from hf_transfer.strategies import apply_strategy
torch.manual_seed(0)
model = apply_strategy(BertForSequenceClassification(BertConfig(num_labels=2)), STRATEGY_CONFIGS[{strategy!r}]())
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
x = torch.randint(0, 30000, (8, 128))
for _ in range(3):
    loss = model(input_ids=x, labels=torch.zeros(8, dtype=torch.long)).loss
    loss.backward(); opt.step(); opt.zero_grad()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def startup_seconds() -> float:
    exe = Path(sys.executable).with_name("hf-transfer")
    cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "hf_transfer", "--help"]
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - start


def markdown(results: dict) -> str:
    rows = results["cases"]
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    extra = {k: v for k, v in results.items() if k != "cases"}
    lines += ["", *(f"- {k}: {v}" for k, v in extra.items())]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir, data = ROOT / "assets/minilm-l6", ROOT / "assets/drugreview"
    if not model_dir.is_dir():
        sys.exit("bench: run `make assets` first")
    recipe = ROOT / "recipes/minilm_drugreview.yaml"
    files = {"train": str(data / "train.csv"), "test": str(data / "test.csv")}
    # Fixed length: every review repeated to well past 128 tokens, so both pipelines see 128.
    long_dir = out / "long"
    long_dir.mkdir(exist_ok=True)
    import pandas as pd

    for split, path in files.items():
        df = pd.read_csv(path)
        df["review"] = (df["review"] + " ") * 4
        df.to_csv(long_dir / f"{split}.csv", index=False)
    long_files = {k: str(long_dir / f"{k}.csv") for k in files}
    long_over = [f"data.data_files.train={long_files['train']}", f"data.data_files.test={long_files['test']}"]
    common = [f"training.max_steps={args.steps}", "training.eval_strategy=no", "training.save_strategy=no",
              "training.load_best_model_at_end=false", "training.disable_tqdm=true"]

    peak = gemm_peak_gflops()
    cases = []
    steps, b = args.steps, args.batch
    cases.append(run_case("plain Trainer, fixed 128", *plain_trainer(model_dir, long_files, steps, b, 128, True, out / "p1"), steps, b, peak))
    cases.append(run_case("hf-transfer full, fixed 128", *hf_transfer_trainer(recipe, common + long_over + ["training.train_sampling_strategy=random"], out / "h1"), steps, b, peak))
    cases.append(run_case("plain Trainer, real lengths (pad to 128)", *plain_trainer(model_dir, files, steps, b, 128, True, out / "p2"), steps, b, peak))
    cases.append(run_case("hf-transfer full, real lengths (dynamic + grouped)", *hf_transfer_trainer(recipe, common, out / "h2"), steps, b, peak))
    cases.append(run_case("hf-transfer LoRA, real lengths", *hf_transfer_trainer(recipe, common + ["finetune.strategy=lora", "finetune.r=8"], out / "h3"), steps, b, peak))
    results = {
        "cases": cases,
        "gemm_peak_gflops_fp32": round(peak, 1),
        "speedup_fixed_128": round(cases[1]["train_samples_per_s"] / cases[0]["train_samples_per_s"], 3),
        "speedup_real_lengths": round(cases[3]["train_samples_per_s"] / cases[2]["train_samples_per_s"], 3),
        "peak_rss_mb_bert_base_full": round(peak_rss_mb("full")),
        "peak_rss_mb_bert_base_lora": round(peak_rss_mb("lora")),
        "hf_transfer_help_seconds": round(startup_seconds(), 2),
        "torch_threads": torch.get_num_threads(),
    }
    results["lora_over_full_peak_rss"] = round(results["peak_rss_mb_bert_base_lora"] / results["peak_rss_mb_bert_base_full"], 3)
    (out / "text.json").write_text(json.dumps(results, indent=2))
    (out / "text.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
