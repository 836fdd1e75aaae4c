"""`hf-transfer export OUTPUT_DIR [DEST] --format onnx [--quantize int8]`: a saved model as an ONNX folder.

The folder loads as `predict` loads it (hubuser: a full model, or a PEFT adapter merged in memory), and
`torch.onnx.export` (the torch.export-based exporter) writes its logits graph, with optimum's input and
output names (input_ids / attention_mask / token_type_ids, pixel_values, input_features or input_values ->
logits) and dynamic batch (and, for texts and raw audio, sequence) axes: the example the exporter traces is
the batch of two inputs the PyTorch pipeline feeds its model. DEST (default OUTPUT_DIR/onnx) gets optimum's
layout: `model.onnx`, `model_quantized.onnx` with `--quantize int8` (quantize.py: dynamic for transformers,
static and calibrated for convolutional networks), config.json, the processor files and recipe.yaml, so
`hf-transfer predict DEST` answers as `predict OUTPUT_DIR` does (onnx_model.py).

The round-trip check runs before DEST is put in place: the PyTorch pipeline and the ONNX one score the
first `CHECKED` test inputs of the run (processor-ready dummy inputs when the run's data cannot be read) and
their logits may differ by at most `tolerance` (max abs diff, default 1e-4, fp32); with `--quantize` both ONNX
models score the whole test split and DEST/export.json keeps both metric sets and their argmax agreement
(int8 losing more than `WARN_DROP` points of the task's headline metric is logged; with `max_drop` it is
refused). A CTC speech recogniser exports its per-frame logits graph (the pipeline decodes them, greedy) and
its int8 check scores both models' transcripts (WER, CER). Whisper exports three graphs (onnx_seq2seq), checked
step by step (`decode_in_step`) and then by both pipelines' transcripts. Multi-task models are refused.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_transfer.errors import HfTransferError
from hf_transfer.folder import ONNX, RECIPE, check_destination, put_in_place, staging_dir
from hf_transfer.outputs import onnx_seq2seq as seq2seq
from hf_transfer.outputs.hubuser import FolderError, as_input, is_adapter, load_pipeline, transcripts
from hf_transfer.outputs.onnx_graph import (AXES, OPSET, STEPS, decode_in_step, eager_attention, example,
                                            export_error, export_graph, export_module, features, is_ctc,
                                            model_inputs, raw_scores)
from hf_transfer.outputs.onnx_model import FP32, INT8, load_onnx_pipeline, onnx_file, onnxruntime
from hf_transfer.outputs.predict import task_of_folder
from hf_transfer.outputs.quantize import CALIBRATION, OUTLIER_RATIO, describe, dynamic, int8
from hf_transfer.outputs.verify import hub_user_task, label_array, word_label_array
from hf_transfer.train import load_splits
from hf_transfer.validate import load_recipe

log = logging.getLogger(__name__)

REPORT = "export.json"
TOLERANCE = 1e-4
WARN_DROP = 1.0
CHECKED = 64


@dataclass
class Checked:
    """The inputs the check runs on: the run's test split (labelled) or dummy inputs (no labels)."""

    inputs: list
    split: Any = None
    source: str = "dummy"
    train: list | None = None
    """Up to CALIBRATION training inputs (a random sample), for a static quantization's calibration."""


@dataclass
class ExportResult:
    dest: Path
    report: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        check = self.report["check"]
        steps = f", {check['decoding_steps']} decoding steps" if "decoding_steps" in check else ""
        text = (f"export: {self.dest} ({', '.join(self.report['files'])}); ONNX logits within "
                f"{check['max_abs_diff']:.1e} of PyTorch's on {check['compared']} {check['inputs']} inputs{steps} "
                f"(tolerance {check['tolerance']:g})")
        if "transcripts_equal" in check:
            text += f", transcripts equal to PyTorch's for {check['transcripts_equal']:.0%}"
        quant = self.report.get("quantization")
        if quant:
            m = quant.get("metric")
            scores = f"{m} fp32 {quant['fp32'][m]:.4f}, int8 {quant['int8'][m]:.4f}, " if m else ""
            agree = (f"argmax agreement with fp32 {quant['argmax_agreement']:.4f}" if "argmax_agreement" in quant
                     else f"transcripts equal to fp32's {quant['transcripts_equal']:.4f}")
            split = (f" ({quant['outliers']['channels']} outlier channels in fp32)"
                     if quant.get("outliers", {}).get("channels") else "")
            text += f"; {quant['method']} int8{split}: {scores}{agree} on {quant['samples']} inputs"
        return text


def export(out_dir: str | Path, dest: str | Path | None = None, quantize: str | None = None,
           overwrite: bool = False, tolerance: float = TOLERANCE, max_drop: float | None = None,
           outlier_ratio: float | None = None) -> ExportResult:
    """Export the folder's model to ONNX in `dest` (default OUTPUT_DIR/onnx) after the round-trip check."""
    out = Path(out_dir)
    if quantize not in (None, "int8"):
        raise export_error(f"--quantize takes int8, got {quantize!r}")
    if onnx_file(out) is not None:
        raise export_error(f"{out} is an exported ONNX folder already; export the run folder it came from")
    target = Path(dest) if dest is not None else out / ONNX
    check_destination(target, out, overwrite, lambda t: onnx_file(t) is not None, "an ONNX export folder",
                      "--overwrite", export_error)
    onnxruntime()  # the extra is installed: say so before anything loads
    try:
        task, spec = task_of_folder(out)
        hub_task = hub_user_task(task)
        if task.verify_inputs is None:
            raise export_error(f"{out}: a {task.name} model has no pipeline; hf-transfer exports classification "
                               "models (text, tokens, images, audio) and speech recognisers (CTC, Whisper) only")
        pipe = load_pipeline(out, hub_task, "cpu")
    except FolderError as err:
        raise export_error(str(err)) from None
    generates = task.score_texts is not None and not is_ctc(pipe.model)  # a sequence-to-sequence recogniser
    if generates and pipe.model.config.model_type != "whisper":
        raise export_error(f"{out}: a sequence-to-sequence {task.name} model ({pipe.model.config.model_type}): "
                           "hf-transfer exports Whisper, CTC recognisers and classification models only")
    if is_adapter(out):  # the ONNX graph holds plain weights: the adapter is merged in memory
        pipe.model = pipe.model.merge_and_unload()
    pipe.model.float().eval()
    recipe = load_recipe(out / RECIPE) if spec is not None else None  # None: a model folder without a run
    batch = int(recipe.training.get("per_device_eval_batch_size", 8)) if recipe else 8
    checked = check_inputs(recipe, task, spec, getattr(pipe, hub_task["processor"]))
    kwargs = task.pipeline_kwargs(spec) if spec is not None else {}
    staging = staging_dir(target)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write = _write_seq2seq if generates else _write
        report, fp32 = write(pipe, out, staging, task, hub_task, checked, batch, kwargs, tolerance)
        if quantize:
            report["quantization"] = _quantize(pipe, fp32, staging, task, spec, hub_task, checked, batch, kwargs,
                                               max_drop, generates,
                                               OUTLIER_RATIO if outlier_ratio is None else outlier_ratio)
        report["files"] = sorted(p.name for p in staging.glob("*.onnx"))
        (staging / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    put_in_place(staging, target)
    return ExportResult(target, report)


def check_inputs(recipe, task, spec, processor) -> Checked:
    """The run's test split (else its validation split) as pipeline inputs, with a sample of its training
    split; dummy inputs for a folder without a recipe or whose data cannot be read here."""
    if recipe is not None:
        try:
            splits = load_splits(recipe, int(recipe.training.get("seed", 42))).splits
            role = next((r for r in ("test", "validation") if r in splits), None)
            if role is not None:
                train = None if recipe.data.streaming else splits["train"]  # a stream is not sampled
                if train is not None:
                    train = _inputs(task, spec, train.shuffle(seed=0).select(range(min(CALIBRATION, len(train)))),
                                    processor)
                return Checked(_inputs(task, spec, splits[role], processor), splits[role], f"{role}-split", train)
        except (HfTransferError, OSError) as err:
            log.warning("export: the run's data cannot be read here (%s); checking on dummy inputs", err)
    return Checked(_dummy_inputs(task, processor))


def _inputs(task, spec, split, processor) -> list:
    return [as_input(x) for x in task.verify_inputs(spec, split, processor)["inputs"]]


def _dummy_inputs(task, processor) -> list:
    """A few inputs of different sizes the pipeline takes: texts, images, waves at the processor's rate."""
    rng = np.random.default_rng(0)
    if task.modality == "vision":
        from PIL import Image

        return [Image.fromarray(rng.integers(0, 256, (s, s + 8, 3), dtype=np.uint8)) for s in (48, 64, 96, 72)]
    if task.modality == "speech":
        rate = processor.sampling_rate
        return [{"raw": (0.1 * rng.standard_normal(int(rate * s))).astype(np.float32), "sampling_rate": rate}
                for s in (0.6, 1.0, 0.8, 0.3)]
    texts = ["this is fine", "a much longer text than the first one, to pad the batch", "good", "bad and worse"]
    return [t.split() for t in texts] if task.entities else texts


def _write(pipe, out: Path, staging: Path, task, hub_task: dict, checked: Checked, batch: int, kwargs: dict,
           tolerance: float) -> tuple[dict[str, Any], Any]:
    """model.onnx, config, processors and recipe into `staging`; the fp32 check's figures and the ONNX
    pipeline it ran (the quantization check compares int8 against it)."""
    inputs = checked.inputs[:CHECKED]
    expected = raw_scores(pipe, task, inputs, batch, kwargs)  # the model as a Hub user's pipeline runs it
    eager_attention(pipe.model)
    traced = example(pipe, task, checked.inputs, kwargs)
    export_graph(pipe.model, traced, staging / FP32)
    _save_beside(pipe, out, staging, hub_task)
    try:
        onnx = load_onnx_pipeline(staging, hub_task, FP32)
    except FolderError as err:
        raise export_error(str(err)) from None
    got = raw_scores(onnx, task, inputs, batch, kwargs)
    diff = float(np.nanmax(np.abs(got - expected))) if expected.size else 0.0
    if not diff <= tolerance:
        raise export_error(f"the ONNX model's logits differ from PyTorch's by {diff:.2e} (max abs over "
                           f"{len(inputs)} {checked.source} inputs; tolerance {tolerance:g}); not written")
    return {
        **_about(out),
        "dynamic_axes": {**{name: list(AXES[name]) for name in traced},
                         "logits": ["batch_size", "sequence_length"] if task.entities else
                         ["batch_size", "frames"] if task.score_texts else ["batch_size"]},
        "check": {"inputs": checked.source, "compared": len(inputs), "max_abs_diff": diff, "tolerance": tolerance},
    }, onnx


def _save_beside(pipe, out: Path, staging: Path, hub_task: dict) -> None:
    """What the graph needs beside it: the config, the processors and the run's recipe."""
    pipe.model.config.save_pretrained(str(staging))
    for arg in hub_task["processors"]:
        getattr(pipe, arg).save_pretrained(str(staging))
    if (out / RECIPE).is_file():
        shutil.copy2(out / RECIPE, staging / RECIPE)


def _about(out: Path) -> dict[str, Any]:
    return {"source": str(out.resolve()), "format": "onnx",
            "exporter": f"torch.onnx.export (dynamo), torch {torch.__version__}, opset {OPSET}",
            "onnxruntime": onnxruntime().__version__}


def _write_seq2seq(pipe, out: Path, staging: Path, task, hub_task: dict, checked: Checked, batch: int,
                   kwargs: dict, tolerance: float) -> tuple[dict[str, Any], Any]:
    """Whisper's three graphs (onnx_seq2seq), its generation config, processors and recipe into `staging`;
    the check: the first CHECKED clips decoded by PyTorch (as a Hub user's model runs) and by the ONNX graphs
    in step, PyTorch's greedy token fed to both for STEPS steps, every step's logits compared; then both
    pipelines' transcripts of those clips."""
    inputs = checked.inputs[:CHECKED]
    batches = [features(pipe, inputs[i:i + batch]) for i in range(0, len(inputs), batch)]
    expected = [decode_in_step(pipe.model, f) for f in batches]
    eager_attention(pipe.model)
    for graph in seq2seq.graphs(pipe.model, features(pipe, (checked.inputs * 2)[:2])):
        export_module(graph.module, graph.args, {}, staging / graph.file, graph.input_names, graph.output_names,
                      graph.dynamic_shapes)
    _save_beside(pipe, out, staging, hub_task)
    pipe.model.generation_config.save_pretrained(str(staging))
    try:
        onnx = load_onnx_pipeline(staging, hub_task, FP32)
    except FolderError as err:
        raise export_error(str(err)) from None
    diff = 0.0
    for f, (tokens, want) in zip(batches, expected):
        _, got = decode_in_step(onnx.model, f, tokens)
        diff = max(diff, float((got - want).abs().max()))
    if not diff <= tolerance:
        raise export_error(f"the ONNX decoder's logits differ from PyTorch's by {diff:.2e} (max abs over "
                           f"{len(inputs)} {checked.source} clips, {STEPS} steps; tolerance {tolerance:g}); "
                           "not written")
    same = np.mean([a == b for a, b in zip(transcripts(pipe, inputs, batch, **kwargs),
                                           transcripts(onnx, inputs, batch, **kwargs))]) if inputs else 1.0
    return {
        **_about(out),
        "graphs": {g: {"inputs": [i.name for i in onnx.model.sessions[g].get_inputs()],
                       "outputs": [o.name for o in onnx.model.sessions[g].get_outputs()]} for g in seq2seq.GRAPHS},
        "check": {"inputs": checked.source, "compared": len(inputs), "decoding_steps": STEPS, "max_abs_diff": diff,
                  "tolerance": tolerance, "transcripts_equal": float(same)},
    }, onnx


def _quantize(pipe, fp32, staging: Path, task, spec, hub_task: dict, checked: Checked, batch: int, kwargs: dict,
              max_drop: float | None, generates: bool, outlier_ratio: float) -> dict[str, Any]:
    """model_quantized.onnx (Whisper, `generates`: each of its three graphs quantized) and its figures beside
    those of `fp32`, the checked ONNX pipeline, on all the check inputs."""
    from transformers import EvalPrediction

    def calibration():  # the model's inputs for the training sample, batch by batch
        if not checked.train:
            return None
        return [{k: v.numpy() for k, v in b.items()} for b in model_inputs(pipe, task, checked.train, batch, kwargs)]

    if generates:  # Whisper's graphs are transformers: dynamic quantization, no calibration
        method, outliers = "dynamic", None
        for g in seq2seq.GRAPHS:
            dynamic(staging / g, staging / seq2seq.quantized(g))
    else:
        method, outliers = int8(staging / FP32, staging / INT8, calibration, outlier_ratio)
    pipes = {"fp32": fp32, "int8": load_onnx_pipeline(staging, hub_task, INT8)}
    texts = ({name: transcripts(p, checked.inputs, batch, **kwargs) for name, p in pipes.items()}
             if task.score_texts else {})
    if generates:  # what the two generate: the share of identical transcripts
        agree = float(np.mean([a == b for a, b in zip(texts["fp32"], texts["int8"])])) if checked.inputs else 1.0
    else:
        scores = {name: raw_scores(p, task, checked.inputs, batch, kwargs) for name, p in pipes.items()}
        kept = ~np.isnan(scores["fp32"]).any(-1)
        agree = float((scores["fp32"].argmax(-1) == scores["int8"].argmax(-1))[kept].mean())
    report = {"method": method, "how": describe(method, outliers), **({"outliers": outliers} if outliers else {}),
              "samples": len(checked.inputs), "inputs": checked.source,
              "transcripts_equal" if generates else "argmax_agreement": agree}
    if checked.split is None:
        return report
    if task.score_texts:  # a recogniser: the pipelines' transcripts against the references (WER, CER)
        score, references = task.score_texts(spec), list(checked.split["labels"])
        for name in pipes:
            report[name] = score(references, texts[name])
    else:
        compute = task.compute_metrics(spec)
        for name, found in scores.items():
            labels = word_label_array(checked.split, found) if task.entities else label_array(checked.split)
            report[name] = compute(EvalPrediction(predictions=found, label_ids=labels))
    metric, greater = task.best_metric(spec)
    metric = metric.removeprefix("eval_")
    drop = 100 * (report["fp32"][metric] - report["int8"][metric]) * (1 if greater else -1)
    report |= {"metric": metric, "drop_points": drop, "max_drop_points": max_drop}
    lost = (f"int8 {metric} is {report['int8'][metric]:.4f} against fp32's {report['fp32'][metric]:.4f} on the "
            f"{checked.source} ({drop:.2f} points lost")
    rate = greater or task.score_texts is not None  # a score or an error rate; a regression's error is reported
    if rate and max_drop is not None and drop > max_drop:
        raise export_error(f"{lost}, at most {max_drop:g} allowed); not written")
    if rate and drop > WARN_DROP:
        log.warning("export: %s)", lost)
    return report
