"""`hf-transfer rank`: score candidate backbones for the recipe's task before fine-tuning any of them.

For every candidate (a Hub id or a model folder, put in `model.name_or_path`): the task loads its processor
and model as for training, a seeded sample of the training split and the validation split go through it
once (batched, no_grad, eval mode, deterministic preprocessing) and the input of the final classifier
layer is kept: the cached-feature machinery of the linear probe (strategies/probe.py), so features are
fp32 safetensors under `$HF_TRANSFER_CACHE` and a second rank reads them back. Then the scores of
hf_transfer.selection.scores: LogME on the features; LEEP and NCE when the candidate has a source
classifier (its checkpoint classifies, e.g. timm's ImageNet heads: the model is then loaded with that
head, whose input is the same pooled feature); and, as a check, the validation score of a logistic
regression (ridge for regression) trained on the cached features. rank.json and rank.md record them.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.anatomy import check_text_model, output_layers
from hf_transfer.console import progress
from hf_transfer.errors import HfTransferError, ModelError, RecipeError
from hf_transfer.recipe.schema import RankConfig, Recipe
from hf_transfer.recipe.typed import build
from hf_transfer.selection import scores
from hf_transfer.strategies import probe
from hf_transfer.tasks import resolve
from hf_transfer.tasks.loaders import missing_folder
from hf_transfer.train import load_splits, output_dir
from hf_transfer.search_space import SEARCH_ONLY
from hf_transfer.validate import load_recipe

log = logging.getLogger(__name__)

SCORES = ("logme", "leep", "nce", "probe")


def settings(recipe: Recipe, candidates: list[str] | None = None, sample: int | None = None,
             out: str | None = None) -> tuple[RankConfig, Path]:
    """The recipe's `rank` section with the command line's values on top, and the output folder."""
    raw = dict(vars(recipe.rank)) if recipe.rank is not None else {}
    raw |= {k: v for k, v in (("candidates", candidates), ("sample", sample), ("output_dir", out)) if v is not None}
    cfg = build(RankConfig, raw, "rank")
    if not cfg.candidates:
        raise RecipeError("rank.candidates: name at least one candidate (--candidates A B ... or the recipe's rank section)")
    return cfg, Path(cfg.output_dir or f"{output_dir(recipe)}-rank")


def _check_candidates(candidates: list[str]) -> None:
    """A name that can only be a folder (./x, /x, ~/x, a/b/c) and is none: refused before anything loads."""
    for name in candidates:
        problem = missing_folder(name)
        if problem:
            raise RecipeError(f"rank.candidates: {problem}")


def source_classes(model_cfg) -> int | None:
    """Number of classes of the checkpoint's own classifier (timm's `num_classes`; a transformers
    `...ForXClassification` with `id2label`), or None when the checkpoint is a plain backbone."""
    config = _read_config(model_cfg)
    if not config:
        return None
    if "architecture" in config:  # timm's format
        return int(config.get("num_classes") or 0) or None
    architectures = config.get("architectures") or []
    if any(a.endswith("Classification") and "Token" not in a for a in architectures) and config.get("id2label"):
        return len(config["id2label"])
    return None


def _read_config(model_cfg) -> dict[str, Any] | None:
    path = Path(model_cfg.name_or_path).expanduser()
    try:
        if path.is_dir():
            file = path / "config.json"
        else:
            from huggingface_hub import hf_hub_download

            file = Path(hf_hub_download(model_cfg.name_or_path, "config.json", revision=model_cfg.revision))
        return json.loads(file.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - no readable config: the loader names the problem
        return None


def final_layer(model, num_classes: int):
    """The head to capture at: the model's last Linear layer with one output per class (BERT's
    classifier, MPNet's out_proj, timm's get_classifier(), wav2vec2's classifier)."""
    from torch import nn

    layers = output_layers(model, num_classes)
    if not layers:
        raise ModelError(f"rank: {model.__class__.__name__} has no Linear classifier with {num_classes} outputs "
                         "(rank scores the pooled feature a classifier reads)")
    return nn.Sequential(layers[-1])


def _processor_key(processor) -> str:
    """What of the preprocessing is not in the data itself (image size, normalisation, features)."""
    for attr in ("to_dict", "__dict__"):
        value = getattr(processor, attr, None)
        value = value() if callable(value) else value
        if isinstance(value, dict):
            return json.dumps(value, sort_keys=True, default=repr)
    return processor.__class__.__name__


def _features(task, spec, model, head, processor, splits, batch_size: int, name: str, quiet: bool):
    """{role: (features float32 array, labels array)}, one batched no_grad pass (or the cache)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    key = hashlib.sha256(f"{probe._weights_hash(model)}|{_processor_key(processor)}".encode()).hexdigest()
    out = {}
    with progress(sum(len(s) for s in splits.values()), name, disable=quiet, leave=False) as bar:
        collator = task.collator(processor)
        for role, split in splits.items():
            ds, _, _ = probe.features(model, head, split, collator, batch_size, device, key, bar=bar)
            columns = ds.with_format("numpy")[:]
            out[role] = (columns["features"].astype(np.float32), np.asarray(columns["labels"]))
    return out


def _probe_score(train, val, problem_type: str) -> float | None:
    """Validation accuracy of a logistic regression (R^2 of a ridge regression) on the standardised features."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x, y), (xv, yv) = train, val
    if problem_type == "single_label_classification" and len(np.unique(y)) > 1:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    elif problem_type == "regression":
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    else:
        return None
    return float(model.fit(x, y).score(xv, yv))


def _source_scores(head, feats: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    import torch

    with torch.no_grad():
        logits = torch.cat([head(torch.from_numpy(chunk)) for chunk in np.array_split(feats, max(1, len(feats) // 512))])
    probs = scores.softmax(logits.numpy())
    return {"leep": scores.leep(probs, labels), "nce": scores.nce(probs.argmax(axis=1), labels)}


def score_candidate(recipe: Recipe, name: str, sample, validation, label_names, batch_size: int) -> dict[str, Any]:
    """One candidate's row: its scores, feature size and seconds."""
    from datasets import DatasetDict
    from transformers import set_seed

    start = time.perf_counter()
    raw = {k: v for k, v in recipe.to_dict().items() if k not in SEARCH_ONLY}
    raw["model"]["name_or_path"] = name
    task, spec = resolve(load_recipe(raw))
    set_seed(spec.seed)
    processor = task.load_processor(spec)
    source = source_classes(spec.model)
    model = task.load_model(spec, [str(i) for i in range(source)] if source else label_names)
    check_text_model(processor, model, name, spec.model.max_length)
    head = final_layer(model, source or len(label_names or [None]))
    # `train` only feeds the task's training-time setup: deterministic transforms come with other roles
    splits = task.preprocess(DatasetDict({"train": sample.select([0]), "sample": sample, "validation": validation}),
                             processor, spec)
    feats = _features(task, spec, model, head, processor, {r: splits[r] for r in ("sample", "validation")},
                      batch_size, name, bool(recipe.training.get("disable_tqdm")))
    (x, y), problem = feats["sample"], spec.data.problem_type
    single = problem == "single_label_classification"
    row: dict[str, Any] = {"candidate": name, "logme": scores.logme(x, y, classification=single),
                           "leep": None, "nce": None, "source_classes": source}
    if source and single:
        row |= _source_scores(head.cpu(), x, y)
    row["probe"] = _probe_score(feats["sample"], feats["validation"], problem)
    row |= {"feature_size": int(x.shape[1]), "samples": int(len(x)), "seconds": round(time.perf_counter() - start, 1)}
    del model, head
    gc.collect()
    return row


def rank(recipe: Recipe, candidates: list[str] | None = None, sample: int | None = None,
         out: str | None = None) -> dict[str, Any]:
    """Score every candidate; write rank.json and rank.md into the output folder; return the report."""
    cfg, folder = settings(recipe, candidates, sample, out)
    task, _ = resolve(recipe)
    if recipe.tasks or task.entities:
        raise RecipeError(f"rank: scores pooled features; task {recipe.task}{' with tasks:' if recipe.tasks else ''} "
                          "labels more than one thing per input")
    _check_candidates(cfg.candidates)
    seed = int(recipe.training.get("seed", 42))
    loaded = load_splits(recipe, seed)
    if loaded.label_names is None and recipe.data.problem_type != "regression":  # e.g. transcripts
        raise RecipeError(f"rank: task {recipe.task} has no classes: rank scores classification and regression")
    train, validation = (loaded.splits[r].shuffle(seed=seed) for r in ("train", "validation"))
    train, validation = (s.select(range(min(cfg.sample, len(s)))) for s in (train, validation))
    rows, start = [], time.perf_counter()
    for name in cfg.candidates:
        try:
            rows.append(score_candidate(recipe, name, train, validation, loaded.label_names, cfg.batch_size))
        except HfTransferError as err:
            raise type(err)(f"rank: candidate {name!r}: {err}") from None
        log.info("rank: %s: LogME %.4f (%.1f s)", name, rows[-1]["logme"], rows[-1]["seconds"])
    rows.sort(key=lambda r: -r["logme"])
    report = {"task": recipe.task, "problem_type": recipe.data.problem_type, "sample": len(train),
              "validation": len(validation), "seconds": round(time.perf_counter() - start, 1),
              "best": rows[0]["candidate"], "output_dir": str(folder), "candidates": rows}
    write(report, folder)
    return report


def table(report: dict[str, Any]) -> str:
    """The ranking as a Markdown table (best LogME first)."""
    def cell(v: Any) -> str:
        return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    probe_name = "probe R²" if report["problem_type"] == "regression" else "probe acc"
    lines = [f"| # | candidate | LogME | LEEP | NCE | {probe_name} | features | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(report["candidates"], 1):
        lines.append(f"| {i} | {r['candidate']} | {cell(r['logme'])} | {cell(r['leep'])} | {cell(r['nce'])} | "
                     f"{cell(r['probe'])} | {r['samples']} × {r['feature_size']} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def write(report: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rank.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    note = (f"Task {report['task']}: {report['sample']} training examples scored, {report['validation']} validation "
            f"examples for the probe; {report['seconds']:.1f} s in all. LogME: evidence per example of a Bayesian "
            "linear model on the frozen features (higher is better); LEEP / NCE: from the candidate's own source "
            "classifier, when it has one; probe: validation score of a linear model on the same features.")
    (folder / "rank.md").write_text(f"# Backbone ranking\n\n{note}\n\n{table(report)}\n", encoding="utf-8")
