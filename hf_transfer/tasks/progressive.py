"""Progressive resizing (`vision.train_image_size`, `vision.train_image_size_until`): smaller training
batches for the first part of a run, the input size after (fast.ai, FFCV, EfficientNetV2's progressive
learning). The schedule lives here, on Trainer's side; the resize itself is the model's
(image_classification.TimmClassifier.train_crop)."""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)


def set_crop(model, crop: int | None) -> None:
    """Every module of `model` that takes a training crop size (TimmClassifier.train_crop) gets `crop`."""
    for module in model.modules():
        if hasattr(module, "train_crop"):
            module.train_crop = crop


def callback(size: int, until: float):
    """A TrainerCallback that, before each optimizer step, sets the models' training batches to `size` pixels
    while the step is in the first `until` of the run's steps, and back to the input size (None) after and
    when training ends. transformers' Trainer side is imported here, when a run uses it: at the top of the
    module it would add seconds to every command that reads a recipe."""
    from transformers.trainer_callback import TrainerCallback

    def first_steps(max_steps: int) -> int:  # how many of the run's steps train at `size`
        return min(max_steps, math.ceil(until * max_steps))

    class ProgressiveResize(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            low = first_steps(state.max_steps)
            log.info("vision.train_image_size: training batches at %d px for %s, then at the input size", size,
                     f"all {low} steps" if low == state.max_steps else f"the first {low} of the {state.max_steps} steps")

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            set_crop(model, size if state.global_step < first_steps(state.max_steps) else None)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            set_crop(model, None)  # a model trained further, or evaluated in train mode, starts at image_size

    return ProgressiveResize()
