"""Typed building of recipe sections: a mapping checked against a dataclass's annotations.

Unknown keys and wrong types are one-line RecipeErrors naming the key path; ints are accepted where a
float is expected, never the reverse; a union tries its members (str last) and, when the value has the shape
of one member (a mapping, a list), reports that member's own error. Values a notebook passes (numpy scalars,
`pathlib.Path`, tuples, 1-D numpy arrays) are taken as the Python numbers, text and lists a YAML file gives.
A float must be finite (YAML `.nan`, `.inf` are refused) and an int must fit in 64 bits, whatever the key; a section's own ranges are
its dataclass's `__post_init__` (see `check_range`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from typing import Any, Literal

import numpy as np

from hf_transfer.errors import RecipeError

INT32_MAX = 2**31 - 1
_INT64 = 2**63


class RangeError(RecipeError):
    """A value of the right type out of its range: a union reports it rather than trying other members."""


def check_range(value: Any, path: str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise RangeError naming `path` unless `low <= value <= high` (`low_open`/`high_open`: strict);
    None (an unset optional key) passes."""
    if value is None:
        return
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not (below or above):
        return
    if below and (high is None or high >= INT32_MAX):
        rule = f"{'>' if low_open else '>='} {_num(low)}"
    elif above and (low is None or high >= INT32_MAX):
        rule = f"{'<' if high_open else '<='} {_num(high)}"
    else:
        rule = f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    raise RangeError(f"{path}: must be {rule}, got {value!r}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def plain(value: Any, deep: bool = True) -> Any:
    """A Python-API value as a YAML recipe holds it: numpy scalars as Python numbers and bools, paths as text,
    tuples and 1-D arrays as lists; `deep`: inside mappings and lists too (keys included)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple) or (isinstance(value, np.ndarray) and value.ndim == 1):
        value = list(value)
    if deep and isinstance(value, list):
        return [plain(v) for v in value]
    if deep and isinstance(value, dict):
        return {plain(k, deep=False): plain(v) for k, v in value.items()}
    return value


def _same_shape(value: Any, tp: Any) -> bool:
    """Is `value` the container `tp` names (a mapping for dict[...], a list for list[...])?"""
    origin = typing.get_origin(tp)
    return (origin is dict and isinstance(value, dict)) or (origin is list and isinstance(value, list))


def check_value(value: Any, tp: Any, path: str) -> Any:
    """Return `value` converted to `tp`, or raise RecipeError naming `path`."""
    value = plain(value, deep=False)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        sections = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(sections) == 1:  # an optional section: its own errors, by key
            return build(sections[0], value, path)
        for arg in sorted(args, key=lambda a: a is str):  # try str last: it accepts little
            try:
                return check_value(value, arg, path)
            except RangeError:
                raise
            except RecipeError:
                if _same_shape(value, arg):  # e.g. a mapping with one bad entry: that entry's error
                    raise
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
            return [check_value(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return {str(k): check_value(v, args[1], f"{path}.{k}") for k, v in value.items()}
    elif dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) >= _INT64:
                raise RangeError(f"{path}: out of range, got an integer beyond 2**63")
            if not math.isfinite(value):
                raise RangeError(f"{path}: must be a finite number, got {value!r}")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= _INT64:
                raise RangeError(f"{path}: out of range, got an integer beyond 2**63")
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
            kwargs[name] = check_value(data[name], hints[name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{where}: required key is missing")
    return cls(**kwargs)
