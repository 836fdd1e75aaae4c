"""The numbers and lists the commands take, checked the same way from the command line (the argparse types
below) and from Python (predict, evaluate, verify, serve call the `require_*` checks), so both refuse a value
with one line naming the argument instead of failing deep inside torch or a pipeline."""

from __future__ import annotations

import argparse
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

from hf_transfer.errors import HfTransferError
from hf_transfer.recipe.typed import INT32_MAX as INT_MAX  # a count beyond int32 overflows in torch; as recipes


def _integer(value: Any) -> bool:
    """An int or a numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_count(value: Any) -> bool:
    """An integer from 1 to INT_MAX (top_k, batch sizes)."""
    return _integer(value) and 1 <= value <= INT_MAX


def is_tolerance(value: Any) -> bool:
    """A finite number >= 0 (verify's tolerance, serve's batch timeout)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def is_port(value: Any) -> bool:
    """A TCP port, 0 to 65535 (0: a free one)."""
    return _integer(value) and 0 <= value <= 65535


def require_count(command: str, name: str, value: Any) -> int:
    """`value` as an int (a numpy integer too), or one line naming `name`."""
    if not is_count(value):
        raise HfTransferError(f"{command}: {name} must be an integer from 1 to {INT_MAX}, got {value!r}")
    return int(value)


def require_tolerance(command: str, name: str, value: Any) -> float:
    """`value` as a float, or one line naming `name`."""
    if not is_tolerance(value):
        raise HfTransferError(f"{command}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def as_paths(command: str, items: Any, what: str) -> list[str]:
    """A list of strings from strings or paths (a list, tuple, generator or array of them); one string or path is
    a list of one. None, a number, a mapping or nothing at all is refused (a string is never split into its
    characters)."""
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    elif isinstance(items, Iterable) and not isinstance(items, (bytes, Mapping)):
        items = list(items)  # a tuple, a generator, a numpy array of strings
    if not isinstance(items, list):
        raise HfTransferError(f"{command}: {what} must be a list of strings or paths, got {type(items).__name__}")
    wrong = [item for item in items if not isinstance(item, (str, os.PathLike))]
    if wrong:
        raise HfTransferError(f"{command}: {what} must be strings or paths, got {wrong[0]!r}")
    if not items:
        raise HfTransferError(f"{command}: no {what} given")
    return [os.fspath(item) for item in items]


# ----------------------------------------------------------------------------- argparse types


def _argparse_type(parse, ok, expected: str, must: str, doc: str):
    """An argparse `type=`: `parse(text)` (ValueError: not `expected`), then `ok(value)` (else: must be `must`)."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {must}, got {text!r}")
        return value

    convert.__doc__ = doc
    return convert


count_type = _argparse_type(int, is_count, "an integer", f"an integer from 1 to {INT_MAX}",
                            "--top-k, --batch-size, ...: an integer from 1 to INT_MAX.")
tolerance_type = _argparse_type(float, is_tolerance, "a number", "a finite number >= 0",
                                "--tolerance, --timeout, ...: a finite number >= 0.")
ratio_type = _argparse_type(float, lambda v: v >= 1, "a number", "a number >= 1 (inf: none)",
                            "--outlier-ratio: a number >= 1, or inf.")


def port_type(text: str) -> int:
    """--port: 0 to 65535 (0: a free one)."""
    if not text.isdigit() or not is_port(int(text)):
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text!r}")
    return int(text)
