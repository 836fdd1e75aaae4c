"""What a user sees while hf-transfer works: progress bars on its long steps.

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

import os
from typing import Any

DELAY_S = 1.0  # a bar appears once its step has run this long


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
