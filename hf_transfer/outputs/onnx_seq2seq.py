"""Whisper speech recognition through onnxruntime: three graphs and the model that generates over them.

`hf-transfer export` writes, in optimum's file names (the graphs are hf-transfer's: the decoders give the last
position's logits only, the one `generate()` reads):

- `encoder_model.onnx`: input_features -> last_hidden_state;
- `decoder_model.onnx`, the first step: input_ids (the prompt), encoder_hidden_states -> logits,
  present.{i}.decoder.key / value (self-attention) and present.{i}.encoder.key / value (the cross-attention
  keys and values, computed once per clip);
- `decoder_with_past_model.onnx`, every later step: input_ids (the new token) and past_key_values.{i}.decoder /
  encoder.key / value -> logits, present.{i}.decoder.key / value (the past and the new positions);

and `*_quantized.onnx` beside them with `--quantize int8`. `OnnxWhisper` is transformers'
WhisperForConditionalGeneration with its weights left on the meta device (nothing allocated) and its forward
pass answered by the three sessions, keeping the keys and values in transformers' own cache: `generate()` is
transformers' (greedy or beam search, the suppressed tokens, language detection, the prompt) and the
speech-recognition pipeline runs it as it runs the PyTorch model. Token timestamps (which read the
cross-attention weights) are not available.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ENCODER, DECODER, DECODER_PAST = "encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"
GRAPHS = (ENCODER, DECODER, DECODER_PAST)
SIDES = ("decoder", "encoder")  # self-attention, cross-attention (optimum's names)


def quantized(name: str) -> str:
    return name.replace(".onnx", "_quantized.onnx")


def files(precision: str) -> tuple[str, ...]:
    """The three graphs' file names for `fp32` or `int8`."""
    return GRAPHS if precision == "fp32" else tuple(quantized(g) for g in GRAPHS)


def folder_precisions(folder: str | Path) -> list[str]:
    """The precisions whose three graphs the folder holds, int8 first (the one `predict` runs)."""
    return [p for p in ("int8", "fp32") if all((Path(folder) / f).is_file() for f in files(p))]


def kv_names(prefix: str, layers: int, sides=SIDES) -> list[str]:
    return [f"{prefix}.{i}.{side}.{kv}" for side in sides for i in range(layers) for kv in ("key", "value")]


# --------------------------------------------------------------------------- export


class _Encoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.model.model.encoder(input_features).last_hidden_state


def _cache_tensors(cache, layers: int, sides=SIDES) -> list[torch.Tensor]:
    parts = {"decoder": cache.self_attention_cache, "encoder": cache.cross_attention_cache}
    return [getattr(parts[side].layers[i], kv) for side in sides for i in range(layers) for kv in ("keys", "values")]


def _cache_of(kv: tuple[torch.Tensor, ...], layers: int):
    """An EncoderDecoderCache holding the given self- and cross-attention keys and values."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    own, cross = DynamicCache(), DynamicCache()
    for i in range(layers):
        own.update(kv[2 * i], kv[2 * i + 1], i)
        cross.update(kv[2 * layers + 2 * i], kv[2 * layers + 2 * i + 1], i)
    cache = EncoderDecoderCache(own, cross)
    for i in range(layers):
        cache.is_updated[i] = True  # the cross-attention reads its keys and values from the cache
    return cache


class _Decoder(torch.nn.Module):
    """The first step: the prompt over the encoder's states; every key and value it computed."""

    def __init__(self, model):
        super().__init__()
        self.model, self.layers = model, model.config.decoder_layers

    def forward(self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        out = self.model.model.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states,
                                       cache=EncoderDecoderCache(DynamicCache(), DynamicCache()),
                                       use_cache=True)
        logits = self.model.proj_out(out.last_hidden_state[:, -1:])
        return (logits, *_cache_tensors(out.cache, self.layers))


class _DecoderWithPast(torch.nn.Module):
    """A later step: the new tokens over the cached keys and values."""

    def __init__(self, model):
        super().__init__()
        self.model, self.layers = model, model.config.decoder_layers

    def forward(self, input_ids: torch.Tensor, *kv: torch.Tensor):
        cache = _cache_of(kv, self.layers)
        # the cross-attention runs only when encoder states are given; its keys and values come from the cache
        stand_in = kv[2 * self.layers].new_zeros(input_ids.shape[0], 1, self.model.config.d_model)
        out = self.model.model.decoder(input_ids=input_ids, encoder_hidden_states=stand_in, cache=cache,
                                       use_cache=True)
        logits = self.model.proj_out(out.last_hidden_state[:, -1:])
        return (logits, *_cache_tensors(out.cache, self.layers, ("decoder",)))


@dataclass
class Graph:
    """One graph for the exporter: the module, the example it traces, its names and dynamic axes."""

    file: str
    module: torch.nn.Module
    args: tuple
    input_names: list[str]
    output_names: list[str]
    dynamic_shapes: tuple


def graphs(model, features: torch.Tensor) -> list[Graph]:
    """The three graphs of a WhisperForConditionalGeneration, traced on `features` (a batch of two clips'
    input_features, as the pipeline prepares them): the prompt is three tokens, then two new ones (a size-1
    axis would be traced as fixed)."""
    from torch.export import Dim

    layers = model.config.decoder_layers
    batch, length, past = Dim("batch_size"), Dim("decoder_sequence_length"), Dim("past_sequence_length", min=1)
    start = model.generation_config.decoder_start_token_id or model.config.decoder_start_token_id
    prompt = torch.full((features.shape[0], 3), int(start), dtype=torch.long)
    with torch.no_grad():
        states = _Encoder(model)(features)
        first = _Decoder(model)(prompt, states)
    present, present_self = kv_names("present", layers), kv_names("present", layers, ("decoder",))
    kv_axes = tuple({0: batch, 2: past} if j < 2 * layers else {0: batch} for j in range(4 * layers))
    return [
        Graph(ENCODER, _Encoder(model), (features,), ["input_features"], ["last_hidden_state"], ({0: batch},)),
        Graph(DECODER, _Decoder(model), (prompt, states), ["input_ids", "encoder_hidden_states"],
              ["logits", *present], ({0: batch, 1: length}, {0: batch})),
        Graph(DECODER_PAST, _DecoderWithPast(model), (prompt[:, :2], *first[1:]),
              ["input_ids", *kv_names("past_key_values", layers)], ["logits", *present_self],
              ({0: batch, 1: Dim("new_tokens")}, kv_axes)),
    ]


# --------------------------------------------------------------------------- runtime


@functools.cache
def whisper_class():
    """OnnxWhisper, defined once on first use (it subclasses a transformers model class)."""
    from transformers import WhisperForConditionalGeneration
    from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

    class OnnxEncoder(torch.nn.Module):
        def __init__(self, sess):
            super().__init__()
            self.session = sess

        def forward(self, input_features: torch.Tensor, **_) -> BaseModelOutput:
            feed = {"input_features": input_features.detach().float().contiguous().numpy()}
            return BaseModelOutput(last_hidden_state=torch.from_numpy(self.session.run(None, feed)[0]))

    class OnnxWhisper(WhisperForConditionalGeneration):
        """WhisperForConditionalGeneration whose forward pass runs the three onnxruntime sessions
        ({file role: session}); its own weights stay on the meta device."""

        def __init__(self, config, sessions: dict[str, Any], generation_config=None):
            with torch.device("meta"):
                super().__init__(config)
            self.sessions = sessions
            self.onnx_encoder = OnnxEncoder(sessions[ENCODER])
            if generation_config is not None:
                self.generation_config = generation_config

        @property
        def device(self) -> torch.device:
            return torch.device("cpu")

        def get_encoder(self, *args, **kwargs):
            return self.onnx_encoder

        def forward(self, input_features=None, attention_mask=None, decoder_input_ids=None, encoder_outputs=None,
                    cache=None, use_cache=None, **kwargs) -> Seq2SeqLMOutput:
            from transformers.cache_utils import DynamicCache, EncoderDecoderCache

            if decoder_input_ids is None:
                raise ValueError("the ONNX Whisper decoder needs decoder_input_ids")
            if encoder_outputs is None:
                encoder_outputs = self.onnx_encoder(input_features)
            states = encoder_outputs[0]
            layers = self.config.decoder_layers
            ids = decoder_input_ids.detach().long().contiguous().numpy()
            if cache is None or cache.get_seq_length() == 0:
                out = self.sessions[DECODER].run(None, {"input_ids": ids,
                                                        "encoder_hidden_states": states.contiguous().numpy()})
                if use_cache is not False:
                    if not isinstance(cache, EncoderDecoderCache):
                        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
                    for i in range(layers):
                        own, cross = out[1 + 2 * i:3 + 2 * i], out[1 + 2 * (layers + i):3 + 2 * (layers + i)]
                        cache.self_attention_cache.update(*map(torch.from_numpy, own), i)
                        cache.cross_attention_cache.update(*map(torch.from_numpy, cross), i)
                        cache.is_updated[i] = True
            else:
                past = _cache_tensors(cache, layers)
                feed = {"input_ids": ids, **{name: t.contiguous().numpy()
                                             for name, t in zip(kv_names("past_key_values", layers), past)}}
                out = self.sessions[DECODER_PAST].run(None, feed)
                seen = cache.get_seq_length()
                for i in range(layers):  # the cache appends the new positions of the graph's present
                    new = [torch.from_numpy(t[:, :, seen:]) for t in out[1 + 2 * i:3 + 2 * i]]
                    cache.self_attention_cache.update(*new, i)
            return Seq2SeqLMOutput(logits=torch.from_numpy(out[0]), cache=cache if use_cache is not False else None,
                                   encoder_last_hidden_state=states)

    return OnnxWhisper


def onnx_whisper(folder: str | Path, precision: str, config, make_session):
    """The folder's Whisper graphs of `precision` as a model the speech-recognition pipeline generates with;
    `make_session(path)` opens one graph."""
    from transformers import GenerationConfig

    folder = Path(folder)
    sessions = {graph: make_session(folder / name) for graph, name in zip(GRAPHS, files(precision))}
    generation = (GenerationConfig.from_pretrained(str(folder)) if (folder / "generation_config.json").is_file()
                  else None)
    return whisper_class()(config, sessions, generation)
