"""int8 quantization of an exported ONNX graph with onnxruntime, the method chosen by what the graph computes.

- **dynamic** (transformers: text, ViT, Whisper, wav2vec2 / HuBERT): onnxruntime's transformer fusions first
  (layer norms, GELU, attention where the pattern matches), then `quantize_dynamic` of the matrix products:
  int8 weights per output channel, activations quantized per batch at run time. Convolutions stay fp32
  (onnxruntime's ConvInteger is slower than its fp32 convolution on a CPU). With training inputs at hand, a
  product's few outlier input channels (BERT's LayerNorm outputs have a dimension several times larger than
  the rest, and one scale per tensor then rounds every other channel coarsely) are multiplied in fp32 beside
  the int8 product of the rest: the mixed-precision decomposition of LLM.int8() (Dettmers et al., 2022), with
  the channels chosen once on calibration inputs instead of per batch. No data: plain dynamic quantization.
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
OUTLIER_RATIO = 3.0
"""An input channel of a matrix product is an outlier when its peak |value| on the calibration inputs exceeds
this many times the 99th percentile of the peaks of its tensor's channels (`export --outlier-ratio`; at most 1 %
of a tensor's channels can be). On the text default (MiniLM-L6), 2 splits 18 channels and 3 splits 8: int8
logits' mean squared difference from fp32 on its training texts 0.0005 and 0.0012 against 0.0042 unsplit, at
0.87 and 0.93-0.96 of the unsplit int8 speed (README, ONNX export)."""


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


def describe(method: str, outliers: dict | None = None) -> str:
    split = (f"; {outliers['channels']} outlier input channels of {outliers['products']} products (peak |x| on "
             f"{outliers['calibration_inputs']} training inputs > {outliers['ratio']:g}x the 99th percentile of "
             "the channels' peaks) multiplied in fp32" if outliers else "")
    return {
        "dynamic": "onnxruntime transformer fusions, then quantize_dynamic of MatMul: int8 weights per channel, "
                   "int8 activations quantized per batch" + split,
        "static": f"quantize_static, QDQ: int8 weights per channel, uint8 activations calibrated (min-max) on "
                  f"up to {CALIBRATION} training inputs",
    }[method]


def weight_products(model) -> list:
    """The MatMul nodes dynamic quantization quantizes: an activation times a constant 2-d weight."""
    weights = {i.name for i in model.graph.initializer if len(i.dims) == 2}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights
            and n.input[0] not in weights]


def channel_peaks(model_path: Path, names: list[str], calibration: list[dict[str, np.ndarray]]) -> dict:
    """Each named tensor's peak |value| per channel (its last axis) over the calibration batches (positions the
    batch's attention mask marks as padding left out)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names if n not in known)
    probe = model_path.with_name("probe.onnx")
    onnx.save(model, str(probe))
    session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    feeds = {i.name for i in session.get_inputs()}
    peaks: dict[str, np.ndarray] = {}
    for batch in calibration:
        mask = batch.get("attention_mask")
        for name, x in zip(names, session.run(names, {k: v for k, v in batch.items() if k in feeds})):
            if mask is not None and x.shape[:2] == mask.shape:  # real tokens only: padding's states are unused
                x = x[mask.astype(bool)]
            peak = np.abs(x.reshape(-1, x.shape[-1])).max(0)
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
    return peaks


def outlier_channels(peaks: np.ndarray, ratio: float = OUTLIER_RATIO) -> np.ndarray:
    return np.flatnonzero(peaks > ratio * np.percentile(peaks, 99)).astype(np.int64)


def split_outliers(model, peaks: dict[str, np.ndarray], ratio: float = OUTLIER_RATIO) -> tuple[list[str], int]:
    """Rewrite each weight product Y = X W whose input has outlier channels O as (X * keep) W + X[..., O] W[O, :]
    (keep: 0 on O, 1 elsewhere): equal in fp32; the first product is quantized, the second (|O| rows of W) is
    not. The mask and the gather are built once per input tensor. Returns the fp32 products' node names and the
    number of distinct outlier channels."""
    from onnx import helper, numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    nodes, split, channels, sums = [], [], {}, {}
    products = {n.output[0] for n in weight_products(model)}  # (protobuf gives new wrappers on each access)
    for node in model.graph.node:
        x = node.input[0] if node.op_type == "MatMul" and node.output[0] in products else None
        idx = outlier_channels(peaks[x], ratio) if x in peaks else np.empty(0, np.int64)
        if not len(idx):
            nodes.append(node)
            continue
        tag = f"{x}/hf_transfer_outliers"
        if x not in channels:
            keep = np.ones(len(peaks[x]), np.float32)
            keep[idx] = 0
            model.graph.initializer.extend([numpy_helper.from_array(keep, f"{tag}/keep"),
                                            numpy_helper.from_array(idx, f"{tag}/channels")])
            nodes += [helper.make_node("Mul", [x, f"{tag}/keep"], [f"{tag}/rest"], name=f"{tag}/mask"),
                      helper.make_node("Gather", [x, f"{tag}/channels"], [f"{tag}/x"], name=f"{tag}/gather", axis=-1)]
            channels[x] = len(idx)
        name, y = node.name or node.output[0], node.output[0]
        rows = numpy_helper.from_array(numpy_helper.to_array(weights[node.input[1]])[idx], f"{name}/outlier_rows")
        model.graph.initializer.append(rows)
        nodes.append(helper.make_node("MatMul", [f"{tag}/x", rows.name], [f"{name}/outlier_y"], name=f"{name}/fp32"))
        node.input[0], node.output[0] = f"{tag}/rest", f"{name}/int8_y"
        nodes.append(node)
        split.append(f"{name}/fp32")
        sums[y] = (f"{name}/int8_y", f"{name}/outlier_y")
    del model.graph.node[:]
    model.graph.node.extend(_add_outlier_parts(nodes, sums, set(weights), {o.name for o in model.graph.output}))
    return split, sum(channels.values())


def _add_outlier_parts(nodes: list, sums: dict[str, tuple[str, str]], constants: set[str], outputs: set[str]) -> list:
    """Add each split product's fp32 part back where the int8 part keeps its fusions: after a bias Add
    (onnxruntime fuses the int8 product with its bias), into the skip input of a SkipLayerNormalization, else
    just before the product's first reader. `sums`: product output -> (int8 part, fp32 part)."""
    from onnx import helper

    readers: dict[str, list] = {}
    for node in nodes:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    placed, out = set(), []
    for node in nodes:
        after = None
        for k, y in enumerate(node.input):
            if y not in sums or y in placed:
                continue
            placed.add(y)
            int8_y, fp32_y = sums[y]
            alone = len(readers[y]) == 1 and y not in outputs
            other = [i for i in node.input if i != y]
            if alone and node.op_type == "Add" and other and other[0] in constants:
                node.input[k], z = int8_y, node.output[0]
                node.output[0] = f"{z}/before_outliers"
                after = helper.make_node("Add", [node.output[0], fp32_y], [z], name=f"{z}/outliers")
            elif alone and node.op_type == "SkipLayerNormalization" and k < 2:
                skip = node.input[1 - k]
                out.append(helper.make_node("Add", [skip, fp32_y], [f"{skip}/with_outliers_{k}"],
                                            name=f"{y}/outliers_to_skip"))
                node.input[k], node.input[1 - k] = int8_y, f"{skip}/with_outliers_{k}"
            else:
                out.append(helper.make_node("Add", [int8_y, fp32_y], [y], name=f"{y}/sum"))
        out.append(node)
        if after is not None:
            out.append(after)
    return out + [helper.make_node("Add", [*sums[y]], [y], name=f"{y}/sum") for y in sums if y not in placed]


def dynamic(fp32: Path, int8: Path, calibration: list[dict[str, np.ndarray]] | None = None,
            ratio: float = OUTLIER_RATIO) -> dict | None:
    """Fuse, split the outlier channels when `calibration` batches are given, quantize. Returns what was split
    (None without calibration)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    with tempfile.TemporaryDirectory(prefix="hf-transfer-onnx-") as tmp, quiet("", level=logging.ERROR):
        fused = Path(tmp) / "fused.onnx"
        optimize_model(str(fp32), model_type="bert").save_model_to_file(str(fused))  # generic encoder fusions
        fp32_products, outliers = [], None
        if calibration:
            model = onnx.load(str(fused))
            inputs = sorted({n.input[0] for n in weight_products(model)})
            fp32_products, channels = split_outliers(model, channel_peaks(fused, inputs, calibration), ratio)
            onnx.save(model, str(fused))
            outliers = {"ratio": ratio, "channels": channels, "products": len(fp32_products),
                        "calibration_inputs": sum(len(next(iter(b.values()))) for b in calibration)}
        quantize_dynamic(str(fused), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=QUANTIZED, nodes_to_exclude=fp32_products)
    return outliers


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


def int8(fp32: Path, int8_path: Path, calibration: Callable[[], list[dict[str, np.ndarray]] | None],
         outlier_ratio: float = OUTLIER_RATIO) -> tuple[str, dict | None]:
    """Quantize `fp32` into `int8_path`; returns the method and, for a dynamic one, its outlier split.
    `calibration()` gives the model's input batches from the training split (None when the run's data cannot be
    read: plain dynamic quantization then)."""
    method = method_for(fp32)
    # the training inputs are read only for what uses them: a static quantization or an outlier split
    batches = calibration() if method == "static" or outlier_ratio != float("inf") else None
    if method == "static" and batches:
        static(fp32, int8_path, batches)
        return method, None
    return "dynamic", dynamic(fp32, int8_path, batches, outlier_ratio)
