"""Task `token-classification` (named entities): AutoTokenizer (fast) + AutoModelForTokenClassification.

Data: a column of word lists and a column of tag lists (`token_classification.tokens_column` /
`tags_column`): Hub datasets such as conll2003 or wnut_17 as they are (tags a `Sequence(ClassLabel)`:
its names), or CoNLL files (`data.path: conll`, tasks/readers.py). Tag names: `data.label_names`,
else the ClassLabel names, else the sorted tags of the training split. BIO tags are checked: an `I-X`
that follows neither `B-X` nor `I-X` is repaired to `B-X` (counted) or refused (`bio: refuse`).

Words are tokenized with `is_split_into_words=True` and truncated at `model.max_length`; the first
sub-token of a word carries its tag, the others -100 (`label_all_subtokens`: every sub-token, in the
training split only, so evaluation counts each word once). Metrics are seqeval's entity-level
precision / recall / F1 (micro and per entity type) and token accuracy, on words. `data.class_weights`
weights the cross-entropy over the labelled sub-tokens (`auto`: from the tags of the training split's words).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hf_transfer.errors import DataError, ModelError
from hf_transfer.tasks.base import DETERMINISTIC, IGNORE, NO_LOSS, NO_SAVE, Labeler, Task, TaskSpec
from hf_transfer.tasks.data import load_raw
from hf_transfer.tasks.inputs import text_inputs
from hf_transfer.tasks.loaders import load_head_model
from hf_transfer.tasks.metrics import metric
from hf_transfer.tasks.text_classification import load_processor as load_text_processor, pipeline_kwargs

log = logging.getLogger(__name__)



@dataclass
class TokenClassificationConfig:
    """The `token_classification:` section."""

    tokens_column: str = "tokens"
    """Column of word lists (CoNLL files: `tokens`)."""
    tags_column: str = "ner_tags"
    """Column of tag lists, one tag per word: strings or ClassLabel ids (CoNLL files: `ner_tags`)."""
    label_all_subtokens: bool = False
    """Train on every sub-token of a word (false: its first sub-token only). Evaluation always scores words."""
    bio: Literal["repair", "refuse"] = "repair"
    """An `I-X` after neither `B-X` nor `I-X`: repaired to `B-X` (counted and logged), or refused."""


def _options(spec: TaskSpec) -> TokenClassificationConfig:
    return spec.options or TokenClassificationConfig()


# --------------------------------------------------------------------------- tags


def input_columns(spec: TaskSpec) -> dict[str, str]:
    return {"token_classification.tokens_column": _options(spec).tokens_column}


def _class_names(feature) -> list[str] | None:
    return getattr(getattr(feature, "feature", None), "names", None) or getattr(feature, "names", None)


def tag_names(train, spec: TaskSpec) -> list[str]:
    """`data.label_names`, else the ClassLabel names, else the sorted tags of the training split (with
    `B-X` for every `I-X`, so that repaired tags have a name)."""
    if spec.data.label_names:
        return [str(n) for n in spec.data.label_names]
    column = _options(spec).tags_column
    names = _class_names(train.features[column])
    if names:
        return list(names)
    tags = {str(t) for row in train[column] for t in row or []}
    tags |= {"B-" + t[2:] for t in tags if t.startswith("I-")}
    return sorted(tags)


def repair_bio(tags: list[str]) -> tuple[list[str], int]:
    """(tags with every `I-X` that follows neither `B-X` nor `I-X` made `B-X`, how many were)."""
    out, fixed, prev = [], 0, "O"
    for tag in tags:
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            tag, fixed = "B-" + tag[2:], fixed + 1
        out.append(tag)
        prev = tag if tag[:2] in ("B-", "I-") else "O"
    return out, fixed


def encode_tags(ds, spec: TaskSpec, names: list[str], split: str):
    """The split with `labels` (tag ids per word) instead of the tags column; one-line errors naming the row."""
    opts = _options(spec)
    index = {n: i for i, n in enumerate(names)}
    class_names = _class_names(ds.features[opts.tags_column])
    labels, repaired = [], 0
    for row, ex in enumerate(ds.select_columns([opts.tokens_column, opts.tags_column])):
        words, tags = ex[opts.tokens_column], ex[opts.tags_column]
        where = f"split {split!r} row {row}"
        if not words:
            raise DataError(f"token_classification.tokens_column: {where} is an empty sentence")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DataError(f"token_classification.tokens_column: {where} is not a list of words: {words!r}")
        if not isinstance(tags, list) or len(tags) != len(words):
            n = len(tags) if isinstance(tags, list) else tags
            raise DataError(f"token_classification.tags_column: {where} has {n} tags for {len(words)} words")
        tags = [class_names[t] if class_names and isinstance(t, int) else str(t) for t in tags]
        fixed_tags, fixed = repair_bio(tags)
        if fixed and opts.bio == "refuse":
            bad = next(i for i, (a, b) in enumerate(zip(tags, fixed_tags)) if a != b)
            raise DataError(f"token_classification.bio: {where}: tag {tags[bad]!r} of word {bad} "
                            f"({words[bad]!r}) follows no B-/I- of its type (bio: repair fixes it)")
        repaired += fixed
        unknown = [t for t in fixed_tags if t not in index]
        if unknown:
            raise DataError(f"token_classification.tags_column: tag {unknown[0]!r} in {where} is not one of "
                            f"the tags {names}")
        labels.append([index[t] for t in fixed_tags])
    if repaired:
        log.warning("token_classification.bio: repaired %d I- tags without a preceding B-/I- in split %r",
                    repaired, split)
    drop = [c for c in (opts.tags_column, "labels") if c in ds.column_names]
    return ds.remove_columns(drop).add_column("labels", labels)


def labeler(spec: TaskSpec) -> Labeler:
    return Labeler(
        columns=[("token_classification.tags_column", _options(spec).tags_column)],
        names=lambda train: tag_names(train, spec),
        encode=lambda ds, names, split: encode_tags(ds, spec, names, split),
        stratify=None,
    )


# --------------------------------------------------------------------------- tokens


def load_processor(spec: TaskSpec):
    """The fast tokenizer (word_ids() aligns tags); it truncates at model.max_length, saved and reloaded."""
    tok = load_text_processor(spec)
    if not tok.is_fast:
        raise ModelError(f"model.name_or_path: token classification needs a fast tokenizer; "
                         f"{spec.model.name_or_path!r} has none")
    return tok


def align(word_ids: list[int | None], tags: list[int], every: bool = False, inside: dict[int, int] | None = None):
    """Sub-token labels: a word's first sub-token its tag, the others IGNORE (`every`: the tag too, with
    B-X continued as `inside[B-X]` = I-X); special tokens IGNORE."""
    out, prev = [], None
    for w in word_ids:
        if w is None:
            out.append(IGNORE)
        elif w != prev:
            out.append(tags[w])
        else:
            out.append((inside or {}).get(tags[w], tags[w]) if every else IGNORE)
        prev = w
    return out


def _inside(names: list[str]) -> dict[int, int]:
    index = {n: i for i, n in enumerate(names)}
    return {i: index["I-" + n[2:]] for i, n in enumerate(names) if n.startswith("B-") and "I-" + n[2:] in index}


def preprocess(splits, tokenizer, spec: TaskSpec):
    """Tokenize words (`is_split_into_words`, truncated at model.max_length) and align the tags."""
    opts = _options(spec)
    inside = _inside(run_tag_names(spec)) if opts.label_all_subtokens else None

    def tokenize(batch: dict[str, list[Any]], every: bool) -> dict[str, Any]:
        enc = tokenizer(batch[opts.tokens_column], is_split_into_words=True, truncation=True,
                        max_length=spec.model.max_length)
        labels, cut = [], []
        for i, tags in enumerate(batch["labels"]):
            ids = enc.word_ids(i)
            labels.append(align(ids, tags, every, inside))
            kept = max((w for w in ids if w is not None), default=-1) + 1
            cut.append(len(tags) - kept)
        return dict(enc) | {"labels": labels, "words_cut": cut}

    out = {}
    for role, ds in splits.items():
        every = opts.label_all_subtokens and role == "train"
        remove = [c for c in ds.column_names if c != "labels"]
        ds = ds.map(tokenize, batched=True, remove_columns=remove, fn_kwargs={"every": every},
                    desc=f"tokenize {role}")
        cut = sum(ds["words_cut"])
        if cut:
            log.warning("model.max_length %d cuts %d words of split %r (they are neither trained nor scored)",
                        spec.model.max_length, cut, role)
        out[role] = ds.remove_columns(["words_cut"])
    return type(splits)(out)


def collator(tokenizer):
    from transformers import DataCollatorForTokenClassification

    return DataCollatorForTokenClassification(tokenizer)


def load_model(spec: TaskSpec, label_names: list[str] | None):
    from transformers import AutoModelForTokenClassification

    names = list(label_names or [])
    return load_head_model(AutoModelForTokenClassification, spec.model, "a token-classification model", names,
                           num_labels=len(names), id2label=dict(enumerate(names)),
                           label2id={n: i for i, n in enumerate(names)})


# --------------------------------------------------------------------------- metrics


_NAMES: dict[str, list[str]] = {}


def run_tag_names(spec: TaskSpec) -> list[str]:
    """The run's tag names, as the labeler names them (read again from the training split, once per data
    and options): Trainer's compute_metrics sees tag ids only."""
    key = repr((spec.data, spec.options))
    if key not in _NAMES:
        if spec.data.label_names:
            _NAMES[key] = [str(n) for n in spec.data.label_names]
        else:
            raw = load_raw(spec.data)
            if spec.data.train_split not in raw:
                raise DataError(f"data.train_split: split {spec.data.train_split!r} not in dataset")
            _NAMES[key] = tag_names(raw[spec.data.train_split], spec)
    return _NAMES[key]


def word_tags(preds: np.ndarray, labels: np.ndarray, names) -> tuple[list[list[str]], list[list[str]]]:
    """(reference tags, predicted tags) per row, at the positions whose label is not IGNORE."""
    refs, hyps = [], []
    for p, lab in zip(preds, labels):
        keep = lab != IGNORE
        refs.append([names[i] for i in lab[keep]])
        hyps.append([names[i] for i in p[keep]])
    return refs, hyps


def entity_scores(refs: list[list[str]], hyps: list[list[str]]) -> dict[str, float]:
    """seqeval (through evaluate, or offline): overall_* and <type>_precision / _recall / _f1."""
    values = metric("seqeval")(predictions=hyps, references=refs, zero_division=0)
    out = {f"overall_{m}": float(values[f"overall_{m}"]) for m in ("f1", "precision", "recall", "accuracy")}
    for name, scores in sorted((k, v) for k, v in values.items() if isinstance(v, dict)):
        out |= {f"{name}_{m}": float(scores[m]) for m in ("precision", "recall", "f1")}
    return out


def compute_metrics(spec: TaskSpec):
    def compute(pred) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        labels = np.asarray(pred.label_ids)
        refs, hyps = word_tags(np.asarray(logits).argmax(-1), labels, run_tag_names(spec))
        return entity_scores(refs, hyps) | {"samples": len(labels)}

    return compute


def best_metric(spec: TaskSpec) -> tuple[str, bool]:
    return "overall_f1", True


class EntityMetricNames(dict):
    """The card's metric names: the overall ones, and `<type>_f1` for every entity type a run reports."""

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or (isinstance(key, str) and key.endswith("_f1"))

    def __missing__(self, key: str):
        if isinstance(key, str) and key.endswith("_f1"):
            kind = key.removesuffix("_f1")
            return "f1", f"F1 ({kind})", {"entity_type": kind}
        raise KeyError(key)


METRIC_NAMES = EntityMetricNames({
    "overall_f1": ("f1", "Entity F1 (micro)", {"average": "micro", "level": "entity"}),
    "overall_precision": ("precision", "Entity precision (micro)", {"average": "micro", "level": "entity"}),
    "overall_recall": ("recall", "Entity recall (micro)", {"average": "micro", "level": "entity"}),
    "overall_accuracy": ("accuracy", "Token accuracy", None),
})


def majority(spec: TaskSpec, splits, args=None) -> dict[str, dict[str, float]]:
    """Every word tagged `O` (the majority tag): entity F1 0, token accuracy the share of `O`."""
    names = list(run_tag_names(spec))
    if "O" not in names:
        raise DataError(f"compare: majority predicts tag 'O', which is not one of the tags {names}")
    out = {}
    for role, prefix in (("validation", "eval"), ("test", "test")):
        if role in splits:
            refs = [[names[i] for i in row] for row in splits[role]["labels"]]
            scores = entity_scores(refs, [["O"] * len(r) for r in refs]) | {"samples": len(refs)}
            out[role] = {f"{prefix}_{k}": v for k, v in scores.items()}
    return out


# --------------------------------------------------------------------------- what a Hub user sees


def verify_inputs(spec: TaskSpec, split, processor=None):
    """The split's word lists, in column `inputs` (the Hub-user side tokenizes them split into words)."""
    column = _options(spec).tokens_column
    return split.select_columns([column]).rename_column(column, "inputs")


TASK = Task(
    name="token-classification",
    modality="text",
    section="token_classification",
    options=TokenClassificationConfig,
    problem_types=("single_label_classification",),
    input_columns=input_columns,
    labeler=labeler,
    load_processor=load_processor,
    preprocess=preprocess,
    collator=collator,
    stochastic=DETERMINISTIC,
    training_defaults=dict,
    load_model=load_model,
    loss=NO_LOSS,
    compute_metrics=compute_metrics,
    best_metric=best_metric,
    metric_names=METRIC_NAMES,
    save=NO_SAVE,
    baselines={"majority": majority},
    objectives=("class_weights",),
    pipeline_task="token-classification",
    auto_class="AutoModelForTokenClassification",
    processor_arg="tokenizer",
    peft_task_type="TOKEN_CLS",
    example='"Heading to Seattle with Kate to see the Seahawks"',
    read_inputs=text_inputs,
    pipeline_kwargs=pipeline_kwargs,
    verify_inputs=verify_inputs,
    entities=True,
    verify_after_training=True,
)
