"""Run `hf-transfer finetune` and SIGKILL the process at a chosen point (used by test_reliability).

usage: killrun.py RECIPE MODE STEP [cli args...]
  MODE step: kill at the end of training step STEP (mid-epoch)
  MODE save: kill in the middle of writing checkpoint-STEP (after the weights, before its state)
  MODE none: do not kill
"""

import os
import signal
import sys

import transformers

from hf_transfer import train
from hf_transfer.cli import main


class KillAtStep(transformers.TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    recipe, mode, step, rest = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    if mode == "step":
        original = train.early_stopping
        train.early_stopping = lambda r: original(r) + [KillAtStep(step)]
    elif mode == "save":
        original_save = transformers.Trainer._save_rng_state

        def save_then_die(self, output_dir):
            if self.state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return original_save(self, output_dir)

        transformers.Trainer._save_rng_state = save_then_die
    sys.exit(main(["finetune", recipe, *rest]))
