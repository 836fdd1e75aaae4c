"""What a user sees while hf-transfer works: progress bars on its long steps, and its log lines from Python.

One rule for every bar hf-transfer draws (asset preparation, cached features and teacher logits, verify,
predict, evaluate, rank): a bar is huggingface_hub's tqdm — what transformers, datasets and the Hub client
draw with, on stderr (a widget in a notebook) — and it is shown unless

- the caller turns it off (a run's `training.disable_tqdm`, which also turns off the Trainer's bar),
- progress bars are off for the Hugging Face libraries (`HF_HUB_DISABLE_PROGRESS_BARS=1`, or
  `huggingface_hub.utils.disable_progress_bars()`),
- this process is not the first on its machine under a launcher (`LOCAL_RANK` other than 0), as the
  Trainer's bar.

As those libraries' bars, it is drawn whether or not stderr is a terminal (a log file gets its updates),
and only for a step that lasts longer than DELAY_S: a short one leaves no trace.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any

from hf_transfer.distributed import log_level

DELAY_S = 1.0  # a bar appears once its step has run this long
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"  # the command line's, and the Python API's


@contextmanager
def datasets_quiet():
    """datasets' own bars off for a step whose bars say nothing to the user (reading a table to predict, saving
    a verify split), as they were before."""
    import datasets

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def bar_options(desc: str | None = None, unit: str = "ex", disable: bool | None = False,
                leave: bool = True) -> dict[str, Any] | None:
    """tqdm's keyword arguments for a bar under the rule above, or None where no bar is shown. (The
    round-trip check's separate process draws its bar from these.)"""
    from huggingface_hub.utils import are_progress_bars_disabled

    if disable or are_progress_bars_disabled() or os.environ.get("LOCAL_RANK", "0") not in ("", "0"):
        return None
    return {"desc": desc, "unit": unit, "delay": DELAY_S, "leave": leave, "dynamic_ncols": True}


def progress(total: int | None, desc: str, unit: str = "ex", disable: bool | None = False, leave: bool = True):
    """A progress bar (tqdm: `update(n)`, `close()`, a context manager) over `total` units; a silent one
    where the rule says no bar."""
    from huggingface_hub.utils import tqdm

    options = bar_options(desc, unit, disable, leave)
    return tqdm(total=total, **options) if options else tqdm(total=total, disable=True)


class _Stderr(logging.StreamHandler):
    """Writes to the sys.stderr of the moment (a notebook or a test may replace it after the handler is made);
    quiet once the root logger has a handler: the application configured logging and shows these lines."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.addFilter(lambda record: not logging.getLogger().handlers)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_logs() -> None:
    """The Python API (`hf_transfer.finetune`): hf-transfer's INFO lines (WARNING on the other processes of a
    launcher) on stderr, as the command line shows them, through a handler on the `hf_transfer` logger.
    The root logger is left alone. Where it has a handler (the application configured logging, or the
    command line did) nothing is added: its configuration decides; and a handler added before the
    application configures logging goes quiet then, so no line is shown twice. Called again, it adds nothing."""
    logger = logging.getLogger("hf_transfer")
    if logging.getLogger().handlers or any(isinstance(h, _Stderr) for h in logger.handlers):
        return
    logger.addHandler(_Stderr())
    if logger.level == logging.NOTSET:  # a level the application set stays
        logger.setLevel(log_level())
