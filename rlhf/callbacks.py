"""Trainer callbacks shared by the TRL-based stages: metrics into the run dir, checkpoint markers, NaN halt."""

from __future__ import annotations

import math

from transformers import TrainerCallback

from rlhf.errors import TrainingError
from rlhf.runs import CKPT_MARKER, RunDir


class RunDirCallback(TrainerCallback):
    """Append every log to metrics.jsonl; mark a checkpoint COMPLETE once the trainer has fully written it;
    stop with a clear error (the last complete checkpoint intact) when the loss stops being finite."""

    def __init__(self, run: RunDir):
        self.run = run
        self.last_logs: dict = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        self.last_logs.update(logs)
        if state.is_world_process_zero:
            self.run.log_metrics({"step": state.global_step, "epoch": state.epoch, **logs})
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            ckpt = self.run.latest_complete_checkpoint()
            raise TrainingError(
                f"the training loss became {loss} at step {state.global_step}. The last complete checkpoint is "
                f"{ckpt or '(none yet)'}. Lower trainer.learning_rate or check the data, then rerun "
                "(--resume continues from that checkpoint)."
            )

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = self.run.checkpoints / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / CKPT_MARKER).write_text(f"{state.global_step}\n")
