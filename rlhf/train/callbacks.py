"""Trainer callbacks shared by the TRL-based stages: metrics into the run dir, checkpoint markers, NaN halt,
the drift guard (`DriftCallback`; `probe_drift` builds the sampling one of DPO and KTO)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from transformers import TrainerCallback

from rlhf.distributed import zero3_sharded
from rlhf.errors import TrainingError
from rlhf.rollouts import PolicySampler
from rlhf.runs import CKPT_MARKER, RunDir
from rlhf.train.drift import DriftGuard, sample_drift


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


class DriftCallback(TrainerCallback):
    """Drift guard for TRL trainers (rlhf/train/drift.py). Measurements come either from the trainer's own logs
    (`kl_key`: per-token KL, multiplied by the mean length to give nats per response; `length_key`), or
    from `measure(model) -> (kl, mean_length)` at the start and then every `every_steps` steps (None: at
    each checkpoint save; 0: never). Under `drift.action: stop` an
    alarm ends training; the stage then exports the best checkpoint (`rlhf.train.stage.restore_best`)."""

    def __init__(
        self,
        run: RunDir,
        guard,
        *,
        measure=None,
        every_steps: int | None = None,
        kl_key=None,
        length_key=None,
        sampler=None,
    ):
        self.run, self.guard, self.measure, self.every = run, guard, measure, every_steps
        self.kl_key, self.length_key = kl_key, length_key
        self.sampler = sampler  # the probes' `PolicySampler`, closed when training ends

    STATE_FILE = "rlhf_drift.json"

    def on_save(self, args, state, control, **kwargs):
        """The guard's state (baseline length, alarms, last step within bounds) goes into the checkpoint."""
        ckpt = self.run.checkpoints / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and ckpt.is_dir():
            (ckpt / self.STATE_FILE).write_text(json.dumps(self.guard.state_dict()) + "\n")

    def resume_from(self, checkpoint: str | None) -> None:
        saved = Path(checkpoint) / self.STATE_FILE if checkpoint else None
        if saved is not None and saved.is_file():
            self.guard.load_state_dict(json.loads(saved.read_text()))

    def _observe(self, state, control, kl, length):
        metrics, _ = self.guard.observe(state.global_step, kl, length)
        if metrics and state.is_world_process_zero:
            self.run.log_metrics({"step": state.global_step, **metrics})
        if self.guard.should_stop:
            control.should_training_stop = True

    def _probing(self) -> bool:
        return self.measure is not None and self.every != 0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # DefaultFlowCallback runs first, so control.should_save already says whether this step saves
        due = state.global_step % self.every == 0 if self.every else control.should_save
        if self._probing() and due:
            kl, length = self.measure(model)
            self._observe(state, control, kl, length)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self._probing() and self.guard.baseline_length is None:
            kl, length = self.measure(model)  # the baseline length of the starting policy
            self._observe(state, control, kl, length)

    def on_train_end(self, args, state, control, **kwargs):
        if self.sampler is not None:
            self.sampler.close()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.measure is not None or not logs or self.length_key not in logs:
            return
        length = float(logs[self.length_key])
        kl = float(logs[self.kl_key]) * length if self.kl_key in logs else None
        self._observe(state, control, kl, length)


def probe_drift(
    settings, run: RunDir, tokenizer, train_rows: list[dict], reference, seed: int = 0
) -> DriftCallback:
    """The drift guard of an offline policy stage (DPO, KTO): at the start and then as `settings`
    (`DriftSettings`) say, sample `num_prompts` training prompts (spread over the rows) and measure the
    KL to `reference()` (the trainer's reference model; None with LoRA: the adapter disabled). The
    probes sample on `settings.generation` (`rlhf.rollouts.PolicySampler`), its engine stopped when
    training ends."""
    probe = [r["prompt"] for r in train_rows[:: max(1, len(train_rows) // settings.num_prompts)]]
    probe = probe[: settings.num_prompts]
    sampler = PolicySampler(
        settings.generation,
        seed=seed,
        scratch=run.path / "engine-policy",
        processes=int(os.environ.get("WORLD_SIZE", "1")),
        log_dir=run.path,
    )
    probes = iter(range(1, 1 << 30))
    return DriftCallback(
        run,
        DriftGuard(settings),
        measure=lambda m: sample_drift(
            m,
            tokenizer,
            probe,
            settings.max_new_tokens,
            reference(),
            synced_gpus=zero3_sharded(),
            sampler=sampler,
            key=f"drift-probe-{next(probes)}",
        ),
        every_steps=settings.every_steps,
        sampler=sampler,
    )
