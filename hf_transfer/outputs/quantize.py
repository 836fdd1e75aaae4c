"""int8 quantization of an exported ONNX graph with onnxruntime, the method chosen by what the graph computes.

- **dynamic** (transformers: text, ViT, Whisper, wav2vec2 / HuBERT): onnxruntime's transformer fusions first
  (layer norms, GELU, attention where the pattern matches), then `quantize_dynamic` of the matrix products:
  int8 weights per output channel, activations quantized per batch at run time. No data needed. Convolutions
  stay fp32 (onnxruntime's ConvInteger is slower than its fp32 convolution on a CPU).
- **static** (convolutional networks: more Conv than MatMul / Gemm nodes, e.g. EfficientNet, ResNet):
  `quantize_static` in QDQ format (int8 weights per channel, uint8 activations) with activation ranges
  calibrated (min-max) on up to `CALIBRATION` training inputs, as the pipeline preprocesses them.

Both write one self-contained file (optimum's `model_quantized.onnx`); onnxruntime runs it, other ONNX
runtimes may lack the fused operators (com.microsoft domain) of the dynamic one.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

CALIBRATION = 256
"""Training inputs that calibrate a static quantization's activation ranges."""
MATRIX_OPS = ("MatMul", "Gemm")
QUANTIZED = ["MatMul"]
"""What dynamic quantization quantizes: the encoder's projections (3-d MatMul), as optimum's dynamic
configurations do; a 2-d Gemm (the pooler, the classification head: little compute) stays fp32."""


@contextmanager
def quiet(*names: str, level: int = logging.WARNING):
    """onnxscript, onnx_ir (the exporter's graph passes) and onnxruntime's optimizer and quantizer (the root
    logger) log every node they touch at INFO: `level` and above only, while they run."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, old in zip(loggers, levels):
            logger.setLevel(old)


def method_for(path: Path) -> str:
    """`static` for a convolutional network (more Conv nodes than matrix products), else `dynamic`."""
    import onnx

    ops = [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]
    return "static" if ops.count("Conv") > sum(ops.count(op) for op in MATRIX_OPS) else "dynamic"


def describe(method: str) -> str:
    return {
        "dynamic": "onnxruntime transformer fusions, then quantize_dynamic of MatMul: int8 weights per channel, "
                   "int8 activations quantized per batch",
        "static": f"quantize_static, QDQ: int8 weights per channel, uint8 activations calibrated (min-max) on "
                  f"up to {CALIBRATION} training inputs",
    }[method]


def dynamic(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    with tempfile.TemporaryDirectory(prefix="hf-transfer-onnx-") as tmp, quiet("", level=logging.ERROR):
        fused = Path(tmp) / "fused.onnx"
        optimize_model(str(fp32), model_type="bert").save_model_to_file(str(fused))  # generic encoder fusions
        quantize_dynamic(str(fused), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=QUANTIZED)


def static(fp32: Path, int8: Path, calibration: list[dict[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="hf-transfer-onnx-") as tmp, quiet("", level=logging.ERROR):
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))  # shape inference and graph clean-up, as onnxruntime advises
        quantize_static(str(prepared), str(int8), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def int8(fp32: Path, int8_path: Path, calibration: Callable[[], list[dict[str, np.ndarray]] | None]) -> str:
    """Quantize `fp32` into `int8_path`; returns the method. `calibration()` gives the model's input batches
    from the training split (None when the run's data cannot be read: dynamic quantization then)."""
    method = method_for(fp32)
    batches = calibration() if method == "static" else None
    if method == "static" and batches:
        static(fp32, int8_path, batches)
        return method
    dynamic(fp32, int8_path)
    return "dynamic"
