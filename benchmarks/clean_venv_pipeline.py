"""The three offline defaults, loaded as a Hub user would: plain `transformers.pipeline(<task>, model=OUT)` in a
Python that does not have hf_transfer, predicting each default's whole test split; the accuracy is set beside
`test_accuracy` in the folder's metrics.json.

Needs only torch, transformers, timm (the vision default is a timm model), pillow, soundfile, scipy (clips are
resampled to the model's 16 kHz as training did: the pipeline would need torchaudio for it) and pyarrow:

    python -m venv /tmp/clean && /tmp/clean/bin/pip install -c constraints.txt torch==2.14.1 torchvision==0.29.1 \
        transformers timm pillow soundfile scipy pyarrow
    /tmp/clean/bin/python benchmarks/clean_venv_pipeline.py   # after the three defaults were trained

Exit status 1 when hf_transfer is importable (not a clean environment) or an accuracy differs.
"""

import argparse
import csv
import importlib.util
import io
import json
import sys
import time
from pathlib import Path

DEFAULTS = {
    "text": ("text-classification", "outputs/minilm-drugreview", "assets/drugreview/test.csv"),
    "speech": ("audio-classification", "outputs/whisper-digits", "assets/spoken-digits/test.csv"),
    "vision": ("image-classification", "outputs/efficientnet-lite0-fashion-mnist", "assets/fashion-mnist/test.parquet"),
}


def text_split(path: Path):
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    return [r["review"] for r in rows], [r["label"] for r in rows], {"truncation": True}


def speech_split(path: Path):
    from math import gcd

    import soundfile
    from scipy.signal import resample_poly

    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    clips = []
    for r in rows:
        audio, rate = soundfile.read(path.parent / r["audio"], dtype="float32")
        g = gcd(rate, 16_000)
        clips.append({"raw": resample_poly(audio, 16_000 // g, rate // g).astype("float32"), "sampling_rate": 16_000})
    return clips, [r["label"] for r in rows], {}


def vision_split(path: Path):
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(path)
    names = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]["label"]["names"]
    images = [Image.open(io.BytesIO(cell["bytes"])) for cell in table.column("image").to_pylist()]
    return images, [names[i] for i in table.column("label").to_pylist()], {}


SPLITS = {"text": text_split, "speech": speech_split, "vision": vision_split}


def check(name: str, root: Path, batch_size: int) -> bool:
    from transformers import pipeline

    task, folder, data = DEFAULTS[name]
    inputs, labels, kwargs = SPLITS[name](root / data)
    expected = json.loads((root / folder / "metrics.json").read_text())["test"]
    clf = pipeline(task, model=str(root / folder), device="cpu")
    start = time.perf_counter()
    predicted = [row[0]["label"] for row in clf(inputs, batch_size=batch_size, top_k=1, **kwargs)]
    seconds = time.perf_counter() - start
    right = sum(p == t for p, t in zip(predicted, labels))
    accuracy = right / len(labels)
    same = expected["test_samples"] == len(labels) and round(accuracy * len(labels)) == round(
        expected["test_accuracy"] * expected["test_samples"])
    print(f"{name:6} pipeline({task!r}, model={folder!r}): {right}/{len(labels)} = {accuracy:.4f}; "
          f"metrics.json test_accuracy {expected['test_accuracy']:.4f} on {expected['test_samples']} "
          f"-> {'same' if same else 'DIFFERENT'} ({seconds:.1f} s)")
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("defaults", nargs="*", help=f"some of {', '.join(DEFAULTS)} (default: all three)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    unknown = sorted(set(args.defaults) - set(DEFAULTS))
    if unknown:
        parser.error(f"unknown default {unknown[0]!r} (choose from {', '.join(DEFAULTS)})")
    if importlib.util.find_spec("hf_transfer") is not None:
        print("hf_transfer is importable here: run this in a venv without it", file=sys.stderr)
        return 1
    import transformers

    print(f"transformers {transformers.__version__}; hf_transfer not installed")
    results = [check(name, args.root, args.batch_size) for name in args.defaults or list(DEFAULTS)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
