"""`hf-transfer serve OUTPUT_DIR`: an HTTP inference server (FastAPI on uvicorn) for a saved run.

The folder loads as `predict` loads it (full model or PEFT adapter, any task; an `hf-transfer export`
folder through onnxruntime), and every answer is
what `predict` would print for the same input: `predict.run` makes the pipeline call. Concurrent
requests are gathered by one worker into a single pipeline call (up to `max_batch_size` inputs, waiting
at most `batch_timeout_ms` for more); the model runs in a thread, one call at a time.

    POST /predict   text tasks: JSON {"inputs": "text"} or {"inputs": ["text", ...]}
                    image / audio tasks: the file's bytes as the body (Content-Type image/* or audio/*)
                    ?top_k=N: labels per input (classification; default 1)
    GET  /health    200 and the model's task and labels, and what the batcher has served
    GET  /          this API, described

Bad input is a 4xx answer {"error": "<one line>"}; the server goes on serving.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_transfer.errors import DependencyError, HfTransferError, first_line
from hf_transfer.arguments import is_port, require_count, require_tolerance
from hf_transfer.outputs.batcher import Batcher, RequestError
from hf_transfer.outputs.hubuser import FolderError
from hf_transfer.outputs.onnx_model import load_any_pipeline
from hf_transfer.outputs.predict import run, task_of_folder
from hf_transfer.outputs.verify import hub_user_task
from hf_transfer.tasks.audio import sample_fault
from hf_transfer.tasks.inputs import decode_audio, lone_surrogate

try:  # the `serve` extra
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException
except ImportError as err:
    raise DependencyError(f"serve: needs FastAPI and uvicorn ({err.name} is missing): "
                          "pip install 'hf-transfer-learning[serve]'") from None

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 2**20  # one request's body: a 10 MiB image or clip, or that much JSON
MAX_ITEMS = 256  # texts in one request
# model.modality -> what POST /predict takes
INPUTS = {
    "text": 'JSON {"inputs": "a text"} or {"inputs": ["a text", ...]}',
    "vision": "the image file's bytes as the body, Content-Type image/* (PNG, JPEG, ...)",
    "speech": "the audio file's bytes as the body, Content-Type audio/* (WAV, FLAC, OGG)",
}
PAIRS = ('JSON {"inputs": {"text": "a text", "text_pair": "its pair"}} or '
         '{"inputs": [{"text": ..., "text_pair": ...}, ...]}')
MEDIA_TYPES = {"vision": ("image/", "application/octet-stream"), "speech": ("audio/", "application/octet-stream")}


@dataclass
class Served:
    """A loaded run folder: its task record, recipe spec (None without recipe.yaml) and pipeline."""

    folder: Path
    task: Any
    spec: Any
    pipe: Any

    @property
    def pairs(self) -> bool:
        """Whether the model classifies text pairs (its recipe's data.text_pair_column)."""
        return bool(self.spec is not None and self.task.modality == "text" and self.spec.data.text_pair_column)

    @property
    def labels(self) -> list[str] | None:
        """The label names (classification) or tags (entities); None for a transcriber."""
        if self.task.score_texts:
            return None
        id2label = getattr(self.pipe.model.config, "id2label", None) or {}
        return [id2label[k] for k in sorted(id2label, key=int)]

    def __call__(self, items: list[Any]) -> list[list[dict[str, Any]]]:
        """Every label's score per input (each request keeps its own top_k), entities or transcripts."""
        return run(self.pipe, self.task, self.spec, items, top_k=max(len(self.labels or []), 1), batch_size=len(items))


def load(out: str | Path, device: str | None = None) -> Served:
    folder = Path(out)
    try:
        task, spec = task_of_folder(folder)
        return Served(folder, task, spec, load_any_pipeline(folder, hub_user_task(task), device))
    except FolderError as err:
        raise HfTransferError(f"serve: {err}") from None


# --------------------------------------------------------------------------- request bodies


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes (by Content-Length, else while it streams in)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise RequestError(413, f"body of {int(length)} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise RequestError(400, "empty body")
    return body


def body_top_k(data: dict[str, Any]) -> int | None:
    """top_k from the body's `parameters` (the Hugging Face Inference API's shape), None without one; any other
    field is refused, naming it (a top_k beside `inputs` would otherwise be ignored)."""
    unknown = sorted(set(data) - {"inputs", "parameters"})
    if unknown:
        raise RequestError(400, f"unknown field {', '.join(repr(k) for k in unknown)}: send {{\"inputs\": ..., "
                                f"\"parameters\": {{\"top_k\": N}}}} or POST /predict?top_k=N")
    parameters = data.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict) or set(parameters) - {"top_k"}:
        raise RequestError(400, f'"parameters" takes {{"top_k": N}}, got {json.dumps(parameters)[:60]}')
    top_k = parameters.get("top_k")
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise RequestError(400, f'"parameters"."top_k" must be an integer >= 1, got {json.dumps(top_k)[:60]}')
    return top_k


def _pair_fault(value: Any) -> str | None:
    """What is wrong with a text pair ({"text": ..., "text_pair": ...}), or None."""
    if not isinstance(value, dict) or set(value) != {"text", "text_pair"}:
        return 'must be {"text": ..., "text_pair": ...}: this model classifies text pairs'
    for key in ("text", "text_pair"):
        if not isinstance(value[key], str) or not value[key].strip():
            return f'has an empty or non-text "{key}"'
        if lone_surrogate(value[key]) is not None:
            return f'"{key}" is not valid Unicode (a lone surrogate)'
    return None


def text_items(body: bytes, pairs: bool = False) -> tuple[list[Any], bool, int | None]:
    """({"inputs": text or [texts], "parameters": {"top_k": N}}) -> (texts, whether one text was sent rather
    than a list, the body's top_k or None). `pairs`: a text pair model's inputs, {"text", "text_pair"} each."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        cause = "nested too deeply" if isinstance(err, RecursionError) else first_line(err)
        raise RequestError(400, f'body is not JSON ({cause}); send {{"inputs": "a text"}}') from None
    if not isinstance(data, dict) or "inputs" not in data:
        raise RequestError(400, 'missing field "inputs": send {"inputs": "a text"} or {"inputs": ["a text", ...]}')
    top_k = body_top_k(data)
    inputs = data["inputs"]
    single = isinstance(inputs, (dict if pairs else str))
    texts = [inputs] if single else inputs
    if not isinstance(texts, list) or not texts:
        what = ('a text pair {"text": ..., "text_pair": ...} or a non-empty list of them (this model classifies text '
                'pairs)' if pairs else "a text or a non-empty list of texts")
        raise RequestError(400, f'"inputs" must be {what}, got {type(inputs).__name__}'
                           if not isinstance(texts, list) else '"inputs" is an empty list')
    if len(texts) > MAX_ITEMS:
        raise RequestError(413, f'"inputs" holds {len(texts)} texts, over the limit of {MAX_ITEMS} per request')
    for i, text in enumerate(texts):
        where = '"inputs"' if single else f'"inputs"[{i}]'
        if pairs:
            fault = _pair_fault(text)
            if fault:
                raise RequestError(400, f"{where} {fault}")
            continue
        if isinstance(text, dict):
            raise RequestError(400, f"{where} must be a text, got an object: this model classifies single texts")
        if not isinstance(text, str):
            raise RequestError(400, f"{where} must be a text, got {type(text).__name__}")
        if not text.strip():
            raise RequestError(400, f"{where} is an empty text")
        bad = lone_surrogate(text)
        if bad is not None:
            raise RequestError(400, f"{where} is not valid Unicode (a lone surrogate at character {bad})")
    return texts, single, top_k


def image_item(body: bytes) -> Any:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(body))
        image.load()
    except Exception as err:  # noqa: BLE001 - PIL fails in many types on a bad file
        raise RequestError(400, f"the body is not an image PIL can decode ({first_line(err)})") from None
    return image


def audio_item(body: bytes) -> dict[str, Any]:
    try:
        audio = decode_audio(io.BytesIO(body))
    except Exception as err:  # noqa: BLE001 - libsndfile fails in several types on a bad file
        raise RequestError(400, f"the body is not audio soundfile can decode ({first_line(err)})") from None
    fault = sample_fault(audio["raw"])
    if fault:
        raise RequestError(400, f"the audio {fault}")
    return audio


def parse(modality: str, content_type: str, body: bytes, pairs: bool = False) -> tuple[list[Any], bool, int | None]:
    """(pipeline inputs, one input?, the body's top_k or None) from a request of a model of `modality` (`pairs`:
    one that classifies text pairs)."""
    media = content_type.split(";")[0].strip().lower()
    if modality == "text":
        if media.startswith(("image/", "audio/", "multipart/")):
            raise RequestError(415, f"this model reads text: send JSON {{\"inputs\": ...}}, not {media}")
        return text_items(body, pairs)
    if not media.startswith(MEDIA_TYPES[modality]):
        raise RequestError(415, f"this model reads {INPUTS[modality]}; got Content-Type {media or 'none'}")
    return [image_item(body) if modality == "vision" else audio_item(body)], True, None


def top_k_of(request: Request, in_body: int | None) -> int:
    """The query's top_k, else the body's, else 1; both given: refused unless they agree."""
    text = request.query_params.get("top_k")
    if text is None:
        return in_body or 1
    if not text.isdigit() or int(text) < 1:
        raise RequestError(400, f"top_k must be an integer >= 1, got {text!r}")
    if in_body is not None and in_body != int(text):
        raise RequestError(400, f"top_k is {text} in the query but {in_body} in the body's parameters; give one")
    return int(text)


# --------------------------------------------------------------------------- the app


def describe(served: Served, batcher: Batcher) -> dict[str, Any]:
    modality = served.task.modality
    example = ("curl -s localhost:8000/predict -H 'Content-Type: application/json' -d '{\"inputs\": \"a text\"}'"
               if modality == "text" else
               f"curl -s localhost:8000/predict -H 'Content-Type: {'image/png' if modality == 'vision' else 'audio/wav'}' "
               f"--data-binary @{'image.png' if modality == 'vision' else 'clip.wav'}")
    return {
        "name": "hf-transfer serve",
        "folder": str(served.folder),
        "task": served.task.pipeline_task,
        "endpoints": {
            "POST /predict": f"body: {PAIRS if served.pairs else INPUTS[modality]}; query ?top_k=N (classification, "
                             "default 1)"
                             + (', or {"parameters": {"top_k": N}} in the body' if modality == "text" else ""),
            "GET /health": "200 with the model's task, labels and the batcher's counts",
            "GET /": "this description",
        },
        "answer": '{"predictions": ...}: per input the list `hf-transfer predict --json` gives '
                  "([{label, score}], entities, or [{text}]); a list of them for a list of texts",
        "errors": '4xx {"error": "<reason>"}',
        "batching": {"max_batch_size": batcher.max_batch_size, "batch_timeout_ms": batcher.timeout_s * 1000},
        "example": example,
    }


def create_app(served: Served, max_batch_size: int = 16, batch_timeout_ms: float = 10.0,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    batcher_box: dict[str, Batcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(served, max_batch_size, batch_timeout_ms / 1000)
        batcher_box["batcher"] = batcher
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title="hf-transfer serve", lifespan=lifespan)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # 404, 405: the same JSON shape
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.get("/")
    async def info():
        return describe(served, batcher_box["batcher"])

    @app.get("/health")
    async def health():
        batcher = batcher_box["batcher"]
        return {"status": "ok", "folder": str(served.folder), "task": served.task.pipeline_task,
                "input": served.task.modality, "labels": served.labels,
                "max_batch_size": batcher.max_batch_size, "served": dict(batcher.stats)}

    @app.post("/predict")
    async def predict(request: Request):
        try:
            body = await read_body(request, max_body_bytes)
            items, single, in_body = parse(served.task.modality, request.headers.get("content-type", ""), body,
                                           served.pairs)
            top_k = top_k_of(request, in_body)
            rows = await batcher_box["batcher"].submit(items, top_k)
        except RequestError as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        except Exception as err:  # noqa: BLE001 - a bug answers one line, the server goes on
            log.exception("serve: request failed")
            return JSONResponse({"error": f"internal error: {first_line(err)}"}, status_code=500)
        return {"predictions": rows[0] if single else rows}

    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), or a one-line error."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(2048)  # connections made before uvicorn starts wait in the backlog
    except OSError as err:
        raise HfTransferError(f"serve: cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def serve(out: str | Path, host: str = "127.0.0.1", port: int = 8000, max_batch_size: int = 16,
          batch_timeout_ms: float = 10.0, device: str | None = None) -> None:
    """Take the port, load the folder, then serve it until interrupted; prints the address it listens on."""
    max_batch_size = require_count("serve", "max_batch_size", max_batch_size)
    batch_timeout_ms = require_tolerance("serve", "batch_timeout_ms", batch_timeout_ms)
    if not is_port(port):
        raise HfTransferError(f"serve: port must be an integer from 0 to 65535, got {port!r}")
    port = int(port)
    sock = listen(host, port)  # a busy port fails before the model loads
    try:
        served = load(out, device)
    except BaseException:
        sock.close()
        raise
    app = create_app(served, max_batch_size, batch_timeout_ms)
    bound_host, bound_port = sock.getsockname()[:2]
    print(f"serving {served.folder} ({served.task.pipeline_task}) on http://{bound_host}:{bound_port} "
          f"(max batch {max_batch_size}, timeout {batch_timeout_ms:g} ms)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
