"""Task `audio-classification`: the model's own feature extractor + AutoModelForAudioClassification.

Covers wav2vec2, HuBERT, WavLM, AST and Whisper (`WhisperForAudioClassification`: the encoder plus a
pooled head), single-label. Decoding, cropping, augmentation and features are the speech data side's
(`audio.py`, with the `speech:` section).
"""

from __future__ import annotations

import logging
from typing import Any

from hf_transfer.tasks import audio, classification
from hf_transfer.tasks.base import NO_LOSS, TaskSpec
from hf_transfer.tasks.inputs import audio_inputs
from hf_transfer.tasks.loaders import load_head_model

log = logging.getLogger(__name__)


def load_model(spec: TaskSpec, label_names: list[str] | None):
    from transformers import AutoModelForAudioClassification

    opts = audio.options(spec)
    kwargs: dict[str, Any] = {"num_labels": len(label_names)}
    kwargs["id2label"] = dict(enumerate(label_names))
    kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    model = load_head_model(AutoModelForAudioClassification, spec.model, "an audio-classification model",
                            label_names, **kwargs)
    if getattr(model.config, "max_source_positions", None):
        fe = audio.load_processor(spec)
        if audio.is_whisper_like(fe):
            audio.shorten_whisper_input(model, fe.nb_max_frames // 2)
    if opts.freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
    elif opts.freeze_feature_encoder:
        log.info("speech.freeze_feature_encoder: %s has no feature encoder to freeze", model.__class__.__name__)
    return model


TASK = classification.task(
    name="audio-classification",
    modality="speech",
    section="speech",
    options=audio.SpeechConfig,
    problem_types=("single_label_classification",),
    input_columns=audio.input_columns,
    load_processor=audio.load_processor,
    preprocess=audio.preprocess,
    collator=audio.collator,
    stochastic=audio.stochastic_augmentation,
    training_defaults=audio.training_defaults,
    load_model=load_model,
    loss=NO_LOSS,
    pipeline_task="audio-classification",
    auto_class="AutoModelForAudioClassification",
    processor_arg="feature_extractor",
    read_inputs=audio_inputs,
    verify_inputs=audio.verify_inputs,
)
