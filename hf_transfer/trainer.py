"""The Trainer side of a run: `TrainingArguments` with hf-transfer's defaults, and `TransferTrainer`.

`training_arguments` merges the defaults (evaluation and saving each epoch, the best checkpoint by the
task's metric, the task's own defaults, the launcher's precision) under the recipe's `training` section,
which always wins. `TransferTrainer` is `transformers.Trainer` with small, optional overrides read from
`Hooks` (strategies/base.py): the strategy's optimizer groups and weight penalty, the objectives' loss
terms, batch entries and extra modules, and saving a model other than the one Trainer trains (the
cached-feature probe trains only the head). On a CPU each training step runs in dropout.py's `FastDropout`
(`model.fast_dropout`). A guard stops (or skips) non-finite training losses.
A model that cannot checkpoint its activations trains without `activation_checkpointing` (`fit_checkpointing`);
what a strategy does to hold less memory is in memory.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from transformers import Seq2SeqTrainer, Trainer

from hf_transfer.dropout import FastDropout, fast_dropout_applies
from hf_transfer.errors import RecipeError, TrainingError
from hf_transfer.folder import CHECKPOINTS
from hf_transfer.precision import has_accelerator, launcher_precision, resolve_bf16
from hf_transfer.recipe.schema import Recipe
from hf_transfer.strategies import STRATEGIES, Hooks
from hf_transfer.tasks import resolve
from hf_transfer.tasks.base import arguments_class

log = logging.getLogger(__name__)


def training_arguments(recipe: Recipe, out: Path):
    task, spec = resolve(recipe)
    metric, greater = task.best_metric(spec)
    args: dict[str, Any] = {
        "eval_strategy": "epoch",
        "logging_strategy": "epoch",
        "report_to": "none",
        "save_total_limit": 2,
        "metric_for_best_model": metric,
        "greater_is_better": greater,
        "use_cpu": not has_accelerator(),
    }
    training = resolve_bf16(recipe.training)
    args |= task.training_defaults()
    args |= launcher_precision(training)
    args |= training
    args["output_dir"] = str(out / CHECKPOINTS)
    if recipe.data.streaming:
        args |= _streaming_schedule(recipe.training)
        # Several processes: each reads the stream and keeps its share of every batch. Accelerate's default
        # for a stream (dispatch_batches: process 0 concatenates the processes' batches) fails on batches
        # padded to different lengths (transformers#26548, accelerate#2023).
        args.setdefault("accelerator_config", {"dispatch_batches": False})
    args.setdefault("save_strategy", args["eval_strategy"])
    # e.g. AdaLoRA: a checkpoint's pruned ranks do not load back into the live model (PEFT): the last one stays
    reload_best = args["eval_strategy"] != "no" and STRATEGIES[recipe.finetune.strategy].reload_best
    args.setdefault("load_best_model_at_end", reload_best)
    try:
        return arguments_class(task)(**args)
    except (ValueError, TypeError) as err:
        raise RecipeError(f"training: {str(err).strip().splitlines()[0]}") from None


RUNS = "runs"  # report_to tensorboard: the event files, in the run folder (pushed with the model)


def _tensorboard_callbacks(trainer) -> list:
    from transformers.integrations import TensorBoardCallback

    return [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TensorBoardCallback)]


def log_to_run_folder(trainer, out: Path) -> None:
    """`report_to: tensorboard` writes its event files to `<out>/runs/<date>_<host>/`. Left to itself, Trainer
    writes them under its output_dir, which is `<out>/checkpoints/` (transformers 5 has no `logging_dir`):
    out of the pushed files, and removed with the checkpoints. `TENSORBOARD_LOGGING_DIR`, when set, wins."""
    from transformers.integrations.integration_utils import default_logdir

    for callback in _tensorboard_callbacks(trainer):
        if callback.logging_dir is None:
            callback.logging_dir = str(out / RUNS / Path(default_logdir()).name)


def close_logs(trainer) -> None:
    """Close the TensorBoard writers once the final evaluations are logged (they reopen the writer training
    closed), before the folder is put in place."""
    for callback in _tensorboard_callbacks(trainer):
        callback.on_train_end(trainer.args, trainer.state, trainer.control)


def fit_eval_batch(args, splits: dict):
    """`args` with `per_device_eval_batch_size` no larger than the largest split evaluated (a copy, when it
    changes): the same batches, while a recipe's batch size up to int32 (a valid count) no longer makes
    Trainer's evaluation allocate one loss per batch slot (`losses.repeat(batch_size)`, 8 GiB at int32)."""
    import copy

    try:
        rows = max(len(split) for name, split in splits.items() if name != "train" and split is not None)
    except (TypeError, ValueError):  # a stream has no length; no split to evaluate
        return args
    if args.per_device_eval_batch_size <= max(rows, 1):
        return args
    fitted = copy.copy(args)
    fitted.per_device_eval_batch_size = max(rows, 1)
    return fitted


def fit_checkpointing(args, model):
    """`args` without `activation_checkpointing` (a copy, and a log line) when the model to train cannot
    checkpoint its activations (a timm architecture without it, a custom module): the run trains as it
    would have, only with more memory, where Trainer would fail at its start."""
    import copy

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a PEFT wrapper
    if not args.activation_checkpointing or getattr(base, "supports_gradient_checkpointing", False):
        return args
    log.info("training.activation_checkpointing: %s cannot checkpoint its activations; training without",
             type(base).__name__)
    fitted = copy.copy(args)
    fitted.activation_checkpointing = False
    return fitted


def _streaming_schedule(training: dict[str, Any]) -> dict[str, Any]:
    """data.streaming: an epoch is one pass over a stream that may outlast max_steps, so the evaluation
    and logging the recipe leaves at "each epoch" happen every tenth of max_steps instead (saving follows
    evaluation, as without a stream)."""
    every = training.get("eval_steps", max(1, int(training["max_steps"]) // 10))
    out: dict[str, Any] = {}
    if "eval_strategy" not in training:
        out |= {"eval_strategy": "steps", "eval_steps": every}
        if "save_strategy" not in training:
            out["save_steps"] = training.get("save_steps", every)
    if "logging_strategy" not in training:
        out |= {"logging_strategy": "steps", "logging_steps": training.get("logging_steps", every)}
    return out


def early_stopping(recipe: Recipe) -> list:
    from transformers import EarlyStoppingCallback

    if recipe.early_stopping_patience is None:
        return []
    return [EarlyStoppingCallback(early_stopping_patience=recipe.early_stopping_patience)]


def install_nan_guard(model, trainer, policy: str) -> dict[str, int]:
    """Check the loss of every training forward pass; stop (or skip the batch) when not finite.

    A forward hook sees the model output's `loss`; under `skip` it is replaced by a zero that
    carries no gradient, so the optimizer step leaves the weights as they were.
    """
    import torch

    counts = {"skipped_nonfinite_batches": 0}

    def hook(module, inputs, output):
        loss = getattr(output, "loss", None)
        if not module.training or loss is None or bool(torch.isfinite(loss.detach()).all()):
            return None
        step = trainer.state.global_step + 1
        if policy == "stop":
            raise TrainingError(
                f"training: loss is {loss.detach().float().item()} at step {step}; lower "
                "training.learning_rate or set nan_policy: skip"
            )
        counts["skipped_nonfinite_batches"] += 1
        log.warning("non-finite loss at step %d: batch skipped", step)
        output.loss = torch.zeros((), device=loss.device, dtype=loss.dtype, requires_grad=True).clone()
        return output

    model.register_forward_hook(hook)
    return counts


LOSS_STATE = "hf_transfer_loss.json"  # in each checkpoint: the training loss summed up to its step


def loss_before(checkpoint: str | None) -> tuple[float, int] | None:
    """(summed training loss, step) saved in a checkpoint, or None."""
    if checkpoint is None:
        return None
    try:
        state = json.loads((Path(checkpoint) / LOSS_STATE).read_text(encoding="utf-8"))
        return float(state["loss_sum"]), int(state["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def whole_run_train_loss(train_loss: float, step: int, before: tuple[float, int] | None) -> float:
    """Trainer's train_loss covers the steps run in this call; after --resume, the whole run's mean."""
    if before is None or step <= before[1]:
        return train_loss
    loss_sum, resumed_at = before
    return (loss_sum + train_loss * (step - resumed_at)) / step


class TransferTrainer(Trainer):
    """Trainer + optional param groups, loss penalty and a different model to export; `fast_dropout`: each
    training step in dropout.py's `FastDropout` where `fast_dropout_applies`."""

    def __init__(self, *args, hooks: Hooks | None = None, export_model=None, fast_dropout: bool = False, **kwargs):
        hooks = hooks or Hooks()
        super().__init__(*args, callbacks=[*(kwargs.pop("callbacks", None) or []), *hooks.callbacks], **kwargs)
        self.hooks, self.export_model = hooks, export_model
        self.fast_dropout = fast_dropout_applies(fast_dropout, self.args)

    def training_step(self, model, inputs, num_items_in_batch=None):
        with FastDropout() if self.fast_dropout else contextlib.nullcontext():  # dropout.py
            return super().training_step(model, inputs, num_items_in_batch)

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.hooks.param_groups is not None:
            opt_model = self.model if model is None else model
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            decay = set(self.get_decay_parameter_names(opt_model))
            groups = self.hooks.param_groups(opt_model, self.args.learning_rate, self.args.weight_decay, decay)
            self.optimizer = cls(groups, **kwargs)
        optimizer = super().create_optimizer(model)
        extra = [p for m in self.hooks.extra_modules for p in m.to(self.args.device).parameters()]
        if extra and not any(g.get("hf_extra") for g in optimizer.param_groups):
            optimizer.add_param_group({"params": extra, "weight_decay": self.args.weight_decay,
                                       "hf_extra": True, "hf_head": True, "hf_depth": 0})
        return optimizer

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()  # Trainer drops columns the forward does not name
        self._signature_columns += [c for c in self.hooks.batch_columns if c not in self._signature_columns]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        columns = {c: inputs.pop(c) for c in self.hooks.batch_columns if c in inputs}
        objectives = self.hooks.objectives if model.training else []
        out = super().compute_loss(model, inputs, return_outputs or bool(objectives), num_items_in_batch)
        if objectives:
            loss, outputs = out
            for objective in objectives:
                loss = objective(self, loss, model, inputs, outputs, columns)
            out = (loss, outputs) if return_outputs else loss
        if self.hooks.penalty is None or not model.training:
            return out
        penalty = self.hooks.penalty()
        scaled = getattr(self, "loss_is_scaled_for_ga", None)  # then Trainer does not divide the loss by
        if scaled is None:                                     # the accumulation steps: the penalty must be
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None)  # once per step
        if scaled:
            penalty = penalty / getattr(self, "current_gradient_accumulation_steps", 1)
        return (out[0] + penalty, out[1]) if return_outputs else out + penalty

    def _save_checkpoint(self, model, trial):
        # Trainer keeps the losses of the steps so far in memory only; --resume reports the whole run's mean
        tr_loss = getattr(self, "_tr_loss", None)
        if self.is_world_process_zero() and tr_loss is not None:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            loss_sum = getattr(self, "_total_loss_scalar", 0.0) + float(tr_loss.item())
            (folder / LOSS_STATE).write_text(json.dumps({"loss_sum": loss_sum, "step": self.state.global_step}))
        super()._save_checkpoint(model, trial)

    def save_model(self, output_dir=None, _internal_call=False):
        if self.export_model is None or _internal_call:  # checkpoints keep what Trainer trains
            return super().save_model(output_dir, _internal_call)
        if self.is_world_process_zero():
            self.export_model.save_pretrained(output_dir)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)


class TransferSeq2SeqTrainer(TransferTrainer, Seq2SeqTrainer):
    """TransferTrainer whose evaluation generates (`predict_with_generate`): encoder-decoder models.

    The recipe's `generation_max_length` / `generation_num_beams` go into the model's generation config
    (saved with the folder), and evaluation generates from that config rather than from keyword
    arguments: `pipeline()` generates from the saved config, so the config a Hub user gets is by
    construction the one the evaluation used. (On the tests' tiny Whisper both routes generate the same
    tokens; one source keeps it so.)"""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        config = getattr(model, "generation_config", None)
        if config is None:
            return
        if self.args.generation_max_length:
            config.max_length = self.args.generation_max_length
        if self.args.generation_num_beams:
            config.num_beams = self.args.generation_num_beams
        self.args.generation_max_length = self.args.generation_num_beams = None


def trainer_class(task, model) -> type[TransferTrainer]:
    """Seq2SeqTrainer's evaluation for encoder-decoder models of a task that generates; Trainer's otherwise."""
    config = getattr(model, "config", None)
    return TransferSeq2SeqTrainer if task.generates and getattr(config, "is_encoder_decoder", False) else TransferTrainer
