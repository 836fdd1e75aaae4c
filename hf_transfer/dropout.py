"""Dropout from cheaper random numbers when training on a CPU (`model.fast_dropout`).

A CPU draws torch's dropout masks one element at a time (`bernoulli_`: about 20 ms for one 16 x 12 x 128 x 128
attention-score tensor on the development host), and a training step of a BERT-family model draws one per
layer for the attention probabilities and two for its hidden states: 14 % of a text default step's CPU time
in fp32, 20 % in bf16 (BENCHMARKS.md, "Dropout's random numbers"). `FastDropout` is a TorchFunctionMode that
the trainer holds around each training step. In it, `F.dropout` and `F.scaled_dot_product_attention` with a
dropout probability draw their masks 16 bits an element, four elements from one 64-bit draw of torch's
default CPU generator (a seed fixes them, as it fixes torch's), and keep the mask as one byte an element for
the backward where torch keeps a float.

The distribution is dropout's: an element is kept with probability k = round((1 - p) * 2**16) / 2**16,
within 2**-17 of 1 - p, and scaled by 1 / k, so every element's expectation is unchanged. The masks differ
from torch's own (another stream), so a run's numbers differ from one without the mode, as between seeds.
Attention with dropout is computed as torch's unfused path computes it (scores, mask, softmax, dropout,
values; torch's fused kernels take no dropout on a CPU), except that the softmax's scale multiplies the query
and dropout's 1 / k the output. Whatever the mode does not handle (in-place dropout, causal or grouped-query
attention, a query that may attend to no key, tensors off the CPU or subclasses) goes to torch unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

LEVELS = 1 << 16  # a mask element is 16 random bits


def _level(keep: float) -> int:
    """How many of the 2**16 values of a lane keep the element."""
    return round(keep * LEVELS)


def keep_mask(shape: torch.Size, keep: float) -> tuple[torch.Tensor, float]:
    """A bool mask of `shape` whose elements are True with probability `k` (`keep` rounded to 2**-16), and k."""
    level = _level(keep)
    count = math.prod(shape)
    draws = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # all 64 bits random
    lanes = draws.view(torch.int16)[:count].view(shape)
    return lanes < level - LEVELS // 2, level / LEVELS


def _plain_cpu(*tensors) -> bool:
    return all(type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type == "cpu" and t.layout == torch.strided
               and t.is_floating_point() for t in tensors)


def _applies(p: float) -> bool:
    return isinstance(p, (int, float)) and 0 < _level(1 - p) < LEVELS


def _times(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x where the mask keeps it, else 0 (its gradient likewise). The bool mask is read as uint8, as 0 and 1, which
    is also what autograd keeps for the backward (torch keeps a float mask). On a CPU a product with a uint8 tensor
    runs vectorised: 2-3.4x faster than `where` with the bool mask and about 2x than a product with the bool itself
    (3.1 M elements, fp32 and bf16, on the development host)."""
    return x * mask.view(torch.uint8)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    mask, keep = keep_mask(x.shape, 1 - p)
    return _times(x, mask).mul_(1 / keep)


def _dropout(input, p=0.5, training=True, inplace=False):
    if not training or inplace or not _applies(p) or not _plain_cpu(input):
        return None
    return dropout(input, p)


def _attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if is_causal or enable_gqa or not _applies(dropout_p) or not _plain_cpu(query, key, value):
        return None
    if query.dim() < 2 or not (query.shape[:-2] == key.shape[:-2] == value.shape[:-2]
                               and query.shape[-1] == key.shape[-1] and key.shape[-2] == value.shape[-2]):
        return None  # torch names what is wrong
    if attn_mask is not None:
        shape = (*query.shape[:-1], key.shape[-2])
        if attn_mask.device.type != "cpu" or torch.broadcast_shapes(shape, attn_mask.shape) != shape:
            return None  # torch adds the mask to the scores in place and says what does not fit
        if attn_mask.dtype == torch.bool and not attn_mask.any(-1).all():
            return None  # a query with no key to attend to: torch gives it zeros, an unguarded softmax NaN
        if attn_mask.dtype != torch.bool and torch.isneginf(attn_mask).all(-1).any():
            return None
    # Both scales act on a smaller tensor than the scores (at 128 tokens and head size 32 the query and the output
    # are a quarter of their size): two passes fewer over the scores forward, and two over their gradient.
    query = query * (query.shape[-1] ** -0.5 if scale is None else scale)
    scores = torch.matmul(query, key.transpose(-2, -1))
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        # -inf where the mask says no, added in place: no copy of the scores here or in the backward
        scores = scores.add_(torch.zeros(attn_mask.shape, dtype=scores.dtype).masked_fill_(~attn_mask, -math.inf))
    elif attn_mask is not None:
        scores = scores + attn_mask
    probs = torch.softmax(scores, dim=-1)
    mask, keep = keep_mask(probs.shape, 1 - dropout_p)
    return torch.matmul(_times(probs, mask), value).mul_(1 / keep)


_HANDLERS = {F.dropout: _dropout, F.scaled_dot_product_attention: _attention}


class FastDropout(TorchFunctionMode):
    """Held around a training step: dropout and attention dropout from `keep_mask`'s masks (module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        out = handler(*args, **kwargs) if handler is not None else None
        return func(*args, **kwargs) if out is None else out


def fast_dropout_applies(choice: bool, args) -> bool:
    """`model.fast_dropout` where it applies: training on a CPU, eager (torch_compile traces its own dropout),
    and without activation checkpointing, whose recomputation in the backward runs outside the mode and
    would draw torch's masks (torch.utils.checkpoint stops on the mismatch)."""
    return bool(choice) and args.device.type == "cpu" and not args.torch_compile and not args.activation_checkpointing
