"""The arguments of the commands on a saved folder (predict, evaluate, verify, serve), checked the same way
from the command line (cli.py's argparse types) and from Python, so both refuse a value with one line
naming the argument instead of failing deep inside torch or a pipeline."""

from __future__ import annotations

import math
import os
from typing import Any

from hf_transfer.errors import HfTransferError

INT_MAX = 2**31 - 1  # a count beyond int32 overflows in torch


def is_count(value: Any) -> bool:
    """An integer from 1 to INT_MAX (top_k, batch sizes)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= INT_MAX


def is_tolerance(value: Any) -> bool:
    """A finite number >= 0 (verify's tolerance, serve's batch timeout)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def require_count(command: str, name: str, value: Any) -> None:
    if not is_count(value):
        raise HfTransferError(f"{command}: {name} must be an integer from 1 to {INT_MAX}, got {value!r}")


def require_tolerance(command: str, name: str, value: Any) -> None:
    if not is_tolerance(value):
        raise HfTransferError(f"{command}: {name} must be a finite number >= 0, got {value!r}")


def as_paths(command: str, items: Any, what: str) -> list[str]:
    """A list of strings from a list of strings or paths; one string or path is a list of one. None, a
    number or an empty list is refused (a string is never split into its characters)."""
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise HfTransferError(f"{command}: {what} must be a list of strings or paths, got {type(items).__name__}")
    wrong = [item for item in items if not isinstance(item, (str, os.PathLike))]
    if wrong:
        raise HfTransferError(f"{command}: {what} must be strings or paths, got {wrong[0]!r}")
    if not items:
        raise HfTransferError(f"{command}: no {what} given")
    return [os.fspath(item) for item in items]
