"""`hf-transfer serve`: answers equal `predict`'s (text, entities, audio, transcripts, images), concurrent
requests share model calls, bad input is a 4xx one-line JSON error and the server goes on; a bad folder or
a busy port is one line and exit 2. Tiny runs, in process (FastAPI's TestClient); the slow tier starts the
real command on 127.0.0.1 and puts a bounded load on it (benchmarks/serve_load.py)."""

from __future__ import annotations

import asyncio
import io
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from hf_transfer import finetune  # noqa: E402
from hf_transfer.cli import main  # noqa: E402
from hf_transfer.outputs.predict import predict  # noqa: E402
from hf_transfer.errors import HfTransferError  # noqa: E402
from hf_transfer.outputs.batcher import Batcher  # noqa: E402
from hf_transfer.outputs.serve import create_app, load  # noqa: E402
from tests.test_token_classification import ner_files, ner_recipe  # noqa: E402,F401 - a fixture
from tests.tiny import save_tiny_audio_model, speech_recipe, write_audio_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["good great drug", "awful pain after the day", "nice", "the worst and the best", "i hate it",
         "happy my pain was fine", "terrible", "helpful"]


def same(got: list, expected: list) -> None:
    """Rows of {label, score} (or entities, transcripts) equal up to float rounding of batched padding."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert [r.get("label") for r in g] == [r.get("label") for r in e]
        assert [r.get("score") for r in g] == pytest.approx([r.get("score") for r in e], abs=1e-5)


@pytest.fixture(scope="module")
def text_served(finished_run):
    return load(finished_run[0], device="cpu")


@pytest.fixture
def client(text_served):
    with TestClient(create_app(text_served, max_batch_size=4, batch_timeout_ms=5, max_body_bytes=4096)) as c:
        yield c


def test_text_answers_equal_predicts(client, finished_run):
    _, expected = predict(finished_run[0], TEXTS, top_k=2, device="cpu")
    response = client.post("/predict?top_k=2", json={"inputs": TEXTS})
    assert response.status_code == 200
    same(response.json()["predictions"], expected)
    one = client.post("/predict", json={"inputs": TEXTS[0]}).json()["predictions"]
    same([one], [expected[0][:1]])  # one text: its row; top_k 1 by default


def test_health_and_info_describe_the_model(client, finished_run):
    health = client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["task"] == "text-classification" and body["input"] == "text"
    assert body["labels"] == ["negative", "positive"] and body["max_batch_size"] == 4
    info = client.get("/").json()
    assert "POST /predict" in info["endpoints"] and '{"inputs"' in info["endpoints"]["POST /predict"]
    assert info["batching"] == {"max_batch_size": 4, "batch_timeout_ms": 5}


BAD_TEXT = [
    (b'{"inputs": ', "application/json", 400, "body is not JSON"),
    (b'{"text": "good"}', "application/json", 400, 'missing field "inputs"'),
    (b'["good"]', "application/json", 400, 'missing field "inputs"'),
    (b'{"inputs": 3}', "application/json", 400, '"inputs" must be a text or a non-empty list of texts, got int'),
    (b'{"inputs": []}', "application/json", 400, '"inputs" is an empty list'),
    (b'{"inputs": ["good", 7]}', "application/json", 400, '"inputs"[1] must be a text, got int'),
    (b'{"inputs": "   "}', "application/json", 400, '"inputs" is an empty text'),
    (b'{"inputs": ["good", ""]}', "application/json", 400, '"inputs"[1] is an empty text'),
    (b"", "application/json", 400, "empty body"),
    (b"\xff\xfe\x00garbage", "application/json", 400, "body is not JSON"),
    (b"[" * 2000 + b"]" * 2000, "application/json", 400, "body is not JSON (nested too deeply)"),
    (b'{"inputs": ["good", "bad \\ud800"]}', "application/json", 400,
     '"inputs"[1] is not valid Unicode (a lone surrogate at character 4)'),
    (b'{"inputs": "' + b"good " * 1000 + b'"}', "application/json", 413, "over the limit of 4096 bytes"),
    (b"\x89PNG\r\n", "image/png", 415, "this model reads text"),
]


@pytest.mark.parametrize("body, kind, status, message", BAD_TEXT, ids=[m for *_, m in BAD_TEXT])
def test_bad_text_input_is_a_4xx_one_line_error_and_serving_goes_on(client, body, kind, status, message):
    response = client.post("/predict", content=body, headers={"Content-Type": kind})
    assert response.status_code == status
    assert set(response.json()) == {"error"} and message in response.json()["error"]
    assert "\n" not in response.json()["error"]
    assert client.post("/predict", json={"inputs": "good"}).status_code == 200


TEXT_VARIANTS = {
    "lora": ({"strategy": "lora", "r": 2}, {}),
    "multi-label": ({}, {"problem_type": "multi_label_classification", "label_column": ["is_good", "is_bad"],
                         "label_names": None}),
    "regression": ({}, {"problem_type": "regression", "label_column": "score", "label_names": None}),
}


@pytest.mark.parametrize("variant", sorted(TEXT_VARIANTS))
def test_adapters_multi_label_and_regression_answer_as_predict(variant, tiny_bert, sentiment_files, tmp_path):
    from tests.tiny import text_recipe

    strategy, data = TEXT_VARIANTS[variant]
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out", **strategy)
    recipe["data"] |= data
    finetune(recipe)
    _, expected = predict(tmp_path / "out", TEXTS, top_k=2, device="cpu")
    with TestClient(create_app(load(tmp_path / "out", device="cpu"))) as c:
        answer = c.post("/predict?top_k=2", json={"inputs": TEXTS})
    assert answer.status_code == 200
    same(answer.json()["predictions"], expected)


@pytest.mark.parametrize("query, status", [("top_k=0", 400), ("top_k=x", 400), ("top_k=-1", 400), ("top_k=5", 200)])
def test_top_k_is_checked(client, query, status):
    response = client.post(f"/predict?{query}", json={"inputs": "good"})
    assert response.status_code == status
    if status == 200:
        assert len(response.json()["predictions"]) == 2  # all the labels there are


def test_top_k_in_the_body_parameters_as_the_inference_api_sends_it(client, finished_run):
    _, expected = predict(finished_run[0], TEXTS, top_k=2, device="cpu")
    answer = client.post("/predict", json={"inputs": TEXTS, "parameters": {"top_k": 2}})
    assert answer.status_code == 200
    same(answer.json()["predictions"], expected)
    assert client.post("/predict?top_k=2", json={"inputs": TEXTS, "parameters": {"top_k": 2}}).status_code == 200


@pytest.mark.parametrize("body, query, message", [
    # before: answered 200 with one label each, the top_k ignored
    ({"inputs": "good", "top_k": 2}, "", """unknown field 'top_k': send {"inputs": ..., "parameters": {"top_k": N}}"""),
    ({"inputs": "good", "parameters": {"top_k": 0}}, "", '"parameters"."top_k" must be an integer >= 1, got 0'),
    ({"inputs": "good", "parameters": {"top_k": True}}, "", '"parameters"."top_k" must be an integer >= 1, got true'),
    ({"inputs": "good", "parameters": {"truncation": False}}, "", '"parameters" takes {"top_k": N}, got '),
    ({"inputs": "good", "parameters": [2]}, "", '"parameters" takes {"top_k": N}, got [2]'),
    ({"inputs": "good", "parameters": {"top_k": 2}}, "?top_k=1", "top_k is 1 in the query but 2 in the body"),
])
def test_body_fields_other_than_inputs_and_parameters_are_named(client, body, query, message):
    response = client.post(f"/predict{query}", json=body)
    assert response.status_code == 400 and response.json()["error"].startswith(message)


@pytest.fixture(scope="module")
def pair_run(tiny_bert, tmp_path_factory):
    """A tiny text pair classifier (data.text_pair_column) and its test table."""
    import csv

    from tests.tiny import text_recipe

    root = tmp_path_factory.mktemp("pairs")
    files = {}
    for split, n in (("train", 16), ("test", 6)):
        files[split] = str(root / f"{split}.csv")
        with open(files[split], "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("premise", "hypothesis", "label")] + [
                (TEXTS[i % 8], TEXTS[(i + 3) % 8], "positive" if i % 2 else "negative") for i in range(n)])
    recipe = text_recipe(tiny_bert, files, root / "run")
    recipe["data"].update(text_column="premise", text_pair_column="hypothesis")
    finetune(recipe)
    return root / "run", files["test"]


def test_a_text_pair_model_takes_pairs_in_predict_and_serve(pair_run, client):
    from transformers import pipeline

    out, table = pair_run
    items, results = predict(out, [table], top_k=2, device="cpu")
    assert items[0] == {"text": TEXTS[0], "text_pair": TEXTS[3]}
    plain = pipeline("text-classification", model=str(out), device="cpu")(items, top_k=2)
    same(results, plain)
    with pytest.raises(HfTransferError, match=r"^predict: .* classifies text pairs \(data.text_pair_column "
                                              r"'hypothesis'\); give a table .* with columns 'premise' and "
                                              r"'hypothesis', not 'good'$"):
        predict(out, ["good"])  # before: classified as a single text
    with TestClient(create_app(load(out, device="cpu"))) as pairs:
        answer = pairs.post("/predict?top_k=2", json={"inputs": items[:3]})
        assert answer.status_code == 200
        same(answer.json()["predictions"], results[:3])
        one = pairs.post("/predict?top_k=2", json={"inputs": items[0]}).json()["predictions"]
        same([one], results[:1])
        refused = pairs.post("/predict", json={"inputs": "good"})  # before: classified as a single text
        assert refused.status_code == 400 and refused.json()["error"] == (
            '"inputs" must be a text pair {"text": ..., "text_pair": ...} or a non-empty list of them (this model '
            'classifies text pairs), got str')
        refused = pairs.post("/predict", json={"inputs": ["good"]})
        assert refused.status_code == 400 and refused.json()["error"] == (
            '"inputs"[0] must be {"text": ..., "text_pair": ...}: this model classifies text pairs')
        assert '"text_pair"' in pairs.get("/").json()["endpoints"]["POST /predict"]
        empty = pairs.post("/predict", json={"inputs": [{"text": "a", "text_pair": " "}]})
        assert empty.status_code == 400 and empty.json()["error"] == '"inputs"[0] has an empty or non-text "text_pair"'
    single = client.post("/predict", json={"inputs": [{"text": "a", "text_pair": "b"}]})
    assert single.status_code == 400 and single.json()["error"] == (
        '"inputs"[0] must be a text, got an object: this model classifies single texts')


def test_unknown_routes_and_methods_answer_json(client):
    assert client.get("/nowhere").status_code == 404 and "error" in client.get("/nowhere").json()
    assert client.get("/predict").status_code == 405 and "error" in client.get("/predict").json()


def test_concurrent_requests_share_a_model_call(text_served, finished_run):
    _, expected = predict(finished_run[0], TEXTS, top_k=1, device="cpu")
    answers: dict[int, list] = {}
    with TestClient(create_app(text_served, max_batch_size=8, batch_timeout_ms=300)) as c:
        def ask(i: int) -> None:
            answers[i] = c.post("/predict", json={"inputs": TEXTS[i]}).json()["predictions"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(TEXTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        served = c.get("/health").json()["served"]
    same([answers[i] for i in range(len(TEXTS))], expected)
    assert served["requests"] == len(TEXTS) and served["largest_batch"] > 1 and served["batches"] < len(TEXTS)


def test_batcher_keeps_to_the_size_answers_in_order_and_isolates_a_failing_request():
    calls: list[list] = []

    def call(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("cannot read 'bad'\nsecond line")
        time.sleep(0.01)
        return [[{"label": x, "score": 1.0}, {"label": "other", "score": 0.0}] for x in items]

    async def scenario():
        batcher = Batcher(call, max_batch_size=4, timeout_s=0.05)
        worker = asyncio.create_task(batcher.run())
        jobs = [batcher.submit([f"t{i}"], top_k=1) for i in range(6)] + [batcher.submit(["a", "b", "c", "d", "e"], 2)]
        answers = await asyncio.gather(*jobs)
        failed = await asyncio.gather(batcher.submit(["bad"], 1), batcher.submit(["fine"], 1), return_exceptions=True)
        worker.cancel()
        return answers, failed, batcher.stats

    answers, failed, stats = asyncio.run(scenario())
    assert [a[0][0]["label"] for a in answers[:6]] == [f"t{i}" for i in range(6)]
    assert answers[6] == [[{"label": x, "score": 1.0}, {"label": "other", "score": 0.0}] for x in "abcde"]
    assert calls[:3] == [["t0", "t1", "t2", "t3"], ["t4", "t5"], ["a", "b", "c", "d", "e"]]  # an oversized request alone
    assert "cannot read 'bad'" in str(failed[0]) and "\n" not in str(failed[0]) and failed[0].status == 500
    assert failed[1] == [[{"label": "fine", "score": 1.0}]]  # batched with the failing one, answered alone
    assert stats["largest_batch"] == 5 and stats["requests"] == 8


def test_a_folder_that_is_no_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-transfer: error: serve: ") and err.count("\n") == 1 and "config.json" in err


def test_a_busy_port_is_one_line_and_exit_2(finished_run, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(finished_run[0]), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hf-transfer: error: serve: cannot listen on 127.0.0.1:{port}") and err.count("\n") == 1


def test_without_the_serve_extra_the_command_says_what_to_install(tmp_path):
    import subprocess

    code = ("import sys; sys.modules['uvicorn'] = None; from hf_transfer.cli import main; "
            f"sys.exit(main(['serve', {str(tmp_path)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "serve: needs FastAPI and uvicorn (uvicorn is missing): pip install 'hf-transfer-learning[serve]'" in proc.stderr


# --------------------------------------------------------------------------- audio


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-audio")
    files = write_audio_data(root / "tones")
    out = root / "run"
    finetune(speech_recipe(save_tiny_audio_model(root / "wav2vec2", "wav2vec2"), files["csv"], out))
    return out, sorted((root / "tones" / "wav").glob("test_*.wav"))


def test_audio_answers_equal_predicts_and_bad_audio_is_a_4xx(audio_run):
    out, clips = audio_run
    # one clip a time, as each request comes alone here (a batch pads its clips: a model without an
    # attention mask, as this wav2vec2-base-style one, then scores ~1e-5 apart, in predict as in serve)
    expected = [predict(out, [str(c)], top_k=2, device="cpu")[1][0] for c in clips[:3]]
    with TestClient(create_app(load(out, device="cpu"), max_batch_size=4)) as c:
        got = [c.post("/predict?top_k=2", content=clip.read_bytes(), headers={"Content-Type": "audio/wav"})
               for clip in clips[:3]]
        assert [r.status_code for r in got] == [200] * 3
        same([r.json()["predictions"] for r in got], expected)
        assert c.get("/health").json()["input"] == "speech"
        silent = io.BytesIO()
        import soundfile

        soundfile.write(silent, np.zeros(0, dtype="float32"), 8000, format="WAV")
        broken = io.BytesIO()  # JSON cannot carry the NaN scores: a 500
        soundfile.write(broken, np.array([0.1, np.nan, 0.2] * 300, dtype="float32"), 8000, format="WAV", subtype="FLOAT")
        for body, kind, status, message in [
            (b"RIFF....WAVEfmt garbage", "audio/wav", 400, "not audio soundfile can decode"),
            (silent.getvalue(), "audio/wav", 400, "the audio is empty (0 samples)"),
            (broken.getvalue(), "audio/wav", 400, "the audio holds NaN or infinite samples"),
            (b"", "audio/wav", 400, "empty body"),
            (b'{"inputs": "x"}', "application/json", 415, "this model reads the audio file's bytes"),
        ]:
            response = c.post("/predict", content=body, headers={"Content-Type": kind})
            assert (response.status_code, set(response.json())) == (status, {"error"}), response.text
            assert message in response.json()["error"]
        assert c.post("/predict", content=clips[0].read_bytes(),
                      headers={"Content-Type": "application/octet-stream"}).status_code == 200
    (out.parent / "broken.wav").write_bytes(broken.getvalue())
    with pytest.raises(HfTransferError, match=r"^predict: .*broken\.wav holds NaN or infinite samples$"):
        predict(out, [str(out.parent / "broken.wav")], device="cpu")


# --------------------------------------------------------------------------- entities


def test_entities_answer_as_predict_and_numpy_scores_become_json_numbers(tiny_bert, ner_files, tmp_path):
    from hf_transfer.outputs.batcher import _top

    out = tmp_path / "ner"
    finetune(ner_recipe(tiny_bert, ner_files, out) | {"verify": False})
    texts = ["the good day was great", "bad pain after the best day"]
    _, expected = predict(out, texts, device="cpu")
    with TestClient(create_app(load(out, device="cpu"))) as c:
        assert c.get("/health").json()["task"] == "token-classification"
        answer = c.post("/predict", json={"inputs": texts})
        assert answer.status_code == 200
        got = answer.json()["predictions"]
    assert [[e["entity_group"] for e in row] for row in got] == [[e["entity_group"] for e in row] for row in expected]
    assert [e["score"] for row in got for e in row] == pytest.approx(
        [float(e["score"]) for row in expected for e in row], abs=1e-5)  # a 2-step run may find none: below
    entity = {"entity_group": "pos", "score": np.float32(0.5), "word": "good", "start": np.int64(4), "end": 8}
    row = _top([entity], top_k=1)
    assert row == [{"entity_group": "pos", "score": 0.5, "word": "good", "start": 4, "end": 8}]
    assert type(row[0]["score"]) is float and type(row[0]["start"]) is int


def test_speech_recognition_answers_the_transcript_predict_gives(tmp_path):
    from tests.tiny_asr import asr_recipe, save_tiny_ctc_body, write_transcribed_tones

    files = write_transcribed_tones(tmp_path / "data")
    out = tmp_path / "asr"
    finetune(asr_recipe(save_tiny_ctc_body(tmp_path / "ctc"), files, out))
    clip = Path(files["test"]).parent / "wav" / "test_0.wav"
    _, expected = predict(out, [str(clip)], device="cpu")
    with TestClient(create_app(load(out, device="cpu"))) as c:
        health = c.get("/health").json()
        answer = c.post("/predict", content=clip.read_bytes(), headers={"Content-Type": "audio/wav"})
    assert health["task"] == "automatic-speech-recognition" and health["labels"] is None
    assert answer.status_code == 200 and answer.json()["predictions"] == expected[0] and "text" in expected[0][0]


# --------------------------------------------------------------------------- image


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    from tests.tiny_vision import save_tiny_timm, vision_recipe, write_imagefolder

    root = tmp_path_factory.mktemp("serve-image")
    out = root / "run"
    finetune(vision_recipe(save_tiny_timm(root / "resnet"), write_imagefolder(root / "images"), out))
    return out, sorted((root / "images" / "test").rglob("*.png"))[:3]


def test_image_answers_equal_predicts_and_bad_images_are_a_4xx(image_run):
    out, pngs = image_run
    _, expected = predict(out, [str(p) for p in pngs], top_k=2, device="cpu")
    with TestClient(create_app(load(out, device="cpu"), max_batch_size=4)) as c:
        got = [c.post("/predict?top_k=2", content=png.read_bytes(), headers={"Content-Type": "image/png"})
               for png in pngs]
        same([r.json()["predictions"] for r in got], expected)
        for body, kind, status, message in [
            (b"\x89PNG\r\n\x1a\n truncated", "image/png", 400, "not an image PIL can decode"),
            (pngs[0].read_bytes()[:60], "image/png", 400, "not an image PIL can decode"),
            (b'{"inputs": "x"}', "application/json", 415, "this model reads the image file's bytes"),
        ]:
            response = c.post("/predict", content=body, headers={"Content-Type": kind})
            assert (response.status_code, set(response.json())) == (status, {"error"}), response.text
            assert message in response.json()["error"]
        assert c.get("/health").json()["served"]["requests"] == 3


# --------------------------------------------------------------------------- the real command under load


@pytest.mark.slow
def test_serve_command_under_bounded_load(finished_run):
    """`hf-transfer serve` on 127.0.0.1: 200 requests from 16 clients, none lost or failed."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import serve_load

    texts = [(f'{{"inputs": "{t}"}}'.encode(), "application/json") for t in TEXTS]
    for size in (1, 16):
        with serve_load.Server(finished_run[0], "--max-batch-size", str(size)) as server:
            result = serve_load.load(server.url, texts, requests=200, concurrency=16)
        print(f"\nmax batch {size}: {result}")
        assert result["ok"] == 200 and result["errors"] == 0 and result["statuses"] == {"200": 200}
        assert result["largest_batch"] <= size and (size == 1 or result["largest_batch"] > 1)
        assert server.proc.returncode is not None


def test_the_load_script_percentiles():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import serve_load

    assert serve_load.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and serve_load.percentile([5.0], 99) == 5.0
