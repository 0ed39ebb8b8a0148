"""Drift guards for every policy stage (DPO, PPO, GRPO, RLOO): KL to the reference and response length.

Two numbers are tracked while the policy trains:
  drift/kl            mean KL(policy || reference) per response, in nats (summed over response tokens)
  drift/length_ratio  mean response length / the mean length measured at the first check
The config section `drift:` sets alarms — `max_kl` and `max_length_ratio` — and what an alarm does:
`action: warn` logs it and goes on; `action: stop` ends training at once and the stage's final model is
the *best checkpoint*: the newest complete checkpoint saved while no alarm had fired (the drifted weights
are not exported).

Where the numbers come from: PPO measures them on its own rollouts; GRPO/RLOO read TRL's logged per-token
KL (times the mean completion length) and mean completion length; DPO, which generates nothing, samples
`num_prompts` training prompts at the start and at every checkpoint save (or every `every_steps` steps)
and measures both (`sample_drift`) — checking at saves costs one probe per checkpoint and is exactly
what a `stop` needs, since it can only go back to a checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from rlhf.config import bounded, documented
from rlhf.engine import EngineSettings
from rlhf.generation import SamplingSettings, sample, sequence_logprobs
from rlhf.prompts import encode_prompt


@dataclass
class DriftSettings:
    max_kl: float | None = bounded(None, gt=0, help="nats per response; null: no KL alarm")
    max_length_ratio: float | None = bounded(
        None, gt=0, help="mean length / first measured mean length; null: no alarm"
    )
    action: Literal["warn", "stop"] = "warn"
    every_steps: int | None = bounded(
        None, ge=0, help="DPO only: sample every N steps; null: at each checkpoint save; 0: never"
    )
    num_prompts: int = bounded(4, ge=1, help="DPO only: prompts sampled per measurement")
    max_new_tokens: int = bounded(48, ge=1, help="DPO only: response length cap when sampling")
    generation: EngineSettings = documented(
        default_factory=EngineSettings,
        help="DPO only: the probes' engine (hf: the training model in this process; vllm: the policy written "
        "and sampled in a vLLM engine, docs/generation.md)",
    )


def drift_alarms(settings: DriftSettings, kl: float | None, length_ratio: float | None) -> list[str]:
    """Which alarms these measurements raise (pure)."""
    out = []
    if kl is not None and (not math.isfinite(kl) or (settings.max_kl is not None and kl > settings.max_kl)):
        out.append(f"KL to the reference {kl:.3f} nats > drift.max_kl {settings.max_kl}")
    limit = settings.max_length_ratio
    if length_ratio is not None and limit is not None and length_ratio > limit:
        out.append(f"mean response length ratio {length_ratio:.2f} > drift.max_length_ratio {limit}")
    return out


class DriftGuard:
    """Feeds measurements through the alarms; remembers the baseline length and the last step within
    bounds. `observe` returns the metrics to log and the alarm messages; `should_stop` turns true when an
    alarm fires under `action: stop`."""

    def __init__(self, settings: DriftSettings):
        self.settings = settings
        self.baseline_length: float | None = None
        self.last_ok_step = 0
        self.alarms: list[dict] = []
        self.should_stop = False

    def observe(self, step: int, kl: float | None, mean_length: float | None) -> tuple[dict, list[str]]:
        if mean_length is not None and self.baseline_length is None and mean_length > 0:
            self.baseline_length = mean_length
        ratio = (
            mean_length / self.baseline_length if mean_length is not None and self.baseline_length else None
        )
        metrics = {"drift/kl": kl, "drift/mean_length": mean_length, "drift/length_ratio": ratio}
        metrics = {k: v for k, v in metrics.items() if v is not None}
        fired = drift_alarms(self.settings, kl, ratio)
        if fired:
            self.alarms += [{"step": step, "alarm": a, "action": self.settings.action} for a in fired]
            if self.settings.action == "stop":
                self.should_stop = True
            verb = "stopping" if self.should_stop else "warning"
            for a in fired:
                print(f"[rlhf] drift {verb} at step {step}: {a}", flush=True)
        elif not self.should_stop:
            self.last_ok_step = step
        return metrics, fired

    def state_dict(self) -> dict:
        return {
            "baseline_length": self.baseline_length,
            "last_ok_step": self.last_ok_step,
            "alarms": self.alarms,
        }

    def load_state_dict(self, state: dict) -> None:
        self.baseline_length = state["baseline_length"]
        self.last_ok_step = state["last_ok_step"]
        self.alarms = list(state["alarms"])

    def summary(self) -> dict:
        return {
            "alarms": self.alarms,
            "stopped": self.should_stop,
            "baseline_length": self.baseline_length,
            "last_step_within_bounds": self.last_ok_step,
        }


def best_checkpoint(checkpoints: Path, last_ok_step: int, marker: str) -> Path | None:
    """Newest complete checkpoint saved at or before the last step within bounds."""
    found = [
        (int(d.name.split("-")[-1]), d)
        for d in (checkpoints.glob("checkpoint-*") if checkpoints.is_dir() else [])
        if d.name.split("-")[-1].isdigit() and (d / marker).exists()
    ]
    within = [(s, d) for s, d in found if s <= last_ok_step]
    return max(within)[1] if within else None


def sequence_kl(logp, ref_logp, mask) -> tuple[float | None, float]:
    """(mean over sequences of sum_t (log p - log q) on the response tokens, mean response length). The KL
    is None without reference log-probs. Pure."""
    kl = None if ref_logp is None else ((logp - ref_logp) * mask).sum(1).mean().item()
    return kl, mask.sum(1).float().mean().item()


def sample_drift(
    model,
    tokenizer,
    prompts: list,
    max_new_tokens: int,
    reference=None,
    synced_gpus: bool = False,
    sampler=None,
    key: str = "drift",
) -> tuple[float | None, float]:
    """Sample one response per prompt from `model`; return (mean sequence KL to the reference, mean
    response length in tokens). KL uses the k1 estimator sum_t log p(y_t) - log q(y_t) on the policy's own
    samples (unbiased for KL(p||q)), both log-probs from the training model whoever sampled. The reference
    is `reference` (a frozen model) or, when None, `model` with its LoRA adapter disabled; with neither
    (precomputed reference log-probs) the KL is None. `sampler` (`rlhf.rollouts.PolicySampler`): the
    engine that samples (default: `model` in this process); `key` seeds its requests."""
    was_training = model.training
    model.eval()
    try:
        ids = [encode_prompt(tokenizer, p) for p in prompts]
        settings = SamplingSettings(max_new_tokens=max_new_tokens)
        if sampler is None:
            batch = sample(model, tokenizer, ids, settings, synced_gpus=synced_gpus)
        else:
            batch = sampler.sample(model, tokenizer, ids, settings, key=key, synced_gpus=synced_gpus)
        with torch.no_grad():
            logp = sequence_logprobs(model, batch)
            if reference is not None:
                ref = sequence_logprobs(reference, batch)
            elif hasattr(model, "disable_adapter"):
                with model.disable_adapter():
                    ref = sequence_logprobs(model, batch)
            else:
                ref = None
        return sequence_kl(logp, ref, batch.response_mask)
    finally:
        model.train(was_training)
