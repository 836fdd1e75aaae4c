"""Loading a pretrained model or processor as the recipe's `model` section asks, for every task.

`from_pretrained` (or `from_config` when `model.pretrained` is false) at the recipe's revision, with the
safety defaults: safetensors only unless `model.allow_pickle`, remote code only when
`model.trust_remote_code` says so. Errors name `model.name_or_path` in one line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hf_transfer.anatomy import output_layers
from hf_transfer.folder import not_a_model
from hf_transfer.errors import ModelError, RecipeError, first_line
from hf_transfer.recipe.schema import ModelConfig

log = logging.getLogger(__name__)


# what from_pretrained raises for files it cannot read (a corrupt or truncated weights file included)
LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, RuntimeError, EOFError)
try:
    from safetensors import SafetensorError

    LOAD_ERRORS += (SafetensorError,)
except ImportError:  # an old safetensors names it elsewhere; RuntimeError covers the rest
    pass


def model_source(name_or_path: str) -> str:
    """A local folder becomes an absolute path (so adapters name it unambiguously)."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else name_or_path


def is_path(name: str) -> bool:
    """Written as a path, not as a Hub id (org/name): absolute, ~, ./, ../, or more than one /."""
    return name.startswith(("/", "~", "./", "../")) or name.count("/") > 1


def missing_folder(name: str) -> str | None:
    """Why `name` cannot be a model folder or Hub id, without asking the Hub: a file, or a path written as
    one (is_path) that does not exist; None when it may be either."""
    path = Path(name).expanduser()
    if path.is_file():
        return f"{name!r} is a file, not a model folder"
    if not path.exists() and is_path(name):
        return f"{name!r}: no such folder (and not a Hub id)"
    return None


def load_error(model: ModelConfig, what: str, err: Exception) -> ModelError:
    name = model.name_or_path
    path = Path(name).expanduser()
    text = first_line(err)
    if path.is_dir() and not (path / "config.json").is_file():  # a cv / seeds / multi-task root names its models
        text = not_a_model(path) or f"the folder {path} holds no config.json (not a saved model folder)"
    elif path.is_file():
        text = "a file, not a model folder"
    elif not path.exists() and is_path(name):
        text = f"no such folder {path}"
    elif "custom code" in text:
        text = "it ships custom Python code; set model.trust_remote_code: true only if you trust it"
    elif type(err).__name__ == "SafetensorError" or "deserializ" in text:
        text = f"a weights file is corrupt or truncated ({text})"
    return ModelError(f"model.name_or_path: cannot load {what} from {name!r}: {text}")


def load_auto_processor(auto_cls, model: ModelConfig, what: str):
    """`auto_cls.from_pretrained` (a tokenizer, feature extractor or image processor) for the recipe's
    model, at its revision, remote code only if the recipe allows it; errors name model.name_or_path."""
    try:
        return auto_cls.from_pretrained(
            model_source(model.name_or_path), revision=model.revision, trust_remote_code=model.trust_remote_code,
        )
    except LOAD_ERRORS as err:
        raise load_error(model, what, err) from None


def load_auto_model(auto_cls, model: ModelConfig, what: str, pretrained_kwargs: dict[str, Any] | None = None,
                    **kwargs):
    """`auto_cls.from_pretrained` (or `from_config` when model.pretrained is false), with the safety
    defaults. `kwargs` go to the config; `pretrained_kwargs` to `from_pretrained` only."""
    from transformers import AutoConfig

    source = model_source(model.name_or_path)
    common = {"revision": model.revision, "trust_remote_code": model.trust_remote_code}
    kwargs = with_config_overrides(model, kwargs)
    try:
        if model.pretrained:
            use_safetensors = None if model.allow_pickle else True
            return auto_cls.from_pretrained(
                source, use_safetensors=use_safetensors, **common, **(pretrained_kwargs or {}), **kwargs
            )
        config = AutoConfig.from_pretrained(source, **common, **kwargs)
        return auto_cls.from_config(config, trust_remote_code=model.trust_remote_code)
    except LOAD_ERRORS as err:
        raise load_error(model, what, err) from None


def load_head_model(auto_cls, model: ModelConfig, what: str, label_names: list[str] | None, **kwargs):
    """`load_auto_model` of a model with a classification head for `label_names` (None: one output; `kwargs`:
    the head's config). A base checkpoint that is itself a classifier (a fine-tuned run: sequential transfer)
    keeps its head where that head predicts the same labels, its rows put in the order of `label_names`
    (from_pretrained reads them by position: the same names in another order were swapped, silently); a head
    of another size (an ImageNet classifier's 1,000 classes) is a new one (text refused it:
    'ignore_mismatched_sizes')."""
    head = _base_head(model) if model.pretrained else None
    new = list(label_names) if label_names else ["LABEL_0"]
    resized = head is not None and len(head) != len(new)
    loaded = load_auto_model(auto_cls, model, what, {"ignore_mismatched_sizes": True} if resized else None,
                             **kwargs)
    reorder_head(loaded, head, new, model)
    return loaded


def reorder_head(loaded, head: list[str] | None, new: list[str], cfg: ModelConfig) -> None:
    """Where the base's head (`head`: its label names) predicts the labels `new` in another order, its output rows
    put in the order of `new`."""
    head = [str(name) for name in head or []]
    if head and len(head) == len(new) and head != new and sorted(head) == sorted(new):
        _reorder_outputs(loaded, [head.index(name) for name in new], cfg)


def _base_head(model: ModelConfig) -> list[str] | None:
    """The label names of the base checkpoint's classification head (transformers' LABEL_0, ... where it names
    none), or None when it is no classifier (its architecture is not a ...Classification one; a config that
    names no architecture may hold a head)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_source(model.name_or_path), revision=model.revision,
                                            trust_remote_code=model.trust_remote_code)
    except LOAD_ERRORS:
        return None  # the model's own load says what is wrong
    architectures = getattr(config, "architectures", None)
    if architectures and not any(a.endswith("Classification") for a in architectures):
        return None
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label[i]) for i in sorted(id2label)]


def _reorder_outputs(model, order: list[int], cfg: ModelConfig) -> None:
    """Rows of the one output layer (the Linear with one output per label) taken in `order`."""
    import torch

    outputs = output_layers(model, len(order))
    if len(outputs) != 1:
        log.warning("model.name_or_path: %s predicts the same labels in another order, and its output layer is not "
                    "one Linear of %d outputs; its head is kept as it is", cfg.name_or_path, len(order))
        return
    index = torch.tensor(order)
    with torch.no_grad():
        for p in outputs[0].parameters():
            p.copy_(p[index])
    log.info("model.name_or_path: the head of %s predicts the same labels; its rows follow data.label_names",
             cfg.name_or_path)


def with_config_overrides(model: ModelConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` plus the recipe's model.config_overrides (which may not replace what hf-transfer sets)."""
    overrides = model.config_overrides or {}
    for key in overrides:
        if key in kwargs:
            raise RecipeError(f"model.config_overrides.{key}: set by hf-transfer from the data, not overridable")
    return {**kwargs, **overrides}
