"""A bounded load test of `hf-transfer serve`: N requests from C concurrent clients, then throughput and latency.

Either against a server already running, or starting `hf-transfer serve RUN --port 0` itself for each
--max-batch-size given (one after another, so the figures sit side by side from the same session):

    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --texts assets/drugreview/test.csv
    python benchmarks/serve_load.py --serve outputs/minilm-drugreview --max-batch-size 1 16 \\
        --requests 200 --concurrency 16 --texts assets/drugreview/test.csv
    python benchmarks/serve_load.py --serve outputs/efficientnet-lite0-fashion-mnist --file shoe.png

Each request is one POST /predict: a text of --texts (a CSV's `review`/`text` column or a file of lines,
in turn) as {"inputs": text}, or the bytes of --file. Clients are stdlib threads, each with its own
keep-alive connection. Prints one JSON object per server: requests, concurrency, ok, errors, seconds,
throughput (req/s), p50 / p99 / max latency (ms), and from GET /health the model calls (batches) this
load made, their mean size and the largest batch the server has run.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import mimetypes
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]


def text_bodies(path: str | Path, limit: int = 1000) -> list[tuple[bytes, str]]:
    """(JSON body, content type) per text: a CSV's review/text column, else the file's non-empty lines."""
    path = Path(path)
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        column = next(c for c in ("review", "text", "sentence") if c in rows[0])
        texts = [r[column] for r in rows if r[column].strip()]
    else:
        texts = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [(json.dumps({"inputs": t}).encode(), "application/json") for t in texts[:limit]]


def file_bodies(path: str | Path) -> list[tuple[bytes, str]]:
    kind = mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    return [(Path(path).read_bytes(), kind)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _get(url: str, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _served(url: str) -> dict:
    status, body = _get(url, "/health")
    if status != 200:
        raise RuntimeError(f"GET /health answered {status}: {body[:200]!r}")
    return json.loads(body)


def load(url: str, bodies: list[tuple[bytes, str]], requests: int = 200, concurrency: int = 16,
         timeout: float = 120.0) -> dict:
    """Fire `requests` POST /predict (bodies in turn) from `concurrency` threads; the figures as a dict."""
    parts = urlsplit(url)
    latencies: list[float] = []
    failures: list[str] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body, kind = bodies[i % len(bodies)]
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": kind})
                response = conn.getresponse()
                data = response.read()
                status, ok = response.status, response.status == 200 and b'"predictions"' in data
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                status, ok, data = 0, False, str(err).encode()
            elapsed = time.perf_counter() - start
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(elapsed) if ok else failures.append(f"{status}: {data[:200]!r}")
        conn.close()

    before = _served(url)
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    after = _served(url)
    ms = [x * 1000 for x in latencies] or [float("nan")]
    return {
        "requests": requests, "concurrency": concurrency, "ok": len(latencies), "errors": len(failures),
        "statuses": {str(k): v for k, v in sorted(statuses.items())}, "seconds": round(seconds, 3),
        "throughput_rps": round(len(latencies) / seconds, 2), "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(percentile(ms, 99), 1), "max_ms": round(max(ms), 1),
        "max_batch_size": after.get("max_batch_size"),
        "batches": after["served"]["batches"] - before["served"]["batches"],
        "mean_batch": round((after["served"]["items"] - before["served"]["items"])
                            / max(after["served"]["batches"] - before["served"]["batches"], 1), 2),
        "largest_batch": after["served"]["largest_batch"],
        "first_errors": failures[:3],
    }


class Server:
    """`hf-transfer serve RUN --port 0 ...` in a subprocess; `url` once it answers GET /health."""

    def __init__(self, run: str | Path, *args: str, startup_s: float = 300.0):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen([sys.executable, "-m", "hf_transfer", "serve", str(run), "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.url, self.output = None, []
        deadline = time.monotonic() + startup_s
        for line in self.proc.stdout:  # the server prints its address once the model has loaded
            self.output.append(line)
            found = re.search(r"on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
            if time.monotonic() > deadline:
                break
        if self.url is None:
            self.stop()
            raise RuntimeError(f"the server did not start:\n{''.join(self.output)[-2000:]}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep its pipe drained

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    target.add_argument("--serve", metavar="RUN", help="start `hf-transfer serve RUN` for each --max-batch-size")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--texts", help="CSV (review / text column) or a file of lines: one text per request")
    inputs.add_argument("--file", help="an image or audio file sent as the body of every request")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, nargs="+", default=[16], help="with --serve: one server each")
    parser.add_argument("--batch-timeout-ms", type=float, default=10.0, help="with --serve")
    parser.add_argument("--warmup", type=int, default=16, help="requests sent first and not counted")
    args = parser.parse_args(argv)
    bodies = text_bodies(args.texts) if args.texts else file_bodies(args.file)
    results = []

    def measure(url: str) -> dict:
        if args.warmup:
            load(url, bodies, args.warmup, min(args.concurrency, args.warmup))
        return load(url, bodies, args.requests, args.concurrency)

    if args.url:
        results.append(measure(args.url))
    for size in args.max_batch_size if args.serve else []:
        with Server(args.serve, "--max-batch-size", str(size), "--batch-timeout-ms", str(args.batch_timeout_ms)) as s:
            results.append(measure(s.url))
    for result in results:
        print(json.dumps(result))
    return 0 if all(r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
