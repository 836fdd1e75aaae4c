"""Text cases: hf-transfer against a plain run_glue-style Trainer script, MiniLM-L6 on drug reviews.

Both run in this one process, on the same device, model, data, batch size, sequence length and
number of steps. Per case: training samples/s and tokens/s (median of timed windows after warm-up),
evaluation samples/s and accuracy on the test split, MFU (model FLOP/s over the device's measured
matmul peak), peak memory, trainable parameters. Also the linear probe (cached features vs through
the frozen backbone, benchmarks/linear_probe.py) and peak memory of full fine-tuning vs LoRA on a
BERT-base-size model (random weights, fresh processes).

    python benchmarks/bench_text.py [--steps 31] [--random-weights]     (make bench runs it with the rest)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import torch  # noqa: E402

from common import CUDA, PeakMemory, StepTimer, bf16_supported, median_rate  # noqa: E402

RECIPE = ROOT / "recipes/minilm_drugreview.yaml"
LABELS = {"negative": 0, "positive": 1}
PLAIN_FIXED, OURS_FIXED = "plain Trainer, fixed 128", "hf-transfer full, fixed 128"
FUSED_ATTN_FIXED = "hf-transfer full, fixed 128, attention dropout 0 (fused attention kernel)"
NO_ATTN_DROPOUT = "model.config_overrides={attention_probs_dropout_prob: 0.0}"
TORCH_DROPOUT_FIXED = "hf-transfer full, fixed 128, torch's dropout"
TORCH_DROPOUT = "model.fast_dropout=false"  # the masks torch draws (hf_transfer/dropout.py: the default's)


def train_flops_per_token(config, seq_len: float, frozen_weights: bool = False) -> float:
    """6 × non-embedding parameters + attention scores and values (12 · layers · seq · hidden), per token:
    forward, input gradients and weight gradients, 2 each. Frozen weights (LoRA) get no weight gradient,
    so 4 × their parameters (the adapters' own products are negligible); attention's products of
    activations keep both gradients. (torch.utils.flop_counter on one forward agrees
    within a few % at seq 128; this form also follows the per-batch padded length.)"""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * h * h + 2 * h * inter
    passes = 2 if frozen_weights else 3
    return passes * 2 * layers * per_layer + 12 * layers * seq_len * h


class TokenCounter:
    """Wraps a collator; records the padded tokens of every batch it builds, in the order built."""

    def __init__(self, collate):
        self.collate, self.counts = collate, []

    def __call__(self, features):
        batch = self.collate(features)
        self.counts.append(int(batch["input_ids"].numel()))
        return batch


def run_case(name: str, trainer, timer: StepTimer, peak: dict, precision: str = "fp32") -> dict:
    """Train for the Trainer's max_steps, then evaluate on its eval set (the test split)."""
    steps, batch = trainer.args.max_steps, trainer.args.per_device_train_batch_size
    counter = trainer.data_collator = TokenCounter(trainer.data_collator)
    with PeakMemory() as mem:
        trainer.train()
    tokens = counter.counts[:steps]  # the training batches (a prefetched extra one, then evaluation's, follow)
    ev = trainer.evaluate()
    sps = median_rate(timer.times, float(batch))
    tps = median_rate(timer.times, [float(t) for t in tokens])
    mean_len = sum(tokens) / len(tokens) / batch
    frozen = hasattr(trainer.model, "peft_config")
    flops = train_flops_per_token(trainer.model.config, mean_len, frozen) * tps
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {
        "case": name, "precision": precision,
        "train_samples_per_s": round(sps, 2), "train_tokens_per_s": round(tps, 1),
        "mean_padded_len": round(mean_len, 1), "eval_samples_per_s": round(ev["eval_samples_per_second"], 2),
        "eval_accuracy": round(ev.get("eval_accuracy", float("nan")), 4),
        "mfu": round(flops / (peak[precision] * 1e9), 3), "peak_mem_mb": round(mem.peak_mb),
        "trainable_params": trainable, "steps": steps,
    }


def plain_trainer(model_dir, files, steps, batch, seq_len, fixed: bool, out, bf16=False):
    """The run_glue way: tokenize with padding to max_length (its default), default collator, plain Trainer.
    `fixed=False`: run_glue's --pad_to_max_length False (DataCollatorWithPadding)."""
    import datasets
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments, default_data_collator)

    from hf_transfer.tasks.classification import compute_metrics_fn

    tok = AutoTokenizer.from_pretrained(model_dir)
    raw = datasets.load_dataset("csv", data_files=files)

    def prep(ex):
        enc = tok(ex["review"], truncation=True, max_length=seq_len, padding="max_length" if fixed else False)
        enc["labels"] = [LABELS[x] for x in ex["label"]]
        return enc

    ds = raw.map(prep, batched=True, remove_columns=raw["train"].column_names)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch,
                             per_device_eval_batch_size=64, learning_rate=1e-4, report_to="none",
                             save_strategy="no", eval_strategy="no", use_cpu=not CUDA, disable_tqdm=True,
                             seed=42, bf16=bf16, warmup_steps=0.1, weight_decay=0.01,  # as the recipe
                             logging_strategy="no")
    collator = default_data_collator if fixed else DataCollatorWithPadding(tok)
    timer = StepTimer()
    trainer = Trainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["test"],
                      data_collator=collator, compute_metrics=compute_metrics_fn("single_label_classification"),
                      callbacks=[timer])
    return trainer, timer


def hf_transfer_trainer(recipe_path, overrides, out):
    from hf_transfer.validate import load_recipe
    from hf_transfer.train import build_trainer

    recipe = load_recipe(recipe_path, overrides + [f"training.output_dir={out}"])
    trainer, splits = build_trainer(recipe, out)
    trainer.eval_dataset = splits["test"]
    timer = StepTimer()
    trainer.add_callback(timer)
    return trainer, timer


def long_reviews(files: dict, out: Path) -> dict:
    """Every review repeated to well past 128 tokens, so both pipelines see exactly 128 per example."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    long_files = {}
    for split, path in files.items():
        df = pd.read_csv(path)
        df["review"] = (df["review"] + " ") * 4
        df.to_csv(out / f"{split}.csv", index=False)
        long_files[split] = str(out / f"{split}.csv")
    return long_files


def random_weights_model(source: Path, out: Path, config=None) -> Path:
    """A model of `config` (default: `source`'s config.json) with random weights, plus `source`'s tokenizer
    files (no weights read)."""
    import shutil

    from transformers import AutoConfig, AutoModelForSequenceClassification

    out.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and f.suffix in (".json", ".txt") and f.name != "config.json":
            shutil.copy(f, out / f.name)
    torch.manual_seed(0)
    config = config or AutoConfig.from_pretrained(source, num_labels=2)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    return out


def cases(args, peak: dict, out: Path) -> list[dict]:
    """All text throughput cases; `args`: steps, batch, random_weights, compile."""
    model_dir, data = ROOT / "assets/minilm-l6", ROOT / "assets/drugreview"
    if args.random_weights:
        model_dir = random_weights_model(model_dir, out / "minilm-random")
    files = {"train": str(data / "train.csv"), "test": str(data / "test.csv")}
    long_files = long_reviews(files, out / "long")
    long_over = [f"data.data_files.train={long_files['train']}", f"data.data_files.test={long_files['test']}"]
    common = ["training.bf16=false",  # fp32 unless a case says bf16 (the recipe's `auto` is bf16 on a bf16 CPU)
              f"model.name_or_path={model_dir}", f"training.max_steps={args.steps}", "training.eval_strategy=no",
              "training.save_strategy=no", "training.load_best_model_at_end=false", "training.disable_tqdm=true",
              "training.logging_strategy=no"]
    s, b = args.steps, args.batch
    fixed = common + long_over + ["training.train_sampling_strategy=random"]

    def plain(name, f, fixed_len, tag, bf16=False):
        return run_case(name, *plain_trainer(model_dir, f, s, b, 128, fixed_len, out / tag, bf16), peak,
                        "bf16" if bf16 else "fp32")

    def ours(name, over, tag, precision="fp32"):
        return run_case(name, *hf_transfer_trainer(RECIPE, over, out / tag), peak, precision)

    rows = fixed_rounds(lambda i: plain(PLAIN_FIXED, long_files, True, f"p1-{i}"),
                        lambda i: ours(OURS_FIXED, fixed, f"h1-{i}"), args.repeats,
                        lambda i: ours(FUSED_ATTN_FIXED, fixed + [NO_ATTN_DROPOUT], f"h0-{i}"),
                        lambda i: ours(TORCH_DROPOUT_FIXED, fixed + [TORCH_DROPOUT], f"ht-{i}"))
    rows += [
        plain("plain Trainer, real lengths (run_glue: pad to 128)", files, True, "p2"),
        ours("hf-transfer full, real lengths, dynamic padding only", common + ["training.train_sampling_strategy=random"], "h2"),
        ours("hf-transfer full, real lengths, dynamic + length-grouped (default)", common, "h3"),
        ours("hf-transfer LoRA r=8, real lengths", common + ["finetune.strategy=lora", "finetune.r=8"], "h4"),
    ]
    if bf16_supported():
        rows.append(plain("plain Trainer, fixed 128, bf16", long_files, True, "p5", bf16=True))
        rows.append(ours("hf-transfer full, fixed 128, bf16", fixed + ["training.bf16=true"], "h5", "bf16"))
        rows.append(ours("hf-transfer full, fixed 128, bf16, torch's dropout", fixed + ["training.bf16=true", TORCH_DROPOUT],
                         "h5t", "bf16"))
    if args.compile:
        rows.append(compile_case(ours, fixed))
    return rows


def fixed_rounds(plain_run, ours_run, repeats: int, *between) -> list[dict]:
    """The fixed-128 pair `repeats` times, alternating which runs first (plain-ours, ours-plain, ...), so a
    machine whose speed drifts over the run favours neither; `between` runs sit in the middle of every
    round. Each row carries its `round`."""
    rows = []
    for i in range(1, repeats + 1):
        order = (plain_run, *between, ours_run) if i % 2 else (ours_run, *between, plain_run)
        rows += [{**run(i), "round": i} for run in order]
    return rows


def fixed_ratio(rows: list[dict], case: str = OURS_FIXED, over: str = PLAIN_FIXED,
                key: str = "speedup_fixed_128") -> dict:
    """Per round `case` / `over` samples/s (default: hf-transfer / plain Trainer); their geometric mean (an
    even number of rounds balances the order)."""
    rounds: dict[int, dict[str, float]] = {}
    for r in rows:
        if "round" in r:
            rounds.setdefault(r["round"], {})[r["case"]] = r["train_samples_per_s"]
    ratios = [d[case] / d[over] for _, d in sorted(rounds.items()) if case in d and over in d]
    if not ratios:
        return {}
    return {key: round(statistics.geometric_mean(ratios), 3), f"{key}_per_round": [round(x, 3) for x in ratios]}


def compile_case(ours, fixed: list[str]) -> dict:
    """torch.compile (TrainingArguments torch_compile) on the fixed-128 full case; its compile time falls
    in the warm-up steps. A failure is reported, not raised."""
    name = "hf-transfer full, fixed 128, torch_compile"
    start = time.perf_counter()
    try:
        row = ours(name, fixed + ["training.torch_compile=true"], "h6")
    except Exception as err:  # noqa: BLE001 - the benchmark reports whatever stops compile
        return {"case": name, "error": f"{err.__class__.__name__}: {str(err).splitlines()[0][:200]}"}
    row["wall_s_incl_compile"] = round(time.perf_counter() - start, 1)
    return row


def probe_cases(args, model_dir_override: str | None) -> tuple[list[dict], dict]:
    """Linear probe: the head trained on cached features vs by Trainer through the frozen backbone
    (benchmarks/linear_probe.py; same seed, sampler, optimizer and schedule)."""
    import linear_probe

    extra = {"verify": False}  # no round-trip check process after each run
    if model_dir_override:
        extra["model.name_or_path"] = model_dir_override
    cache = Path(tempfile.mkdtemp(prefix="hf-transfer-bench-"))
    old = os.environ.get("HF_TRANSFER_CACHE")
    os.environ["HF_TRANSFER_CACHE"] = str(cache)  # a fresh cache: feature extraction is timed
    try:
        out = Path(args.out) / "probe"
        through = linear_probe.run(str(RECIPE), out / "through", False, args.probe_epochs, 5e-3, **extra)
        cached = linear_probe.run(str(RECIPE), out / "cached", True, args.probe_epochs, 5e-3, **extra)
    finally:
        if old is None:
            os.environ.pop("HF_TRANSFER_CACHE", None)
        else:
            os.environ["HF_TRANSFER_CACHE"] = old
    rows = []
    for name, r in (("linear probe through frozen backbone (Trainer)", through),
                    ("linear probe on cached features (hf-transfer)", cached)):
        rows.append({"case": name, "precision": "fp32", "train_samples_per_s": round(r["train_samples_per_s"], 1),
                     "feature_seconds_once": round(r["feature_seconds"], 1),
                     "eval_accuracy": round(r["test_accuracy"], 4), "epochs": args.probe_epochs})
    summary = {"probe_speedup_per_epoch": round(through["seconds_per_epoch"] / cached["seconds_per_epoch"], 1),
               "probe_break_even_epochs": round(cached["feature_seconds"] / max(
                   through["seconds_per_epoch"] - cached["seconds_per_epoch"], 1e-9), 2)}
    return rows, summary


MEMORY_CASES = {  # name: overrides on top of memory_overrides()
    "full": ["finetune.strategy=full"],
    "lora": ["finetune.strategy=lora"],
    "full_checkpointed": ["finetune.strategy=full", "training.activation_checkpointing=true"],
    "lora_checkpointed": ["finetune.strategy=lora", "training.activation_checkpointing=true"],
}


def bert_base_model(out: Path) -> Path:
    """A BERT-base-size classifier (BertConfig's defaults: 12 layers, hidden 768, 110 M parameters) with
    random weights, saved with MiniLM-L6's tokenizer files (the same 30,522-token uncased vocabulary)."""
    from transformers import BertConfig

    return random_weights_model(ROOT / "assets/minilm-l6", out, BertConfig(num_labels=2))


def _memory_child(overrides: list[str], out: Path, measure: str) -> list[float]:
    """Builds hf-transfer's trainer (build_trainer) for `overrides` in a fresh CPU process, runs `measure`
    (Python code around `trainer.train()` that prints numbers on its last line) and returns them."""
    code = f"""
import resource, sys
from pathlib import Path
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "benchmarks")!r}]
import accelerate, datasets, peft, torch, transformers
from common import PeakMemory, PeakTensorMemory, module_tensor_mb, rss_anon_mb, rss_mb
from bench_text import RECIPE, hf_transfer_trainer
libraries = rss_mb()
trainer, trainer_timer = hf_transfer_trainer(RECIPE, {overrides!r}, Path({str(out)!r}))
{measure}"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    if run.returncode:
        raise RuntimeError(f"memory case {overrides}: {run.stderr.strip().splitlines()[-1:]}")
    return [float(x) for x in run.stdout.strip().splitlines()[-1].split()]


def peak_memory(overrides: list[str], out: Path) -> dict:
    """Peak process memory (MB) of hf-transfer's own pipeline (build_trainer, Trainer.train), fresh process:
    - peak_rss_mb: the process's peak resident set (ru_maxrss), everything included;
    - peak_anon_mb: peak anonymous memory (RssAnon, sampled every 5 ms): tensors and the Python heap,
      without mapped files (library code, whose resident share moves with the machine's page cache).
      The weights are copied out of their memory-mapped file first, so every strategy counts them here;
    - libraries_mb: RSS with torch, transformers, datasets, peft and accelerate imported;
    - step_s: the median wall time of the training steps after the first (what a memory saving costs; on a
      shared machine compare it only within one interleaved run)."""
    libraries, peak, anon, step = _memory_child(overrides, out, """
import statistics
with torch.no_grad():
    for param in trainer.model.parameters():
        param.data = param.data.clone()
with PeakMemory(0.005, rss_anon_mb) as anon:
    trainer.train()
print(libraries, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, anon.peak_mb,
      statistics.median(trainer_timer.times[1:]))
""")
    return {"peak_rss_mb": round(peak), "peak_anon_mb": round(anon), "libraries_mb": round(libraries),
            "step_s": round(step, 2)}


def peak_tensor_memory(overrides: list[str], out: Path) -> float:
    """Peak MB held by live tensors during the same training (the model's weights and buffers, then every
    allocation: activations, gradients, optimizer state, temporaries), fresh process: what
    torch.cuda.max_memory_allocated reports on a GPU. Deterministic for a given case, so run once."""
    (peak,) = _memory_child(overrides, out, """
with PeakTensorMemory(module_tensor_mb(trainer.model)) as tensors:
    trainer.train()
print(tensors.peak_mb)
""")
    return round(peak)


def memory_overrides(model: Path, files: dict, steps: int = 4) -> list[str]:
    return [f"model.name_or_path={model}", f"data.data_files.train={files['train']}",
            f"data.data_files.test={files['test']}", "training.per_device_train_batch_size=8",
            f"training.max_steps={steps}", "training.train_sampling_strategy=random", "training.eval_strategy=no",
            "training.save_strategy=no", "training.load_best_model_at_end=false", "training.disable_tqdm=true",
            "training.logging_strategy=no"]


def memory_summary(work: Path, repeats: int = 3) -> tuple[list[dict], dict]:
    """Full fine-tuning vs LoRA (hf-transfer's defaults: r 8 on the attention query / value) on a
    BERT-base-size model, batch 8 × 128 tokens, with and without activation (gradient) checkpointing.
    Process memory: each case runs `repeats` times, the cases interleaved; a row gives the median and
    every run's peak. Tensor memory (peak_tensor_mb) is deterministic and runs once per case."""
    files = long_reviews({"train": str(ROOT / "assets/drugreview/train.csv"),
                          "test": str(ROOT / "assets/drugreview/test.csv")}, work / "long")
    base = memory_overrides(bert_base_model(work / "bert-base-random"), files)
    runs: dict[str, list[dict]] = {name: [] for name in MEMORY_CASES}
    for _ in range(repeats):
        for name, over in MEMORY_CASES.items():
            runs[name].append(peak_memory(base + over, work / f"mem-{name}"))
    rows = []
    for name, measured in runs.items():
        row = {key: round(statistics.median(m[key] for m in measured), 2 if key == "step_s" else None)
               for key in measured[0]}
        row["peak_tensor_mb"] = peak_tensor_memory(base + MEMORY_CASES[name], work / f"mem-{name}")
        rows.append({"case": f"BERT-base {name.replace('_', ' ')}", **row,
                     "peak_rss_mb_each_run": [m["peak_rss_mb"] for m in measured],
                     "peak_anon_mb_each_run": [m["peak_anon_mb"] for m in measured]})
    measures = {"rss": "peak_rss_mb", "anon": "peak_anon_mb", "tensors": "peak_tensor_mb"}
    by_case = {m: {name: r[key] for name, r in zip(MEMORY_CASES, rows)} for m, key in measures.items()}
    summary = {f"bert_base_peak_rss_mb_{name}": mb for name, mb in by_case["rss"].items()}
    summary |= {f"bert_base_peak_tensor_mb_{name}": mb for name, mb in by_case["tensors"].items()}
    pairs = {"lora_over_full": ("lora", "full"),
             "lora_checkpointed_over_full": ("lora_checkpointed", "full"),
             "lora_over_full_both_checkpointed": ("lora_checkpointed", "full_checkpointed")}
    for key, (a, b) in pairs.items():
        for m, mb in by_case.items():
            summary[f"bert_base_{key}_peak_{m}"] = round(mb[a] / mb[b], 3)
    step = {name: r["step_s"] for name, r in zip(MEMORY_CASES, rows)}
    summary["bert_base_lora_checkpointed_over_lora_step_s"] = round(step["lora_checkpointed"] / step["lora"], 3)
    return rows, summary


def speedups(rows: list[dict]) -> dict:
    by = {r["case"]: r for r in rows}

    def ratio(a, b):
        return round(by[a]["train_samples_per_s"] / by[b]["train_samples_per_s"], 3)

    out = (fixed_ratio(rows) | fixed_ratio(rows, FUSED_ATTN_FIXED, OURS_FIXED, "speedup_attention_dropout_0")
           | fixed_ratio(rows, OURS_FIXED, TORCH_DROPOUT_FIXED, "speedup_fast_dropout")) | {
        "speedup_real_lengths": ratio("hf-transfer full, real lengths, dynamic + length-grouped (default)",
                                      "plain Trainer, real lengths (run_glue: pad to 128)"),
        "speedup_real_lengths_dynamic_padding_only": ratio(
            "hf-transfer full, real lengths, dynamic padding only", "plain Trainer, real lengths (run_glue: pad to 128)"),
    }
    if "hf-transfer full, fixed 128, bf16" in by:
        out["speedup_fixed_128_bf16"] = ratio("hf-transfer full, fixed 128, bf16", "plain Trainer, fixed 128, bf16")
    if "hf-transfer full, fixed 128, bf16, torch's dropout" in by:
        out["speedup_fast_dropout_bf16"] = ratio("hf-transfer full, fixed 128, bf16",
                                                 "hf-transfer full, fixed 128, bf16, torch's dropout")
    return out
