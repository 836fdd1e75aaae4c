"""WER / CER of speech recognisers on a csv of clips: `asr_eval.py --data CSV [--max-length N] NAME=FOLDER ...`.

`--short S` feeds a Whisper folder S seconds of input instead of its saved length (the encoder's position
table cut, as `speech.max_duration` does in training): to measure what the shortened input costs.

Each folder loads with `transformers.pipeline("automatic-speech-recognition")` as a Hub user would (as
`hf-transfer verify` loads it: adapters too); clips
(column `audio`, paths relative to the csv) are decoded with soundfile at the model's rate, transcripts
(column `text`) and outputs scored after Whisper's English normaliser, as the speech-recognition task does.
`make demo-asr` uses it for the real human clips of pocketsphinx-testdata, before and after fine-tuning.
"""

import argparse
import csv
import sys
import time
from pathlib import Path

from hf_transfer.outputs.hubuser import load_pipeline
from hf_transfer.outputs.verify import hub_user_task
from hf_transfer.tasks import TASKS
from hf_transfer.tasks.audio import load_audio, shorten_whisper_input
from hf_transfer.tasks.transcripts import error_rates, normalizer


def load(folder: str, short: float | None):
    from transformers import AutoFeatureExtractor, AutoModelForSpeechSeq2Seq, AutoTokenizer, pipeline

    if not short:  # as `hf-transfer verify` / `predict` load it: full models and PEFT adapters alike
        return load_pipeline(folder, hub_user_task(TASKS["speech-recognition"]), "cpu")
    fe = AutoFeatureExtractor.from_pretrained(folder, chunk_length=int(short))
    model = AutoModelForSpeechSeq2Seq.from_pretrained(folder)
    shorten_whisper_input(model.model, fe.nb_max_frames // 2)
    return pipeline("automatic-speech-recognition", model=model, feature_extractor=fe,
                    tokenizer=AutoTokenizer.from_pretrained(folder), device="cpu")


def evaluate(folder: str, rows: list[dict], base: Path, max_length: int, batch_size: int,
             short: float | None = None) -> dict:
    from transformers import AutoTokenizer

    pipe = load(folder, short)
    rate = pipe.feature_extractor.sampling_rate
    clips = [{"raw": load_audio(r["audio"], rate, [base]), "sampling_rate": rate} for r in rows]
    kwargs = {"generate_kwargs": {"max_length": max_length}} if pipe.type.startswith("seq2seq") else {}
    start = time.perf_counter()
    texts = [o["text"] for o in pipe(clips, batch_size=batch_size, **kwargs)]
    scores = error_rates([r["text"] for r in rows], texts, normalizer("english", AutoTokenizer.from_pretrained(folder)))
    return scores | {"seconds": round(time.perf_counter() - start, 1), "texts": texts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=FOLDER")
    parser.add_argument("--data", required=True, help="csv with columns audio, text")
    parser.add_argument("--max-length", type=int, default=48, help="generation max_length (Whisper)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--show", action="store_true", help="print every transcript")
    parser.add_argument("--limit", type=int, help="the first N clips only")
    parser.add_argument("--short", type=float, help="Whisper: feed this many seconds instead of the saved input")
    args = parser.parse_args(argv)
    data = Path(args.data)
    if not data.is_file():
        sys.exit(f"asr_eval: {data} not found (run `make assets-asr`)")
    rows = list(csv.DictReader(data.open(encoding="utf-8")))[: args.limit]
    print(f"\n{data} ({len(rows)} clips)\n{'model':28}{'WER':>8}{'CER':>8}{'seconds':>9}")
    for item in args.models:
        name, _, folder = item.partition("=")
        result = evaluate(folder or name, rows, data.parent, args.max_length, args.batch_size, args.short)
        print(f"{name:28}{result['wer']:8.3f}{result['cer']:8.3f}{result['seconds']:9.1f}")
        if args.show:
            for row, text in zip(rows, result["texts"]):
                print(f"    {row['text']!r:60} -> {text.strip()!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
