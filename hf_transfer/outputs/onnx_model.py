"""ONNX Runtime behind `transformers.pipeline`: an exported folder predicts as its PyTorch folder does.

An ONNX folder (written by `hf-transfer export`, in optimum's layout) holds `model.onnx` (fp32) and / or
`model_quantized.onnx` (int8), the model's config.json and its processor files. `OnnxModel` is a torch
Module that runs an `onnxruntime.InferenceSession` on the tensors the pipeline prepared and answers with
their logits, so tokenisation, truncation, image and audio preprocessing, softmax / sigmoid, top_k and
entity grouping, CTC decoding are the pipeline's own, exactly as for the PyTorch folder. A Whisper folder
holds three graphs instead (onnx_seq2seq: encoder, first decoder step, decoder step with the cache), which
`OnnxWhisper` runs under transformers' own `generate()`.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_transfer.errors import DependencyError
from hf_transfer.outputs import onnx_seq2seq as seq2seq
from hf_transfer.outputs.hubuser import FolderError, load_config, load_pipeline, load_processor

FP32, INT8 = "model.onnx", "model_quantized.onnx"
MAIN_INPUTS = ("input_ids", "pixel_values", "input_features", "input_values")
ONNX_FILES = (INT8, FP32)
"""The files an ONNX folder may hold, in the order `predict` picks them (the quantized model when present)."""


def onnx_file(folder: str | Path) -> Path | None:
    """The model file `predict` runs in an ONNX folder (a Whisper folder's: its encoder), or None for a
    folder without one."""
    found = next((Path(folder) / name for name in ONNX_FILES if (Path(folder) / name).is_file()), None)
    whisper = seq2seq.folder_precisions(folder)
    return found or (Path(folder) / seq2seq.files(whisper[0])[0] if whisper else None)


def onnxruntime():
    """The `onnx` extra's runtime, or a one-line error naming the extra."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DependencyError("ONNX: needs onnxruntime: pip install 'hf-transfer-learning[onnx]'") from None
    return ort


def session(path: str | Path, threads: int | None = None, spin: bool = True):
    """An onnxruntime CPU session with every graph optimisation on; `threads`: intra-op threads (None:
    onnxruntime's default, one per physical core); `spin`: idle intra-op threads spin-wait for work (faster
    between a graph's many small operators, but they take the cores from whatever runs between two calls)."""
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types for a bad file
        text = str(err).strip().splitlines()
        why = text[0] if text else err.__class__.__name__
        raise FolderError(f"{path}: onnxruntime cannot load it: {why}") from None


class OnnxModel(torch.nn.Module):
    """An onnxruntime session as the pipeline's model: the graph's inputs in, `logits` out (CPU, fp32)."""

    def __init__(self, sess, config):
        super().__init__()
        self.session = sess
        self.input_names = [i.name for i in sess.get_inputs()]
        # the speech-recognition pipeline feeds a CTC model by it (the graph's inputs come in optimum's order,
        # attention_mask before input_values)
        self.main_input_name = next((n for n in MAIN_INPUTS if n in self.input_names), self.input_names[0])
        self.config = config
        self.name_or_path = config.name_or_path

    device = property(lambda self: torch.device("cpu"))
    dtype = property(lambda self: torch.float32)

    def can_generate(self) -> bool:
        return False

    def forward(self, **inputs) -> SequenceClassifierOutput:
        missing = [n for n in self.input_names if inputs.get(n) is None]
        if missing:
            raise ValueError(f"the ONNX graph needs {missing}, which the pipeline's processor did not give")
        feed = {n: inputs[n].detach().cpu().numpy() for n in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))


def onnx_model(folder: str | Path, file: str | None = None, threads: int | None = None, spin: bool = True):
    """The folder's ONNX model (`file`, default: the quantized one when present) with its config."""
    folder = Path(folder)
    whisper = seq2seq.folder_precisions(folder)
    if whisper and file in (None, FP32, INT8):  # FP32 / INT8 name the precision of the three graphs
        precision = {None: whisper[0], FP32: "fp32", INT8: "int8"}[file]
        if precision not in whisper:
            raise FolderError(f"{folder}: no {' / '.join(seq2seq.files(precision))}")
        return seq2seq.onnx_whisper(folder, precision, load_config(folder), lambda p: session(p, threads, spin))
    path = folder / file if file else onnx_file(folder)
    if path is None or not path.is_file():
        raise FolderError(f"{folder}: no {file or ' or '.join(ONNX_FILES)}; not an exported ONNX folder")
    return OnnxModel(session(path, threads, spin), load_config(folder))


class _NotSupportedFilter(logging.Filter):
    """pipeline() logs an error for a model class it does not list for the task; OnnxModel is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is not supported for" not in record.getMessage()


@contextmanager
def _quiet_class_check():
    logger = logging.getLogger("transformers.pipelines.base")
    check = _NotSupportedFilter()
    logger.addFilter(check)
    try:
        yield
    finally:
        logger.removeFilter(check)


def load_onnx_pipeline(folder: str | Path, task: dict, file: str | None = None, threads: int | None = None,
                       device: str | None = None):
    """`transformers.pipeline` over the folder's ONNX model and processors (task: hubuser's task dict)."""
    from transformers import pipeline

    if device not in (None, "cpu"):
        raise FolderError(f"{folder}: an ONNX folder runs on the CPU (onnxruntime), not on {device}")
    # audio preprocessing (Whisper's log-mel spectrogram) runs torch operators between two model calls, which
    # onnxruntime's spinning threads would slow down: measured on 2 cores, the pipeline's int8 throughput went
    # from 1.3x to 1.8x PyTorch's (batch 16) without spinning; text's went from 2.4x to 1.7x (batch 1)
    model = onnx_model(folder, file, threads, spin=task["processor"] != "feature_extractor")
    processors = {arg: load_processor(Path(folder), {**task, "processor": arg})
                  for arg in task.get("processors") or [task["processor"]]}
    with _quiet_class_check():
        return pipeline(task["pipeline"], model=model, device="cpu", **processors)


def load_any_pipeline(folder: str | Path, task: dict, device: str | None = None):
    """The pipeline `predict`, `evaluate` and `serve` run on a folder: onnxruntime for an `hf-transfer
    export` folder (its int8 model when present), PyTorch for any other."""
    if onnx_file(folder):
        return load_onnx_pipeline(folder, task, device=device)
    return load_pipeline(folder, task, device)
