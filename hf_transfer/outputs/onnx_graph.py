"""What `hf-transfer export` traces and how: the tensors a pipeline gives its model, the torch.export-based
exporter over them, and the figures the round-trip check compares (logits, a CTC model's frame logits, a
Whisper model's logits step by step)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from hf_transfer.errors import HfTransferError
from hf_transfer.outputs.hubuser import logits, word_logits
from hf_transfer.outputs.quantize import quiet

OPSET = 18
# graph input -> its dynamic axes (optimum's names); other axes keep the traced size (an image's height and
# width, Whisper's mel frames: the model was built for them)
AXES = {
    "input_ids": ("batch_size", "sequence_length"),
    "attention_mask": ("batch_size", "sequence_length"),
    "token_type_ids": ("batch_size", "sequence_length"),
    "pixel_values": ("batch_size",),
    "input_features": ("batch_size",),
    "input_values": ("batch_size", "sequence_length"),
}

STEPS = 8
"""Decoding steps the check of a Whisper export compares (the first with the prompt, the others with the cache)."""


def export_error(message: str) -> HfTransferError:
    return HfTransferError(f"export: {message}")


def raw_scores(pipe, task, inputs: list, batch_size: int, kwargs: dict):
    """The pipeline's raw logits: one row per input, per word (token classification) or per audio frame
    (a CTC recogniser)."""
    if task.score_texts:
        return frame_logits(pipe, inputs, batch_size)
    read = word_logits if task.entities else logits
    return read(pipe, inputs, batch_size, **kwargs)


def is_ctc(model) -> bool:
    """A CTC recogniser: one forward pass gives every frame's character logits (no generation)."""
    return any(name.endswith("ForCTC") for name in [type(model).__name__, *(model.config.architectures or [])])


def frame_logits(pipe, inputs: list, batch_size: int) -> np.ndarray:
    """A CTC model's per-frame logits ([inputs, most frames, vocabulary]; NaN past a batch's frames): the
    clips batched and padded by the pipeline's feature extractor, as the pipeline prepares one."""
    fe, rows = pipe.feature_extractor, []
    for start in range(0, len(inputs), batch_size):
        waves = [clip["raw"] for clip in inputs[start:start + batch_size]]
        enc = fe(waves, sampling_rate=fe.sampling_rate, padding=True, return_tensors="pt")
        with torch.no_grad():
            rows.extend(pipe.model(**enc).logits.float().numpy())
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width, rows[0].shape[-1] if rows else 0), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


class Logits(torch.nn.Module):
    """The model's logits from the dict of tensors the pipeline feeds it (the graph's inputs, in order)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**inputs).logits


def model_inputs(pipe, task, inputs: list, batch_size: int, kwargs: dict) -> list[dict[str, torch.Tensor]]:
    """The tensors the pipeline gives its model, batch by batch (read by a hook on the model's forward)."""
    seen: list[dict[str, torch.Tensor]] = []

    def keep(module, args, given):
        seen.append({k: v for k, v in given.items() if isinstance(v, torch.Tensor)})

    handle = pipe.model.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        raw_scores(pipe, task, inputs, batch_size, kwargs)
    finally:
        handle.remove()
    return seen


def example(pipe, task, inputs: list, kwargs: dict) -> dict[str, torch.Tensor]:
    """What the exporter traces: the tensors the pipeline gives its model for a batch of two of `inputs`."""
    (seen,) = model_inputs(pipe, task, (inputs * 2)[:2], 2, kwargs)
    unknown = sorted(set(seen) - set(AXES))
    if unknown:
        raise export_error(f"the model takes {unknown}, inputs hf-transfer does not know how to export")
    return {name: seen[name] for name in AXES if name in seen}  # optimum's order


def export_graph(model, example: dict[str, torch.Tensor], path: Path) -> None:
    """The logits graph over `example` (given as the one keyword argument `inputs`: a trailing dict among the
    positional arguments would be read as keyword arguments)."""
    dims = {name: torch.export.Dim(name) for name in {a for axes in AXES.values() for a in axes}}
    shapes = {name: {i: dims[a] for i, a in enumerate(AXES[name])} for name in example}
    export_module(Logits(model), (), {"inputs": example}, path, list(example), ["logits"], {"inputs": shapes})


def export_module(module, args: tuple, kwargs: dict, path: Path, input_names: list[str], output_names: list[str],
                   dynamic_shapes) -> None:
    """The torch.export-based exporter, one self-contained file; its failure in one line."""
    try:
        with warnings.catch_warnings(), quiet("onnxscript", "onnx_ir", "torch.onnx"):
            warnings.simplefilter("ignore")  # the exporter's own notes on renamed dimensions
            torch.onnx.export(module.eval(), args, str(path), kwargs=kwargs, input_names=input_names,
                              output_names=output_names, dynamic_shapes=dynamic_shapes, opset_version=OPSET,
                              dynamo=True, external_data=False, verbose=False)
    except Exception as err:  # noqa: BLE001 - the exporter fails in many types
        text = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        raise export_error(f"torch.onnx.export failed: {text}") from None


def eager_attention(model) -> None:
    """Plain matmul-softmax attention for the export: onnxruntime's optimizer fuses its graph (SDPA's, with
    its extra masking steps, it does not), which makes the int8 model about twice as fast on a CPU."""
    if getattr(model.config, "_attn_implementation", "eager") not in (None, "eager"):
        model.set_attn_implementation("eager")


def features(pipe, clips: list) -> torch.Tensor:
    """The log-mel features the pipeline's feature extractor makes of the clips."""
    fe = pipe.feature_extractor
    return fe([c["raw"] for c in clips], sampling_rate=fe.sampling_rate, return_tensors="pt").input_features


def decode_in_step(model, features: torch.Tensor, tokens: torch.Tensor | None = None):
    """(tokens, logits [batch, STEPS, vocabulary]) of `model` decoding `features` with its cache from the
    decoder's start token: greedy, or fed `tokens` (another model's) to compare the two step by step."""
    start = model.generation_config.decoder_start_token_id
    ids = torch.full((features.shape[0], 1), int(start), dtype=torch.long)
    rows, cache = [], None
    with torch.no_grad():
        encoded = model.get_encoder()(features)
        for step in range(STEPS):
            out = model(encoder_outputs=encoded, decoder_input_ids=ids[:, -1:] if step else ids, cache=cache,
                        use_cache=True)
            cache = out.cache
            rows.append(out.logits[:, -1].float())
            following = tokens[:, step + 1:step + 2] if tokens is not None else rows[-1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, following], dim=1)
    return ids, torch.stack(rows, dim=1)
