"""Task `text-classification`: AutoTokenizer + AutoModelForSequenceClassification (BERT family and kin).

Single-label, multi-label and regression (see classification.py); a text column, optionally a second one
for sentence pairs. Tokenized with truncation only: padding is dynamic, per batch, in the collator.
"""

from __future__ import annotations

from typing import Any

from hf_transfer.errors import DataError, ModelError
from hf_transfer.tasks import classification
from hf_transfer.tasks.base import DETERMINISTIC, NO_LOSS, TaskSpec
from hf_transfer.tasks.data import EMPTY, column_names, is_stream
from hf_transfer.tasks.inputs import text_inputs
from hf_transfer.tasks.loaders import load_auto_processor, load_head_model


def input_columns(spec: TaskSpec) -> dict[str, str]:
    """Recipe key -> dataset column that the model reads."""
    cols = {"data.text_column": spec.data.text_column}
    if spec.data.text_pair_column:
        cols["data.text_pair_column"] = spec.data.text_pair_column
    return cols


def load_processor(spec: TaskSpec):
    from transformers import AutoTokenizer

    tok = load_auto_processor(AutoTokenizer, spec.model, "a tokenizer")
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelError(f"model.name_or_path: tokenizer of {spec.model.name_or_path!r} has no pad or eos token")
        tok.pad_token = tok.eos_token
    tok.model_max_length = spec.model.max_length  # saved: a Hub user's pipeline(truncation=True) cuts as training did
    return tok


def check_text(batch: dict[str, list[Any]], columns: dict[str, str]) -> None:
    """A one-line error for the first value of `columns` that is not a string."""
    for key, col in columns.items():
        bad = [v for v in batch[col] if not isinstance(v, str)]
        if bad:
            if bad[0] is None:
                raise DataError(f"{key}: a text in column {col!r} is {EMPTY}")
            raise DataError(f"{key}: column {col!r} holds a non-text value {bad[0]!r}")


def preprocess(splits, tokenizer, spec: TaskSpec):
    """Tokenize (truncate only: padding is dynamic, per batch, in the collator)."""
    text, pair = spec.data.text_column, spec.data.text_pair_column
    columns = input_columns(spec)

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, Any]:
        check_text(batch, columns)
        args = (batch[text], batch[pair]) if pair else (batch[text],)
        return tokenizer(*args, truncation=True, max_length=spec.model.max_length)

    out = {}
    for role, ds in splits.items():
        remove = [c for c in column_names(ds) if c != "labels"]
        # a stream (data.streaming) is tokenized lazily, batch by batch, as training reads it
        desc = {} if is_stream(ds) else {"desc": f"tokenize {role}"}
        out[role] = ds.map(tokenize, batched=True, remove_columns=remove, **desc)
    return out if any(is_stream(ds) for ds in out.values()) else type(splits)(out)


def collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def load_model(spec: TaskSpec, label_names: list[str] | None):
    from transformers import AutoModelForSequenceClassification

    kwargs = classification.head_config(spec, label_names)
    model = load_head_model(AutoModelForSequenceClassification, spec.model, "a sequence-classification model",
                            label_names, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model


def verify_inputs(spec: TaskSpec, split, processor=None):
    """The split's texts (or {text, text_pair} pairs) as the pipeline takes them, in column `inputs`; an empty or
    non-text value is refused as in training (the pipeline's tokenizer fails on it with a traceback)."""
    text, pair = spec.data.text_column, spec.data.text_pair_column
    columns = input_columns(spec)
    check_text(split.select_columns(list(columns.values()))[:], columns)
    if not pair:
        return split.select_columns([text]).rename_column(text, "inputs")
    return split.map(lambda ex: {"inputs": {"text": ex[text], "text_pair": ex[pair]}},
                     remove_columns=split.column_names)


def pipeline_kwargs(spec: TaskSpec) -> dict[str, Any]:
    """The pipeline truncates as training did."""
    return {"truncation": True, "max_length": spec.model.max_length}


TASK = classification.task(
    name="text-classification",
    modality="text",
    section=None,
    options=None,
    problem_types=classification.PROBLEM_TYPES,
    input_columns=input_columns,
    load_processor=load_processor,
    preprocess=preprocess,
    collator=collator,
    stochastic=DETERMINISTIC,
    training_defaults=dict,
    load_model=load_model,
    loss=NO_LOSS,
    pipeline_task="text-classification",
    auto_class="AutoModelForSequenceClassification",
    processor_arg="tokenizer",
    peft_task_type="SEQ_CLS",
    example='"Worked wonders, no side effects."',
    read_inputs=text_inputs,
    pipeline_kwargs=pipeline_kwargs,
    verify_inputs=verify_inputs,
    verify_after_training=True,
    streams=True,
)
