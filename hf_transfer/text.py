"""Text modality: AutoTokenizer + AutoModelForSequenceClassification (BERT family and kin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_transfer.errors import DataError, ModelError, RecipeError
from hf_transfer.schema import Recipe


def input_columns(recipe: Recipe) -> dict[str, str]:
    """Recipe key -> dataset column that the model reads."""
    cols = {"data.text_column": recipe.data.text_column}
    if recipe.data.text_pair_column:
        cols["data.text_pair_column"] = recipe.data.text_pair_column
    return cols


def model_source(name_or_path: str) -> str:
    """A local folder becomes an absolute path (so adapters name it unambiguously)."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else name_or_path


def _load_error(recipe: Recipe, what: str, err: Exception) -> ModelError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
    if "custom code" in text:
        text = "it ships custom Python code; set model.trust_remote_code: true only if you trust it"
    return ModelError(f"model.name_or_path: cannot load {what} from {recipe.model.name_or_path!r}: {text}")


def load_auto_processor(auto_cls, recipe: Recipe, what: str):
    """`auto_cls.from_pretrained` (a tokenizer, feature extractor or image processor) for the recipe's
    model, at its revision, remote code only if the recipe allows it; errors name model.name_or_path."""
    try:
        return auto_cls.from_pretrained(
            model_source(recipe.model.name_or_path),
            revision=recipe.model.revision,
            trust_remote_code=recipe.model.trust_remote_code,
        )
    except (OSError, ValueError, KeyError) as err:
        raise _load_error(recipe, what, err) from None


def load_processor(recipe: Recipe):
    from transformers import AutoTokenizer

    tok = load_auto_processor(AutoTokenizer, recipe, "a tokenizer")
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelError(f"model.name_or_path: tokenizer of {recipe.model.name_or_path!r} has no pad or eos token")
        tok.pad_token = tok.eos_token
    return tok


def preprocess(splits, tokenizer, recipe: Recipe):
    """Tokenize (truncate only: padding is dynamic, per batch, in the collator)."""
    text, pair = recipe.data.text_column, recipe.data.text_pair_column

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, Any]:
        for key, col in input_columns(recipe).items():
            bad = [v for v in batch[col] if not isinstance(v, str)]
            if bad:
                raise DataError(f"{key}: column {col!r} holds a non-text value {bad[0]!r}")
        args = (batch[text], batch[pair]) if pair else (batch[text],)
        return tokenizer(*args, truncation=True, max_length=recipe.model.max_length)

    out = {}
    for role, ds in splits.items():
        remove = [c for c in ds.column_names if c != "labels"]
        out[role] = ds.map(tokenize, batched=True, remove_columns=remove, desc=f"tokenize {role}")
    return type(splits)(out)


def collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def load_auto_model(auto_cls, recipe: Recipe, what: str, pretrained_kwargs: dict[str, Any] | None = None, **kwargs):
    """`auto_cls.from_pretrained` (or `from_config` when model.pretrained is false), with the safety
    defaults: safetensors only unless model.allow_pickle, remote code only if the recipe allows it.
    `kwargs` go to the config; `pretrained_kwargs` to `from_pretrained` only."""
    from transformers import AutoConfig

    source = model_source(recipe.model.name_or_path)
    common = {"revision": recipe.model.revision, "trust_remote_code": recipe.model.trust_remote_code}
    kwargs = with_config_overrides(recipe, kwargs)
    try:
        if recipe.model.pretrained:
            use_safetensors = None if recipe.model.allow_pickle else True
            return auto_cls.from_pretrained(
                source, use_safetensors=use_safetensors, **common, **(pretrained_kwargs or {}), **kwargs
            )
        config = AutoConfig.from_pretrained(source, **common, **kwargs)
        return auto_cls.from_config(config, trust_remote_code=recipe.model.trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise _load_error(recipe, what, err) from None


def with_config_overrides(recipe: Recipe, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` plus the recipe's model.config_overrides (which may not replace what hf-transfer sets)."""
    overrides = recipe.model.config_overrides or {}
    for key in overrides:
        if key in kwargs:
            raise RecipeError(f"model.config_overrides.{key}: set by hf-transfer from the data, not overridable")
    return {**kwargs, **overrides}


def load_model(recipe: Recipe, label_names: list[str] | None):
    from transformers import AutoModelForSequenceClassification

    num_labels = len(label_names) if label_names else 1
    kwargs: dict[str, Any] = {"num_labels": num_labels, "problem_type": recipe.data.problem_type}
    if label_names:
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    model = load_auto_model(AutoModelForSequenceClassification, recipe, "a sequence-classification model", **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model
