"""Recipe YAML loading, `a.b.c=value` overrides and validation into the typed schema.

The section dataclasses live in `hf_transfer.schema`; `validate` builds them from the YAML mapping,
rejecting unknown keys and wrong types, and checks the rules that span sections. `training` is
checked against `transformers.TrainingArguments`'s own fields. Every error names the key path and
fits on one line.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from hf_transfer.errors import RecipeError
from hf_transfer.schema import (
    MODALITIES,
    STRATEGY_CONFIGS,
    CVConfig,
    DataConfig,
    DistillConfig,
    DomainConfig,
    HubConfig,
    ModelConfig,
    Recipe,
    TaskConfig,
)


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """Safe loader that reads scalars the YAML 1.2 way: `2e-5` is a float, `no`/`on` are strings."""


_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_12, list("tTfF"))


def parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"{where}: invalid YAML{at}: {problem}") from None


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, path: str) -> Any:
    """Return `value` converted to `tp`, or raise RecipeError naming `path`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in sorted(args, key=lambda a: a is str):  # try str last: it accepts little
            try:
                return _check_value(value, arg, path)
            except RecipeError:
                continue
        raise RecipeError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise RecipeError(f"{path}: expected one of {', '.join(map(repr, args))}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is list:
        if isinstance(value, list):
            return [_check_value(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return {str(k): _check_value(v, args[1], f"{path}.{k}") for k, v in value.items()}
    elif dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(tp, type) and issubclass(tp, str) and tp is not str:  # str enums
        if isinstance(value, str):
            return value
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:
        return value  # an annotation we do not check (e.g. a callable)
    raise RecipeError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise RecipeError(
                f"{path}.{key}: unknown key (allowed: {', '.join(fields)})".lstrip(".")
            )
    kwargs = {}
    for name, f in fields.items():
        where = f"{path}.{name}".lstrip(".")
        if name in data:
            kwargs[name] = _check_value(data[name], hints[name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{where}: required key is missing")
    return cls(**kwargs)


def _build_finetune(data: Any) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"finetune: expected a mapping, got {data!r}")
    strategy = data.get("strategy", "full")
    if strategy not in STRATEGY_CONFIGS:
        raise RecipeError(
            f"finetune.strategy: unknown strategy {strategy!r} "
            f"(choose from {', '.join(STRATEGY_CONFIGS)})"
        )
    cls = STRATEGY_CONFIGS[strategy]
    allowed = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in allowed:
            raise RecipeError(
                f"finetune.{key}: not an option of strategy {strategy!r} "
                f"(its options: {', '.join(sorted(allowed))})"
            )
    return build(cls, data, "finetune")


SECRET_FIELDS = ("hub_token",)  # would be pickled into checkpoints' training_args.bin


def _check_training(data: Any) -> dict[str, Any]:
    from transformers import TrainingArguments  # deferred: heavy import

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"training: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
    hints = typing.get_type_hints(TrainingArguments)
    out = {}
    for key, value in data.items():
        if key not in fields:
            raise RecipeError(f"training.{key}: not a transformers.TrainingArguments field")
        if key in SECRET_FIELDS and value:
            raise RecipeError(
                f"training.{key}: never put tokens in a recipe; set HF_TOKEN or run `hf auth login`"
            )
        out[key] = _check_value(value, hints.get(key, Any), f"training.{key}")
    return out


def validate(raw: Any) -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe: expected a mapping of sections, got {raw!r}")
    sections = {f.name for f in dataclasses.fields(Recipe)}
    for key in raw:
        if key not in sections:
            raise RecipeError(f"{key}: unknown section (allowed: {', '.join(sections)})")
    for key in ("model", "data"):
        if key not in raw:
            raise RecipeError(f"{key}: required section is missing")
    model = build(ModelConfig, raw["model"], "model")
    if model.modality not in MODALITIES:
        raise RecipeError(
            f"model.modality: unknown modality {model.modality!r} (choose from {', '.join(MODALITIES)})"
        )
    sections = {}
    for name in ("vision", "speech"):
        cls = MODALITIES.get(name)
        if raw.get(name) is not None and model.modality != name:  # a saved recipe has `vision: null`
            raise RecipeError(f"{name}: section only applies with model.modality: {name}")
        if model.modality == name and cls is not None:
            sections[name] = build(cls, raw.get(name), name)
    recipe = Recipe(
        model=model,
        data=build(DataConfig, raw["data"], "data"),
        finetune=_build_finetune(raw.get("finetune")),
        training=_check_training(raw.get("training")),
        early_stopping_patience=_check_value(
            raw.get("early_stopping_patience"), int | None, "early_stopping_patience"
        ),
        nan_policy=_check_value(raw.get("nan_policy", "stop"), Literal["stop", "skip"], "nan_policy"),
        hub=_build_hub(raw.get("hub")),
        verify=_check_value(raw.get("verify", True), bool, "verify"),
        compare=_check_compare(raw),
        **_build_objectives(raw),
        tasks=None if raw.get("tasks") is None else _check_value(raw["tasks"], list[TaskConfig], "tasks"),
        cv=None if raw.get("cv") is None else build(CVConfig, raw["cv"], "cv"),
        **sections,
    )
    from hf_transfer import cv, multitask  # each checks its section against the rest of the recipe

    multitask.check(recipe)
    cv.check(recipe)
    return recipe


def _build_objectives(raw: dict[str, Any]) -> dict[str, Any]:
    """The optional `distill` and `domain` sections (training objectives added to the task loss)."""
    sections = {"distill": DistillConfig, "domain": DomainConfig}
    out = {key: None if raw.get(key) is None else build(cls, raw[key], key) for key, cls in sections.items()}
    problem = (raw.get("data") or {}).get("problem_type", "single_label_classification")
    if out["distill"] is not None and problem != "single_label_classification":
        raise RecipeError(f"distill: needs data.problem_type single_label_classification, got {problem!r}")
    finetune = raw.get("finetune") or {}
    if out["domain"] is not None and finetune.get("strategy") == "partial" and finetune.get("freeze", "backbone") == "backbone":
        raise RecipeError("domain: the backbone is frozen (finetune.freeze: backbone), so its features cannot adapt")
    if any(out.values()) and finetune.get("cache_features"):
        raise RecipeError("finetune.cache_features: not available with distill or domain (they need the backbone's forward)")
    return out


def _build_hub(data: Any) -> HubConfig:
    hub = build(HubConfig, data, "hub")
    if hub.push and not hub.repo_id:
        raise RecipeError("hub.repo_id: required when hub.push is true")
    return hub


def _check_compare(raw: dict[str, Any]) -> Any:
    value = _check_value(raw.get("compare"), typing.get_type_hints(Recipe)["compare"], "compare")
    if value:
        from hf_transfer.report import check_compare  # the report module owns the variants

        check_compare(raw, value)
    return value


# --------------------------------------------------------------------------- loading


def apply_override(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `raw[a][b][c] = value` for `dotted == "a.b.c"`, creating sections as needed."""
    keys = dotted.split(".")
    if not all(keys):
        raise RecipeError(f"{dotted}: malformed override key")
    node = raw
    for i, key in enumerate(keys[:-1]):
        nxt = node.get(key)
        if nxt is None:
            nxt = node[key] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"{'.'.join(keys[: i + 1])}: is not a section, cannot set {dotted}")
        node = nxt
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b.c=value` -> ("a.b.c", value parsed as YAML 1.2)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise RecipeError(f"{text}: an override must look like section.key=value")
    return key.strip(), parse_yaml(value, f"override {key}") if value.strip() else None


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: cannot read recipe ({err.__class__.__name__})") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raise RecipeError(f"{path}: recipe is empty")
    return raw


def load_recipe(
    source: str | Path | dict[str, Any] | Recipe,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Recipe:
    """Load a recipe from a YAML path, a dict or a Recipe, apply overrides, validate."""
    if isinstance(source, Recipe):
        source = source.to_dict()
    if isinstance(source, (str, Path)):
        raw = read_recipe_file(source)
    else:
        raw = copy.deepcopy(source)
    if isinstance(overrides, dict):
        pairs = list(overrides.items())
    else:
        pairs = [parse_override(o) for o in overrides or []]
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe: expected a mapping of sections, got {raw!r}")
    for key, value in pairs:
        apply_override(raw, key, value)
    return validate(raw)


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML, with secret-looking values (tokens) redacted."""
    from hf_transfer.guards import redact

    return yaml.safe_dump(redact(recipe.to_dict()), sort_keys=False)
