"""Recipe files as data: YAML read the YAML 1.2 way, `a.b.c=value` overrides, and the resolved recipe
written back (with secret-looking values redacted). Nothing here knows the schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from hf_transfer.errors import RecipeError, not_utf8

# `token` is a secret unless it names text tokens (token_classification:, tokens_column, tokenizer...)
_SECRET_KEY = re.compile(r"token(?!s_column|_classification|izer)|secret|password|api_key", re.I)
REDACTED = "<redacted>"


class _Loader(yaml.SafeLoader):
    """Safe loader that reads scalars the YAML 1.2 way: `2e-5` is a float, `no`/`on` are strings; a key
    given twice in one mapping is an error (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overriding its keys is fine
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base constructor reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (a key may appear once per mapping)", key_node.start_mark
                    )
        return super().construct_mapping(node, deep=deep)


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
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise RecipeError(f"{where}: invalid YAML: {str(err).splitlines()[0]}") from None


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
    if path.is_dir():
        raise RecipeError(f"{path}: is a folder; give the recipe's YAML file (e.g. {path}/recipe.yaml)")
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: {not_utf8(err)}") from None
    except OSError as err:
        raise RecipeError(f"{path}: cannot read recipe ({err.strerror or err.__class__.__name__})") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raise RecipeError(f"{path}: recipe is empty")
    return raw


def dump_yaml(data: dict[str, Any]) -> str:
    """A resolved recipe (Recipe.to_dict()) as YAML, with secret-looking values (tokens) redacted."""
    return yaml.safe_dump(redact(data), sort_keys=False)


def redact(data: Any) -> Any:
    """A copy of `data` with the values of secret-looking keys (token, password ...) removed."""
    if isinstance(data, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) and v else redact(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data
