"""Dynamic int8 quantization's outlier split (outputs/quantize.py) on a graph built here: one matrix product
whose input has a channel far larger than the others, as BERT's LayerNorm outputs have."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hf_transfer.outputs.quantize import OUTLIER_RATIO, channel_peaks, dynamic, outlier_channels, split_outliers

IN, OUT, OUTLIER = 256, 32, 5  # the 99th percentile of 256 channel peaks is not the outlier itself


def product_graph(path, rng):
    """Y = X W + b over X [batch, tokens, IN]."""
    w = rng.normal(0, 0.2, (IN, OUT)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"], name="proj"), helper.make_node("Add", ["xw", "b"], ["y"])],
        "product", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens", OUT])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(OUT, np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def inputs(rng, n=8):
    x = rng.normal(0, 1, (n, 12, IN)).astype(np.float32)
    x[..., OUTLIER] *= 40  # one outlier dimension, 40x the others
    return {"x": x}


def run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


@pytest.fixture
def fp32(tmp_path):
    return product_graph(tmp_path / "model.onnx", np.random.default_rng(0))


def test_the_outlier_channel_is_found_and_the_split_graph_computes_the_same(fp32, tmp_path):
    rng = np.random.default_rng(1)
    calibration = [inputs(rng) for _ in range(3)]
    peaks = channel_peaks(fp32, ["x"], calibration)
    assert list(outlier_channels(peaks["x"])) == [OUTLIER]
    model = onnx.load(str(fp32))
    fp32_products, channels = split_outliers(model, peaks)
    assert (fp32_products, channels) == (["proj/fp32"], 1)
    onnx.save(model, str(tmp_path / "split.onnx"))
    feed = inputs(rng)
    np.testing.assert_allclose(run(tmp_path / "split.onnx", feed), run(fp32, feed), rtol=1e-5, atol=1e-4)


def test_no_outlier_leaves_the_graph_as_it_was(fp32):
    rng = np.random.default_rng(2)
    calibration = [{"x": rng.normal(0, 1, (8, 12, IN)).astype(np.float32)}]
    model = onnx.load(str(fp32))
    assert split_outliers(model, channel_peaks(fp32, ["x"], calibration)) == ([], 0)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]


def test_padding_positions_are_left_out_of_the_peaks(fp32):
    x = np.ones((2, 4, IN), np.float32)
    x[1, 3, 7] = 1000.0  # a padded position
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    peaks = channel_peaks(fp32, ["x"], [{"x": x, "attention_mask": mask}])["x"]
    assert peaks.max() == 1.0


def test_the_split_brings_int8_closer_to_fp32(fp32, tmp_path):
    rng = np.random.default_rng(3)
    calibration = [inputs(rng) for _ in range(3)]
    assert dynamic(fp32, tmp_path / "plain.onnx") is None
    split = dynamic(fp32, tmp_path / "split.onnx", calibration)
    assert split == {"ratio": OUTLIER_RATIO, "channels": 1, "products": 1, "calibration_inputs": 24}
    feed = inputs(rng)
    want = run(fp32, feed)
    plain, kept = (float(np.abs(run(tmp_path / f, feed) - want).mean()) for f in ("plain.onnx", "split.onnx"))
    assert kept < plain / 4, (plain, kept)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "split.onnx")).graph.node]
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops  # the rest is still int8


def test_export_help_states_the_default_ratio_and_bad_ratios_are_one_line(capsys):
    from hf_transfer.cli import main
    from hf_transfer.outputs.quantize import OUTLIER_RATIO

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert f"(default {OUTLIER_RATIO:g}; inf: none)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as exit_:
        main(["export", "run", "--outlier-ratio", "0.5"])
    assert exit_.value.code == 2
    assert "--outlier-ratio: must be a number >= 1 (inf: none), got '0.5'" in capsys.readouterr().err


def test_a_higher_ratio_splits_fewer_channels(fp32):
    x = np.random.default_rng(4).normal(0, 1, (8, 12, IN)).astype(np.float32)
    x[..., 1] *= 5  # two outliers: 5x and 40x the others
    x[..., OUTLIER] *= 40
    peaks = channel_peaks(fp32, ["x"], [{"x": x}])["x"]
    assert list(outlier_channels(peaks, 2.0)) == [1, OUTLIER] and list(outlier_channels(peaks, 10.0)) == [OUTLIER]
    assert split_outliers(onnx.load(str(fp32)), {"x": peaks}, float("inf")) == ([], 0)


def test_a_product_that_is_the_graph_output_gets_its_fp32_part_back(tmp_path):
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.2, (IN, OUT)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")], "bare",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", IN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens", OUT])],
                              [numpy_helper.from_array(w, "w")])
    path = tmp_path / "bare.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    model = onnx.load(str(path))
    assert split_outliers(model, channel_peaks(path, ["x"], [inputs(rng)]))[1] == 1
    onnx.save(model, str(tmp_path / "split.onnx"))
    feed = inputs(rng)
    np.testing.assert_allclose(run(tmp_path / "split.onnx", feed), run(path, feed), rtol=1e-5, atol=1e-4)
