"""Progressive resizing (`vision.train_image_size`, `vision.train_image_size_until`): smaller training
batches for the first part of a run, the input size after (fast.ai, FFCV, EfficientNetV2's progressive
learning). The schedule lives here, on Trainer's side; the resize itself is the model's
(image_classification.TimmClassifier.train_crop)."""

from __future__ import annotations

import logging
import math

from transformers.trainer_callback import TrainerCallback

log = logging.getLogger(__name__)


class ProgressiveResize(TrainerCallback):
    """`vision.train_image_size`: before each optimizer step, every module of the model with a `train_crop`
    (TimmClassifier) is told to resize its training batches (antialiased bilinear, after augmentation at
    image_size) to `size` while the step is in the first `until` of the run's steps, and None after."""

    def __init__(self, size: int, until: float):
        self.size, self.until = size, until

    def _set(self, model, step: int, max_steps: int) -> None:
        crop = self.size if step < self.until * max_steps else None
        for module in model.modules():
            if hasattr(module, "train_crop"):
                module.train_crop = crop

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        low = min(state.max_steps, math.ceil(self.until * state.max_steps))
        log.info("vision.train_image_size: training batches at %d px for %s, then at the input size", self.size,
                 f"all {low} steps" if low == state.max_steps else f"the first {low} of the {state.max_steps} steps")
        self._set(model, state.global_step, state.max_steps)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._set(model, state.global_step, state.max_steps)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._set(model, state.max_steps, state.max_steps)  # a model trained further starts at image_size
