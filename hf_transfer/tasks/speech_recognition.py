"""Task `speech-recognition`: audio + transcript in, a recogniser out, scored by WER and CER.

Two kinds of model, told apart by the checkpoint's config:
- **sequence-to-sequence** (Whisper: `AutoModelForSpeechSeq2Seq` + its processor): labels are the
  tokenizer's ids without the decoder start token (the model shifts them right and puts it back),
  padded with -100; evaluation generates (`Seq2SeqTrainer`, `predict_with_generate`,
  `generation_max_length`, `generation_num_beams`); multilingual checkpoints take `speech.language` and
  `speech.task`. `speech.max_duration` shortens Whisper's 30 s input as for audio classification.
- **CTC** (wav2vec2, HuBERT, WavLM: `AutoModelForCTC`): the checkpoint's tokenizer, or, when it has none,
  a character vocabulary built from the training transcripts (saved with the model); the feature
  encoder stays frozen (`speech.freeze_feature_encoder`); greedy decoding.

Audio is decoded as for audio classification (tasks/audio.py: soundfile, no FFmpeg), never cropped.
Rows that cannot be used (empty transcript, characters outside a CTC vocabulary, a transcript longer
than the decoder reads, a clip longer than the model reads, an unreadable file) are refused in one line
naming the split and row, or dropped and counted with `speech.bad_rows: skip`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from hf_transfer.errors import DataError, ModelError, RecipeError
from hf_transfer.tasks import audio, transcripts
from hf_transfer.tasks.audio import SpeechConfig
from hf_transfer.tasks.base import IGNORE, NO_LOSS, Labeler, Task, TaskSpec
from hf_transfer.tasks.data import default_num_workers, load_raw
from hf_transfer.tasks.inputs import audio_inputs
from hf_transfer.tasks.loaders import LOAD_ERRORS, load_auto_model, load_auto_processor, load_error, model_source

log = logging.getLogger(__name__)


@dataclass
class RecognitionConfig(SpeechConfig):
    """The `speech:` section of task speech-recognition: SpeechConfig's keys plus these.
    `max_duration` is the longest clip (longer ones are bad rows; Whisper's input shortens to it)."""

    text_column: str = "text"
    """Column holding the transcript."""
    language: str | None = None
    """Multilingual Whisper: the language spoken (e.g. `fr`); None: detected when generating."""
    task: Literal["transcribe", "translate"] = "transcribe"
    """Multilingual Whisper: transcribe, or translate into English."""
    normalize: Literal["english", "basic", "none"] | None = None
    """Text normalisation before WER / CER: Whisper's English normaliser, its basic one, or none.
    None: `english` unless `language` names another language."""
    bad_rows: Literal["error", "skip"] = "error"
    """Rows that cannot be used: refused naming the row, or skipped and counted."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.time_shift:
            raise RecipeError("speech.time_shift: shifting would cut words off transcribed clips; "
                              "not available for speech-recognition")


def options(spec: TaskSpec) -> RecognitionConfig:
    return spec.options or RecognitionConfig()


def input_columns(spec: TaskSpec) -> dict[str, str]:
    return {"speech.audio_column": options(spec).audio_column}


def stochastic(spec: TaskSpec) -> bool:
    """Whether training clips are augmented randomly (clips are never cropped for recognition)."""
    opts = options(spec)
    return bool(opts.noise_snr_db is not None or opts.gain_db)


def normalize_kind(spec: TaskSpec) -> str:
    opts = options(spec)
    if opts.normalize:
        return opts.normalize
    return "english" if (opts.language or "en").lower() in ("en", "english") else "basic"


# --------------------------------------------------------------------------- the checkpoint

_CONFIGS: dict[str, Any] = {}


def model_config(spec: TaskSpec):
    """The checkpoint's config (cached): `is_encoder_decoder` says sequence-to-sequence or CTC."""
    from transformers import AutoConfig

    key = repr((spec.model.name_or_path, spec.model.revision))
    if key not in _CONFIGS:
        try:
            _CONFIGS[key] = AutoConfig.from_pretrained(model_source(spec.model.name_or_path), revision=spec.model.revision,
                                                       trust_remote_code=spec.model.trust_remote_code)
        except LOAD_ERRORS as err:
            raise load_error(spec.model, "a model config", err) from None
    return _CONFIGS[key]


def is_seq2seq(spec: TaskSpec) -> bool:
    return bool(getattr(model_config(spec), "is_encoder_decoder", False))


def _training_transcripts(spec: TaskSpec) -> list[str]:
    raw = load_raw(spec.data)
    if spec.data.train_split not in raw:
        raise DataError(f"data.train_split: split {spec.data.train_split!r} not in dataset")
    column = options(spec).text_column
    if column not in raw[spec.data.train_split].column_names:
        raise DataError(f"speech.text_column: column {column!r} not in split {spec.data.train_split!r}")
    return [t for t in raw[spec.data.train_split][column] if isinstance(t, str)]


_PROCESSORS: dict[str, Any] = {}


def load_processor(spec: TaskSpec):
    """Feature extractor (tasks/audio.py: rate, Whisper's input length) + tokenizer, as one processor.
    CTC checkpoints without a tokenizer get a character vocabulary from the training transcripts."""
    from transformers import AutoTokenizer, Wav2Vec2Processor

    key = repr((spec.model, spec.data, spec.options))
    if key in _PROCESSORS:
        return _PROCESSORS[key]
    opts, fe = options(spec), audio.load_processor(spec)
    try:
        tok = AutoTokenizer.from_pretrained(model_source(spec.model.name_or_path), revision=spec.model.revision,
                                            trust_remote_code=spec.model.trust_remote_code)
    except LOAD_ERRORS + (TypeError,):
        tok = None
    if is_seq2seq(spec):
        if tok is None:
            tok = load_auto_processor(AutoTokenizer, spec.model, "a tokenizer")  # raises, naming the cause
        _set_language(tok, spec)
        if tok.pad_token is None:  # pipelines batch only with a padding token: Whisper pads with its eos
            tok.pad_token = tok.eos_token
        processor = _processor_class(spec)(feature_extractor=fe, tokenizer=tok)
    else:
        if tok is None or not hasattr(tok, "word_delimiter_token"):
            vocabulary = transcripts.characters(_training_transcripts(spec))
            tok = transcripts.ctc_tokenizer(vocabulary)
            log.info("CTC vocabulary of %d characters built from the training transcripts", len(vocabulary))
        # transformers' pipeline always passes the attention mask to CTC models: training and evaluation do too
        fe = audio.rebuilt(fe, return_attention_mask=True) if not fe.return_attention_mask else fe
        processor = Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok)
    _PROCESSORS[key] = processor
    return processor


def _processor_class(spec: TaskSpec):
    """The checkpoint's processor class (WhisperProcessor for Whisper)."""
    import transformers

    name = getattr(model_config(spec), "model_type", "")
    cls = getattr(transformers, f"{name.capitalize()}Processor", None)
    if cls is None:
        raise ModelError(f"model.name_or_path: no processor class for sequence-to-sequence model type {name!r}")
    return cls


def _set_language(tok, spec: TaskSpec) -> None:
    opts = options(spec)
    if opts.language is None and opts.task == "transcribe":
        return
    if not _multilingual(spec):
        raise RecipeError(f"speech.language: {spec.model.name_or_path!r} is an English-only model; "
                          "language and task apply to multilingual Whisper checkpoints")
    try:
        tok.set_prefix_tokens(language=opts.language, task=opts.task)
    except (ValueError, KeyError) as err:
        raise RecipeError(f"speech.language: {str(err).splitlines()[0]}") from None


def _multilingual(spec: TaskSpec) -> bool:
    """The checkpoint's generation config says so (Whisper: `is_multilingual`)."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(model_source(spec.model.name_or_path), revision=spec.model.revision)
    except LOAD_ERRORS:
        return False
    return bool(getattr(config, "is_multilingual", False))


# --------------------------------------------------------------------------- data


def encode_transcripts(ds, spec: TaskSpec, names: Any, split: str):
    """The split with its transcripts as `labels` (text; tokenized in preprocess)."""
    column = options(spec).text_column
    texts = ["" if t is None else str(t) for t in ds[column]]
    drop = [c for c in (column, "labels") if c in ds.column_names]
    return ds.remove_columns(drop).add_column("labels", texts)


def labeler(spec: TaskSpec) -> Labeler:
    return Labeler(columns=[("speech.text_column", options(spec).text_column)], names=lambda train: None,
                   encode=lambda ds, names, split: encode_transcripts(ds, spec, names, split), stratify=None)


def _text_problem(text: str, tok, spec: TaskSpec, known: set[str] | None, start: int | None) -> tuple[list[int], str]:
    """(label ids, "" or what is wrong with the transcript)."""
    if not text.strip():
        return [], "the transcript is empty"
    if known is not None:
        bad = transcripts.unknown_characters(text, known)
        if bad:
            return [], f"characters outside the model's vocabulary: {''.join(bad)!r} in {text!r:.60}"
    ids = tok(text).input_ids
    if start is not None and ids and ids[0] == start:
        ids = ids[1:]  # the model puts the decoder start token back when it shifts the labels right
    limit = getattr(model_config(spec), "max_target_positions", None)
    if limit and len(ids) > limit:
        return [], f"the transcript is {len(ids)} tokens, the decoder reads at most {limit}"
    return ids, ""


def _clip_limit(fe, spec: TaskSpec) -> int | None:
    """Longest clip in samples: Whisper's input window; else speech.max_duration."""
    if audio.is_whisper_like(fe):
        return fe.n_samples
    opts = options(spec)
    return round(opts.max_duration * fe.sampling_rate) if opts.max_duration else None


def preprocess(splits, processor, spec: TaskSpec):
    """Decode audio once and tokenize transcripts; bad rows refused (or skipped); features on the fly."""
    opts, fe, tok = options(spec), processor.feature_extractor, processor.tokenizer
    name, rate, bases, limit = fe.model_input_names[0], fe.sampling_rate, audio.file_bases(spec), _clip_limit(fe, spec)
    vocab = set(tok.get_vocab())
    lowered = {c.lower() for c in vocab} if getattr(tok, "do_lower_case", False) else set()
    known = None if is_seq2seq(spec) else vocab | lowered
    start = getattr(model_config(spec), "decoder_start_token_id", None) if is_seq2seq(spec) else None

    def decode(batch: dict[str, list]) -> dict[str, list]:
        waves, labels, problems = [], [], []
        for value, text in zip(batch[opts.audio_column], batch["labels"]):
            ids, problem = _text_problem(text, tok, spec, known, start)
            wave = np.zeros(0, np.float32)
            if not problem:
                try:
                    wave = audio.load_audio(value, rate, bases)
                except DataError as err:
                    problem = str(err).removeprefix("speech.audio_column: ")
            if not problem and limit and len(wave) > limit:
                problem = f"the clip is {len(wave) / rate:.1f} s, longer than the {limit / rate:.0f} s the model reads"
            waves.append(wave if not problem else np.zeros(0, np.float32))
            labels.append(ids)
            problems.append(problem)
        return {name: waves, "labels": labels, "problem": problems}

    out = {}
    for role, ds in splits.items():
        ds = audio.undecoded(ds, opts.audio_column)
        ds = ds.map(decode, batched=True, batch_size=32, remove_columns=ds.column_names, desc=f"decode {role}")
        ds = _drop_bad_rows(ds, role, opts.bad_rows)
        rng = np.random.default_rng(spec.seed) if role == "train" else None
        # attention masks, as the speech-recognition pipeline passes them to generate
        ds.set_transform(audio.transform(fe, replace(opts, max_duration=None), rng, attention_mask=True))
        out[role] = ds
    return type(splits)(out)


def _drop_bad_rows(ds, role: str, policy: str):
    problems = ds["problem"]
    bad = [i for i, p in enumerate(problems) if p]
    if bad and policy == "error":
        raise DataError(f"speech: split {role!r} row {bad[0]}: {problems[bad[0]]} "
                        f"({len(bad)} such rows; speech.bad_rows: skip drops them)")
    if bad:
        log.warning("speech.bad_rows: skipped %d of %d rows of split %r (first: row %d: %s)",
                    len(bad), len(problems), role, bad[0], problems[bad[0]])
        if len(bad) == len(problems):
            raise DataError(f"speech: every row of split {role!r} was skipped ({problems[bad[0]]})")
        ds = ds.select([i for i, p in enumerate(problems) if not p])
    return ds.remove_columns("problem")


def collator(processor):
    """Audio features padded by the feature extractor; label ids padded with -100."""
    import torch

    fe = processor.feature_extractor

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = audio.pad_inputs(fe, features)
        longest = max(len(f["labels"]) for f in features)
        labels = torch.full((len(features), longest), IGNORE, dtype=torch.long)
        for i, f in enumerate(features):
            labels[i, : len(f["labels"])] = torch.as_tensor(f["labels"], dtype=torch.long)
        return batch | {"labels": labels}

    return collate


def training_defaults() -> dict[str, Any]:
    """Generation for evaluation (sequence-to-sequence models; CTC evaluates without it), audio
    decoded in DataLoader workers."""
    return {"predict_with_generate": True, "generation_max_length": 225,
            "dataloader_num_workers": default_num_workers()}


# --------------------------------------------------------------------------- model


def load_model(spec: TaskSpec, label_names: Any = None):
    from transformers import AutoModelForCTC, AutoModelForSpeechSeq2Seq

    opts, processor = options(spec), load_processor(spec)
    tok, fe = processor.tokenizer, processor.feature_extractor
    if is_seq2seq(spec):
        model = load_auto_model(AutoModelForSpeechSeq2Seq, spec.model, "a speech-recognition model")
        if audio.is_whisper_like(fe) and hasattr(model, "model"):
            audio.shorten_whisper_input(model.model, fe.nb_max_frames // 2)
        if opts.language is not None or opts.task != "transcribe":
            model.generation_config.language, model.generation_config.task = opts.language, opts.task
        model.generation_config.forced_decoder_ids = None
        return model
    model = load_auto_model(
        AutoModelForCTC, spec.model, "a CTC speech-recognition model", {"ignore_mismatched_sizes": True},
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, ctc_loss_reduction="mean", ctc_zero_infinity=True,
    )
    if opts.freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
    return model


def save(trainer, spec: TaskSpec, folder) -> bool:
    """Hub users generate as the evaluation did: the model's generation config (which holds the run's
    generation length and beams, see trainer.TransferSeq2SeqTrainer) is written beside an adapter too.
    Trainer writes the folder."""
    config = getattr(trainer.model, "generation_config", None)
    if config is not None and trainer.is_world_process_zero() and hasattr(trainer.model, "peft_config"):
        config.save_pretrained(folder)  # an adapter folder holds no generation config of its own
    return False


# --------------------------------------------------------------------------- metrics


def score_texts(spec: TaskSpec):
    """(references, hypotheses) -> {wer, cer, samples, unscored} on normalised text."""
    normalize = transcripts.normalizer(normalize_kind(spec), load_processor(spec).tokenizer)
    return lambda refs, hyps: transcripts.error_rates(refs, hyps, normalize)


def compute_metrics(spec: TaskSpec):
    tok, score = load_processor(spec).tokenizer, score_texts(spec)  # once, not at every evaluation

    def compute(pred) -> dict[str, float]:
        references = transcripts.decode_labels(pred.label_ids, tok)
        return score(references, transcripts.decode_predictions(pred.predictions, tok))

    return compute


def best_metric(spec: TaskSpec) -> tuple[str, bool]:
    return "wer", False


METRIC_NAMES = {"wer": ("wer", "WER", None), "cer": ("cer", "CER", None)}


def untouched(spec: TaskSpec, splits, args) -> dict[str, dict[str, float]]:
    """The pretrained recogniser evaluated as it is, without fine-tuning: the baseline that matters most."""
    from transformers import Seq2SeqTrainer, Trainer

    if not is_seq2seq(spec) and not _has_ctc_head(spec):
        raise RecipeError(f"compare.untouched: {spec.model.name_or_path!r} has no trained recognition head "
                          "(a CTC checkpoint without its tokenizer); nothing to evaluate untouched")
    processor = load_processor(spec)
    prepared = preprocess(splits, processor, spec)
    cls = Seq2SeqTrainer if is_seq2seq(spec) else Trainer
    trainer = cls(model=load_model(replace(spec, model=replace(spec.model, pretrained=True))), args=args,
                  eval_dataset=prepared["validation"], processing_class=processor, data_collator=collator(processor),
                  compute_metrics=compute_metrics(spec))
    return {role: trainer.evaluate(prepared[role], metric_key_prefix=prefix)
            for role, prefix in (("validation", "eval"), ("test", "test")) if role in prepared}


def _has_ctc_head(spec: TaskSpec) -> bool:
    return any("ForCTC" in a for a in getattr(model_config(spec), "architectures", None) or [])


# --------------------------------------------------------------------------- what a Hub user sees


def verify_inputs(spec: TaskSpec, split, processor):
    """The split's clips as the pipeline takes them ({raw, sampling_rate}), in column `inputs` (the round-trip
    check scores the transcripts against the split's `labels`)."""
    fe = getattr(processor, "feature_extractor", processor)
    col, bases = options(spec).audio_column, audio.file_bases(spec)
    split = audio.undecoded(split, col)
    return split.map(lambda ex: {"inputs": {"raw": audio.load_audio(ex[col], fe.sampling_rate, bases),
                                            "sampling_rate": fe.sampling_rate}},
                     remove_columns=split.column_names)


TASK = Task(
    name="speech-recognition",
    modality="speech",
    section="speech",
    options=RecognitionConfig,
    problem_types=("single_label_classification",),
    input_columns=input_columns,
    labeler=labeler,
    load_processor=load_processor,
    preprocess=preprocess,
    collator=collator,
    stochastic=stochastic,
    training_defaults=training_defaults,
    load_model=load_model,
    loss=NO_LOSS,
    compute_metrics=compute_metrics,
    best_metric=best_metric,
    metric_names=METRIC_NAMES,
    save=save,
    baselines={"untouched": untouched},
    pipeline_task="automatic-speech-recognition",
    auto_class="AutoModelForSpeechSeq2Seq",
    auto_classes=("AutoModelForCTC",),
    processor_arg="feature_extractor",
    more_processor_args=("tokenizer",),
    example='"path/to/clip.wav"',
    read_inputs=audio_inputs,
    verify_inputs=verify_inputs,
    score_texts=score_texts,
    caches_features=False,
    generates=True,
)
