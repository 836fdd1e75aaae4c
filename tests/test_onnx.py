"""`hf-transfer export --format onnx [--quantize int8]` and `predict` on the exported folder: tiny text, token,
vision (timm, ViT) and speech (Whisper encoder, wav2vec2, HuBERT; Whisper and CTC recognisers) models built in
code; the refusals."""

import json
import random
from pathlib import Path

import numpy as np
import onnx
import pytest

from hf_transfer import finetune
from hf_transfer.cli import main
from hf_transfer.errors import HfTransferError
from hf_transfer.outputs.export import export
from hf_transfer.outputs.onnx_model import FP32, INT8, load_onnx_pipeline
from hf_transfer.outputs.predict import predict, run, task_of_folder
from hf_transfer.outputs.verify import hub_user_task
from tests.tiny import save_tiny_audio_model, speech_recipe, text_recipe, tone, write_audio_data
from tests.tiny_vision import pattern, save_tiny_timm, save_tiny_vit, vision_recipe, write_imagefolder

TEXTS = ["good great drug", "bad", "awful terrible pain after the day it was the worst " * 3, "nice"]


def graph_axes(path: Path) -> dict[str, list]:
    """Graph input / output name -> its dimensions (a name for a dynamic one, a number for a fixed one)."""
    graph = onnx.load(str(path)).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.input, *graph.output]}


def same_predictions(folder: Path, exported: Path, inputs: list[str], top_k: int = 2, atol: float = 1e-4):
    """`predict` on the run and on its ONNX folder: the same labels in the same order, scores within atol."""
    _, torch_rows = predict(folder, inputs, top_k=top_k, batch_size=3)
    _, onnx_rows = predict(exported, inputs, top_k=top_k, batch_size=3)
    assert [[r["label"] for r in row] for row in onnx_rows] == [[r["label"] for r in row] for row in torch_rows]
    np.testing.assert_allclose([[r["score"] for r in row] for row in onnx_rows],
                               [[r["score"] for r in row] for row in torch_rows], atol=atol)


def test_text_run_exports_checks_quantizes_and_predicts_the_same(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    dest = tmp_path / "onnx"
    assert main(["export", str(run_dir), str(dest), "--format", "onnx", "--quantize", "int8", "--max-drop", "50"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"export: {dest} (model.onnx, model_quantized.onnx); ONNX logits within")
    written = {p.name for p in dest.iterdir()}
    assert {"config.json", "tokenizer.json", "recipe.yaml", "export.json", FP32, INT8} <= written
    axes = graph_axes(dest / FP32)
    assert axes == {"input_ids": ["batch_size", "sequence_length"], "attention_mask": ["batch_size", "sequence_length"],
                    "token_type_ids": ["batch_size", "sequence_length"], "logits": ["batch_size", 2]}
    report = json.loads((dest / "export.json").read_text())
    assert report["check"]["inputs"] == "test-split" and report["check"]["compared"] == 16
    assert report["check"]["max_abs_diff"] <= report["check"]["tolerance"] == 1e-4
    quant = report["quantization"]
    assert quant["method"] == "dynamic" and quant["samples"] == 16 and quant["metric"] == "accuracy"
    assert quant["drop_points"] <= 50 == quant["max_drop_points"] and 0 <= quant["argmax_agreement"] <= 1
    # the outlier split is calibrated on a sample of the run's training texts
    assert quant["outliers"]["calibration_inputs"] > 0 and quant["outliers"]["products"] >= 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert quant["fp32"]["accuracy"] == pytest.approx(metrics["test"]["test_accuracy"])

    # predict on the folder runs model_quantized.onnx; fp32 ONNX and PyTorch agree on every score
    same_predictions(run_dir, dest, TEXTS, atol=0.05)
    task, spec = task_of_folder(dest)
    fp32 = load_onnx_pipeline(dest, hub_user_task(task), FP32)
    _, torch_rows = predict(run_dir, TEXTS, top_k=2, batch_size=3)
    onnx_rows = run(fp32, task, spec, TEXTS, top_k=2, batch_size=3)
    assert [[r["label"] for r in row] for row in onnx_rows] == [[r["label"] for r in row] for row in torch_rows]
    np.testing.assert_allclose([[r["score"] for r in row] for row in onnx_rows],
                               [[r["score"] for r in row] for row in torch_rows], atol=1e-5)
    assert main(["predict", str(dest), *TEXTS[:2], "--top-k", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_refusals_are_one_line(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / FP32).write_bytes(b"")
    for args, message in [
        ([str(run_dir), str(tmp_path / "taken")], "exists; pass --overwrite to replace it"),
        ([str(tmp_path / "empty")], "empty/config.json is missing"),
        ([str(tmp_path / "exported")], "is an exported ONNX folder already; export the run folder it came from"),
        # replacing never deletes what is read, nor a folder that is not an export
        ([str(run_dir), str(run_dir), "--overwrite"], f"{run_dir} is the folder {run_dir}, which it reads"),
        ([str(run_dir), str(run_dir.parent), "--overwrite"], f"{run_dir.parent} is a folder that holds {run_dir}"),
        ([str(run_dir), str(tmp_path / "taken"), "--overwrite"],
         "taken is not an ONNX export folder; --overwrite replaces only an ONNX export folder"),
    ]:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hf-transfer: error: export: ") and err.count("\n") == 1 and message in err
    assert not (run_dir / "onnx").exists() and (run_dir / "metrics.json").is_file()
    assert (tmp_path / "taken" / "file").read_text() == "x"


def test_a_failed_check_writes_nothing(finished_run, tmp_path):
    run_dir, _ = finished_run
    with pytest.raises(HfTransferError, match=r"logits differ from PyTorch's by .* tolerance -1\); not written"):
        export(run_dir, tmp_path / "onnx", tolerance=-1)
    with pytest.raises(HfTransferError, match=r"int8 accuracy is .* points lost, at most -1 allowed\); not written"):
        export(run_dir, tmp_path / "onnx", quantize="int8", max_drop=-1)
    assert not any(tmp_path.iterdir())


def test_a_lora_adapter_is_merged_in_memory(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "lora"
    finetune(text_recipe(tiny_bert, sentiment_files, out, strategy="lora", r=2))
    result = export(out)
    assert result.dest == out / "onnx" and (out / "adapter_config.json").is_file()
    assert not (out / "onnx" / "adapter_config.json").exists()
    same_predictions(out, out / "onnx", TEXTS)


def test_a_token_classifier_without_recipe_is_checked_on_dummy_inputs(tmp_path):
    from transformers import BertForTokenClassification, BertTokenizer

    from tests.tiny import save_tiny_bert

    body = save_tiny_bert(tmp_path / "bert")
    model = BertForTokenClassification.from_pretrained(body, num_labels=3, id2label={0: "O", 1: "B-X", 2: "I-X"})
    model.save_pretrained(tmp_path / "ner")
    BertTokenizer.from_pretrained(body).save_pretrained(tmp_path / "ner")
    result = export(tmp_path / "ner", quantize="int8")
    assert result.report["check"]["inputs"] == "dummy" and "accuracy" not in result.report["quantization"]
    assert graph_axes(result.dest / FP32)["logits"] == ["batch_size", "sequence_length", 3]
    _, torch_rows = predict(tmp_path / "ner", TEXTS)
    task, spec = task_of_folder(result.dest)
    onnx_rows = run(load_onnx_pipeline(result.dest, hub_user_task(task), FP32), task, spec, TEXTS)
    assert [[(e["entity_group"], e["start"]) for e in row] for row in onnx_rows] == \
           [[(e["entity_group"], e["start"]) for e in row] for row in torch_rows]


@pytest.fixture(scope="module")
def asr_kit(tmp_path_factory):
    from tests.tiny_asr import save_tiny_ctc_body, save_tiny_whisper_asr, write_transcribed_tones

    root = tmp_path_factory.mktemp("asr")
    return {"whisper": save_tiny_whisper_asr(root / "whisper"), "ctc": save_tiny_ctc_body(root / "ctc"),
            "files": write_transcribed_tones(root / "data")}


def transcribes_as_exported(out: Path, dest: Path, test_csv: str, quant: dict):
    """The fp32 ONNX pipeline transcribes 3 test clips as the run's PyTorch pipeline does (the same decoding:
    greedy for CTC, the pipeline's beams for Whisper); `predict` on DEST runs the int8 model, and `evaluate` on
    DEST reproduces export.json's int8 WER and CER. Returns the fp32 pipeline."""
    from hf_transfer.outputs.evaluate import evaluate

    clips = [str(Path(test_csv).parent / f"wav/test_{i}.wav") for i in range(3)]
    _, torch_rows = predict(out, clips, batch_size=2)
    task, spec = task_of_folder(out)
    fp32 = load_onnx_pipeline(dest, hub_user_task(task), FP32)
    onnx_rows = run(fp32, task, spec, task.read_inputs(clips), batch_size=2)
    assert [row[0]["text"] for row in onnx_rows] == [row[0]["text"] for row in torch_rows]
    _, int8_rows = predict(dest, clips, batch_size=2)  # predict picks the quantized model
    assert len(int8_rows) == 3 and all(isinstance(row[0]["text"], str) for row in int8_rows)
    scored = evaluate(dest, [test_csv])[test_csv]["metrics"]
    assert scored["wer"] == pytest.approx(quant["int8"]["wer"]) and scored["cer"] == pytest.approx(quant["int8"]["cer"])
    return fp32


def test_a_ctc_recogniser_exports_quantizes_and_transcribes_the_same(asr_kit, tmp_path):
    from tests.tiny_asr import asr_recipe

    out = tmp_path / "ctc"
    finetune(asr_recipe(asr_kit["ctc"], asr_kit["files"], out))
    result = export(out, quantize="int8")
    assert graph_axes(result.dest / FP32)["input_values"] == ["batch_size", "sequence_length"]
    report = json.loads((result.dest / "export.json").read_text())
    assert report["check"]["inputs"] == "test-split" and report["check"]["max_abs_diff"] <= 1e-4
    quant = report["quantization"]
    assert quant["metric"] == "wer" and {"wer", "cer"} <= set(quant["fp32"]) and {"wer", "cer"} <= set(quant["int8"])
    assert 0 <= quant["argmax_agreement"] <= 1 and "WER" not in result.summary() and "wer fp32" in result.summary()
    transcribes_as_exported(out, result.dest, asr_kit["files"]["test"], quant)


def test_a_whisper_recogniser_exports_three_graphs_and_generates_the_same(asr_kit, tmp_path):
    from hf_transfer.outputs.onnx_seq2seq import DECODER, DECODER_PAST, ENCODER, GRAPHS, quantized
    from tests.tiny_asr import asr_recipe

    out = tmp_path / "whisper"
    finetune(asr_recipe(asr_kit["whisper"], asr_kit["files"], out))
    result = export(out, quantize="int8")
    assert {p.name for p in result.dest.glob("*.onnx")} == {*GRAPHS, *map(quantized, GRAPHS)}
    assert graph_axes(result.dest / ENCODER)["input_features"][0] == "batch_size"
    assert graph_axes(result.dest / DECODER)["input_ids"] == ["batch_size", "decoder_sequence_length"]
    past = graph_axes(result.dest / DECODER_PAST)
    assert past["past_key_values.0.decoder.key"][0::2] == ["batch_size", "past_sequence_length"]
    assert past["input_ids"] == ["batch_size", "new_tokens"] and "present.0.encoder.key" not in past
    report = json.loads((result.dest / "export.json").read_text())
    check = report["check"]
    assert check["inputs"] == "test-split" and check["compared"] == 6 and check["decoding_steps"] == 8
    assert check["max_abs_diff"] <= 1e-4 and check["transcripts_equal"] == 1.0
    quant = report["quantization"]
    assert quant["metric"] == "wer" and {"wer", "cer"} <= set(quant["int8"]) and 0 <= quant["transcripts_equal"] <= 1
    assert "8 decoding steps" in result.summary() and "transcripts equal to fp32's" in result.summary()
    fp32 = transcribes_as_exported(out, result.dest, asr_kit["files"]["test"], quant)
    assert fp32.model.can_generate() and not any(p.device.type != "meta" for p in fp32.model.parameters())


def test_a_whisper_export_off_tolerance_writes_nothing(asr_kit, tmp_path):
    with pytest.raises(HfTransferError, match=r"decoder's logits differ from PyTorch's by .* 8 steps; tolerance 1e-12"):
        export(asr_kit["whisper"], tmp_path / "onnx", tolerance=1e-12)
    assert not (tmp_path / "onnx").exists() and not list(tmp_path.glob("*onnx*"))


def test_whisper_graphs_decode_as_pytorch_does_step_by_step(asr_kit, tmp_path):
    """On the untrained tiny Whisper (distinct logits, no training): the ONNX model fed PyTorch's greedy tokens
    gives PyTorch's logits at every step, and greedy generate() gives PyTorch's tokens."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from hf_transfer.outputs.onnx_graph import decode_in_step

    dest = export(asr_kit["whisper"], tmp_path / "onnx").dest  # a model folder without a run: dummy clips
    model = WhisperForConditionalGeneration.from_pretrained(asr_kit["whisper"]).eval()
    onnx_model = load_onnx_pipeline(dest, {"pipeline": "automatic-speech-recognition",
                                           "processor": "feature_extractor",
                                           "processors": ["feature_extractor", "tokenizer"]}).model
    features = torch.randn(3, 80, 2 * model.config.max_source_positions)
    tokens, want = decode_in_step(model, features)
    _, got = decode_in_step(onnx_model, features, tokens)
    assert got.shape == want.shape == (3, 8, model.config.vocab_size)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    for beams in (1, 2):
        torch.testing.assert_close(onnx_model.generate(features, num_beams=beams, max_new_tokens=6),
                                   model.generate(features, num_beams=beams, max_new_tokens=6))


def test_a_multilingual_whisper_detects_the_language_through_the_graphs(tmp_path):
    """No language given: generate() asks the decoder for the language token first (a one-token prompt
    through decoder_model.onnx), then transcribes; the ONNX model picks PyTorch's tokens."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from tests.tiny_asr import save_tiny_whisper_asr

    folder = save_tiny_whisper_asr(tmp_path / "multi", seed=1, multilingual=True)
    dest = export(folder, tmp_path / "onnx").dest
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    onnx_model = load_onnx_pipeline(dest, {"pipeline": "automatic-speech-recognition",
                                           "processor": "feature_extractor",
                                           "processors": ["feature_extractor", "tokenizer"]}).model
    features = torch.randn(2, 80, 2 * model.config.max_source_positions)
    detected = onnx_model.detect_language(input_features=features)
    torch.testing.assert_close(detected, model.detect_language(input_features=features))
    assert set(detected.tolist()) <= set(model.generation_config.lang_to_id.values())
    torch.testing.assert_close(onnx_model.generate(features, max_new_tokens=4), model.generate(features, max_new_tokens=4))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("images"), n_train=6, n_test=3)


def _image_paths(root: Path) -> list[str]:
    paths = []
    for i, kind in enumerate(["horizontal", "plain", "vertical"]):
        path = root / f"{kind}.png"
        pattern(kind, random.Random(i), grey=i == 1).save(path)
        paths.append(str(path))
    return paths


def test_timm_run_is_quantized_statically_on_training_images(images, tmp_path):
    out = tmp_path / "timm"
    finetune(vision_recipe(save_tiny_timm(tmp_path / "resnet", "test_resnet"), images, out))
    result = export(out, quantize="int8")
    assert graph_axes(result.dest / FP32)["pixel_values"] == ["batch_size", 3, 32, 32]
    quant = result.report["quantization"]
    assert quant["method"] == "static" and quant["inputs"] == "test-split" and quant["samples"] == 9
    assert result.report["check"]["max_abs_diff"] <= 1e-4
    same_predictions(out, result.dest, _image_paths(tmp_path), atol=0.1)  # the int8 model's scores


def test_vit_folder_exports_with_its_image_processor(tmp_path):
    folder = save_tiny_vit(tmp_path / "vit")
    result = export(folder)
    assert result.report["check"]["inputs"] == "dummy" and result.report["files"] == [FP32]
    same_predictions(folder, result.dest, _image_paths(tmp_path))


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    return write_audio_data(tmp_path_factory.mktemp("tones"), n_train=8, n_test=4)


def _wav_paths(root: Path) -> list[str]:
    import soundfile as sf

    paths = []
    for i, label in enumerate(["low", "high", "low"]):
        path = root / f"{i}.wav"
        sf.write(path, tone(random.Random(i), label, 16000), 16000)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("family", ["whisper", "wav2vec2", "hubert"])
def test_speech_runs_export_and_predict_the_same(family, tones, tmp_path):
    out = tmp_path / family
    finetune(speech_recipe(save_tiny_audio_model(tmp_path / "body", family), tones["csv"], out))
    result = export(out, quantize="int8" if family == "whisper" else None)
    axes = graph_axes(result.dest / FP32)
    if family == "whisper":  # the encoder shortened to the recipe's max_duration (1 s: 100 mel frames)
        assert axes["input_features"] == ["batch_size", 80, 100]
        assert result.report["quantization"]["method"] == "dynamic"
    else:
        assert axes["input_values"] == ["batch_size", "sequence_length"]
        assert ("attention_mask" in axes) == (family == "hubert")  # its feature extractor returns one
    same_predictions(out, result.dest, _wav_paths(tmp_path), atol=0.05 if family == "whisper" else 1e-4)


def test_evaluate_and_serve_run_an_onnx_folder_as_predict_does(finished_run, sentiment_files, tmp_path):
    """`evaluate` scores an export folder through onnxruntime (fp32: the PyTorch run's metrics) and `serve`
    answers from it what `predict` prints for it (int8 when present)."""
    from fastapi.testclient import TestClient

    from hf_transfer.outputs.evaluate import evaluate
    from hf_transfer.outputs.onnx_model import OnnxModel
    from hf_transfer.outputs.serve import create_app, load

    run_dir, _ = finished_run
    dest = tmp_path / "onnx"
    assert main(["export", str(run_dir), str(dest), "--quantize", "int8", "--max-drop", "50"]) == 0
    fp32 = tmp_path / "fp32"
    fp32.mkdir()
    for path in dest.iterdir():
        if path.name != INT8:
            (fp32 / path.name).write_bytes(path.read_bytes())
    test = sentiment_files["test"]
    expected = evaluate(run_dir, [test])[test]["metrics"]
    got = evaluate(fp32, [test])[test]["metrics"]
    assert got.keys() == expected.keys() and got == pytest.approx(expected, abs=1e-4)

    served = load(dest)
    assert isinstance(served.pipe.model, OnnxModel)  # int8: the answers below are predict's on the int8 model
    _, rows = predict(dest, TEXTS, top_k=2)
    with TestClient(create_app(served, max_batch_size=4, batch_timeout_ms=5)) as client:
        answer = client.post("/predict?top_k=2", json={"inputs": TEXTS}).json()["predictions"]
    assert [[r["label"] for r in row] for row in answer] == [[r["label"] for r in row] for row in rows]
    np.testing.assert_allclose([[r["score"] for r in row] for row in answer],
                               [[r["score"] for r in row] for row in rows], atol=1e-5)
    (fp32 / "recipe.yaml").unlink()
    with pytest.raises(HfTransferError, match="an ONNX folder without recipe.yaml"):
        evaluate(fp32, [test])
