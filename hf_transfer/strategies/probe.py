"""Cached-feature linear probe: the frozen backbone runs once per example, the head trains on disk-cached features.

With a fully frozen backbone (`partial`, `freeze: backbone`) and no stochastic augmentation, the
backbone's output for an example never changes, so it is computed once (batched, under no_grad,
in eval mode) and stored under `$HF_TRANSFER_CACHE` (default ~/.cache/hf-transfer/features), keyed
by a hash of the backbone's weights, a hash of the preprocessed split (data + preprocessing: the
model inputs and labels themselves) and the capture point. Trainer then trains only the head on those features — same
optimizer, schedule, sampler order and metrics as through the backbone — and the saved output is the
ordinary full model folder (the head's modules are the model's own, trained in place).

Per-token heads (token classification: `per_token`) cache the hidden states at the labelled positions
only (label not -100); a batch puts each row's vectors back at those positions of a right-padded
(batch, tokens, hidden) tensor, zeros elsewhere, so the head, its dropout masks, the loss over the labelled
tokens and the per-token predictions are those of the run through the backbone.

Applies when the head is a Linear layer with only dropout/identity layers before it (BERT, ViT, ...);
the capture is checked against the full model's logits on one batch, else it falls back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn
from transformers import default_data_collator
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_transfer.console import progress
from hf_transfer.errors import ModelError, first_line
from hf_transfer.inference import run_batches
from hf_transfer.anatomy import backbone_of, classifier_slot
from hf_transfer.tasks.classification import classification_loss
from hf_transfer.tasks.base import IGNORE

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("HF_TRANSFER_CACHE", "~/.cache/hf-transfer")).expanduser() / "features"


def probe_head(model: nn.Module) -> nn.Sequential | None:
    """The head as a Sequential of the model's own modules, when it is dropouts + one Linear; for a timm
    backbone, which holds its classifier, that classifier when it is one Linear (the frozen backbone runs in
    eval mode, so timm's own head dropout is off and the pooled features are the classifier's whole input)."""
    backbone = backbone_of(model)
    if backbone is model:
        return None
    timm_head = _timm_classifier(backbone)
    if timm_head is not None:
        return nn.Sequential(timm_head) if isinstance(timm_head, nn.Linear) else None
    children = [m for m in model.children() if m is not backbone]
    linears = [m for m in children if isinstance(m, nn.Linear)]
    if len(linears) != 1 or not all(isinstance(m, (nn.Linear, nn.Dropout, nn.Identity)) for m in children):
        return None
    return nn.Sequential(*children)


def wanted(cfg, task, stochastic: bool, model) -> bool:
    """Use the cache? `cfg` is the `finetune` section, `task` the task record, `stochastic` whether the
    training inputs are augmented randomly; `cache_features: null` means whenever it applies."""
    if cfg.strategy != "partial" or cfg.cache_features is False:
        return False
    if cfg.freeze != "backbone" and cfg.cache_features is None:
        return False  # not a linear probe
    reasons = []
    if cfg.freeze != "backbone":
        reasons.append("the backbone is not fully frozen (freeze: backbone)")
    if stochastic:
        reasons.append("the data has stochastic augmentation")
    if not task.caches_features:
        reasons.append(f"the {task.name} head reads more than one feature per labelled item")
    elif probe_head(model) is None:
        reasons.append(f"the head of {model.__class__.__name__} is not dropout + one Linear layer")
    if reasons and cfg.cache_features:
        raise ModelError(f"finetune.cache_features: cannot cache features: {reasons[0]}")
    if reasons:
        log.info("linear probe through the backbone: %s", reasons[0])
    return not reasons


def _timm_classifier(backbone: nn.Module) -> nn.Module | None:
    """A timm backbone's classifier module; None for other backbones (or a timm one with several)."""
    try:
        slot = classifier_slot(backbone)
    except ModelError:
        return None
    return None if slot is None else getattr(*slot)


class CachedHead(nn.Module):
    """The model's head applied to cached features, with the model's loss for its problem type."""

    def __init__(self, head: nn.Sequential, problem_type: str | None, num_labels: int):
        super().__init__()
        self.head, self.problem_type, self.num_labels = head, problem_type, num_labels

    def forward(self, features, labels=None, length=None):  # length: for group_by_length only
        logits = self.head(features)
        loss = None if labels is None else classification_loss(logits, labels, self.problem_type)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _weights_hash(module: nn.Module, head: nn.Module | None = None) -> str:
    """The module's weights, the head's left out (a timm backbone holds its classifier, which each seed
    initialises anew and the features do not depend on)."""
    skip = {id(t) for t in head.state_dict(keep_vars=True).values()} if head is not None else set()
    h = hashlib.sha256()
    for name, t in module.state_dict(keep_vars=True).items():
        if id(t) in skip:
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-dim too
    return h.hexdigest()


def _data_hash(split) -> str:
    """Hash of the preprocessed split's content (model inputs + labels): data and preprocessing."""
    if split._indices is not None:
        split = split.flatten_indices()
    h = hashlib.sha256(repr(split.features).encode())
    for batch in split.data.to_batches():
        h.update(batch.serialize())
    return h.hexdigest()


def _compute(model, head, split, collator, batch_size: int, device, per_token: bool = False, bar=None) -> torch.Tensor:
    """Features of every example (the input of the head), checked on the first batch; `per_token`: the
    vectors of every labelled position, row after row (the collated labels say which)."""
    captured, labels = [], []

    def check(i: int, outputs) -> None:
        if i == 0:
            replay = head(captured[0])
            captured.pop()  # the replay passed through the hook too
            if not torch.allclose(replay, outputs.logits, atol=1e-5, rtol=1e-4):
                raise ModelError("finetune.cache_features: the head's input does not reproduce the logits")
        if per_token:
            captured[-1] = captured[-1][labels[i].to(captured[-1].device) != IGNORE]

    def collate(rows):  # keeps each batch's labels, which run_batches does not feed to the model
        batch = collator(rows)
        labels.append(batch["labels"])
        return batch

    hook = head[0].register_forward_pre_hook(lambda m, args: captured.append(args[0].detach()))
    try:  # labels stay in the split (an image transform reads them; per-token positions come from them);
        # run_batches does not feed them to the model
        run_batches(model, split, collate if per_token else collator, batch_size, device, check, bar)
    finally:
        hook.remove()
    return torch.cat(captured).float().cpu()


def token_batches(width: int):
    """Collator of cached per-token rows: each row's vectors back at its labelled positions of a right-padded
    (batch, tokens, width) tensor, zeros elsewhere; labels padded with IGNORE. (A tokenizer that pads on the
    left puts the tokens elsewhere: the same training, but other dropout masks than through the backbone.)"""

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        labels = torch.full((len(rows), max(len(r["labels"]) for r in rows)), IGNORE)
        for i, row in enumerate(rows):
            labels[i, : len(row["labels"])] = torch.as_tensor(row["labels"])
        feats = torch.zeros(*labels.shape, width)  # row after row, as the labelled positions were taken
        feats[labels != IGNORE] = torch.cat([torch.as_tensor(r["features"]).reshape(-1, width) for r in rows])
        return {"features": feats, "labels": labels}

    return collate


def features(model, head, split, collator, batch_size: int, device, weights: str, per_token: bool = False,
             bar=None) -> tuple:
    """(features dataset, seconds spent, cache hit) for one preprocessed split;
    `weights` is the hash of the backbone's weights. `per_token`: a row's features are its labelled
    positions' vectors (flattened), its labels the split's own (IGNORE where not labelled). `bar` (a
    progress bar) advances by the split's examples."""
    start = time.perf_counter()
    key = hashlib.sha256(f"{weights}|{_data_hash(split)}|{head[0].__class__.__name__}".encode()).hexdigest()[:32]
    path = cache_dir() / f"{key}.safetensors"
    feats = _read_cache(path)
    hit = feats is not None
    if hit:
        if bar is not None:
            bar.update(len(split))
    else:
        feats = _compute(model, head, split, collator, batch_size, device, per_token, bar)
        _write_cache(path, feats)
    labels = split.select_columns(["labels"]).to_dict()["labels"]
    sizes = [sum(label != IGNORE for label in row) for row in labels] if per_token else [1] * len(split)
    if len(feats) != sum(sizes):
        raise ModelError(f"finetune.cache_features: cache {path} holds {len(feats)} rows, expected {sum(sizes)}")
    rows = [f.reshape(-1).numpy() for f in feats.split(sizes)] if per_token else feats.numpy()
    data = {"features": rows, "labels": labels}
    if "input_ids" in split.column_names:
        data["length"] = [len(ids) for ids in split["input_ids"]]
    from datasets import Dataset

    ds = Dataset.from_dict(data).with_format("torch")
    return ds, time.perf_counter() - start, hit


def _read_cache(path: Path) -> torch.Tensor | None:
    """The cached features, or None: not cached, or a file that does not read (computed again, and replaced)."""
    import safetensors
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        return load_file(path)["features"]
    except (OSError, KeyError, safetensors.SafetensorError) as err:
        log.warning("feature cache: %s does not read (%s); computing the features again", path, first_line(err))
        return None


def _write_cache(path: Path, feats: torch.Tensor) -> None:
    """Cache the features (a temporary file, then renamed); a cache that cannot be written costs the next run
    the same pass again, so it is one warning, not an error."""
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"features": feats.contiguous()}, str(tmp))
        os.replace(tmp, path)
    except OSError as err:
        log.warning("feature cache: cannot write %s (%s); set HF_TRANSFER_CACHE to a writable folder to keep "
                    "features between runs", path.parent, err.strerror or first_line(err))


def prepare(model, splits, collator, args, per_token: bool = False):
    """(CachedHead to train, feature splits, info for metrics.json, the feature splits' collator);
    `per_token`: the labels are per token (the task's `entities`), and so are the features."""
    start = time.perf_counter()
    head = probe_head(model)
    weights = _weights_hash(backbone_of(model), head)
    out, info = {}, {"seconds": time.perf_counter() - start, "cache_hits": 0, "splits": len(splits)}
    with progress(sum(len(s) for s in splits.values()), "cached features", disable=args.disable_tqdm) as bar:
        for role, split in splits.items():
            out[role], seconds, hit = features(
                model, head, split, collator, args.per_device_eval_batch_size, args.device, weights, per_token, bar
            )
            info["seconds"] += seconds
            info["cache_hits"] += int(hit)
    log.info("linear probe on cached features: %.1f s for features (%d of %d splits from cache)",
             info["seconds"], info["cache_hits"], len(splits))
    linear = next(m for m in head if isinstance(m, nn.Linear))
    batches = token_batches(linear.in_features) if per_token else default_data_collator
    # a transformers model keeps its problem type in its config, a timm one (TimmClassifier) as an attribute
    problem_type = model.config.problem_type if hasattr(model, "config") else model.problem_type
    return CachedHead(head, problem_type, linear.out_features), type(splits)(out), info, batches
