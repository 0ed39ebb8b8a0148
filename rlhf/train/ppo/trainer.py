"""PPO: the settings and the trainer (rollout -> score -> advantages -> optimise), on accelerate/DeepSpeed.

`PPOTrainer.step` is one PPO round:
  1. rollout    — batched generation from the policy as it is (`rlhf.rollouts.PolicySampler`: rlhf's decoder
                  in this process, or the vLLM engine with the policy's adapter / weights of this step);
  2. score      — the reward on the decoded text (`rlhf.reward.sources`, NaN/inf halts before any update), clipped,
                  minus `missing_eos_penalty` for responses that never reach EOS;
  3. advantages — log-probs of policy and reference (LoRA: the adapter disabled — no copy; full: a frozen
                  copy) and values; per-token reward = -kl_coef * KL + score on the last token; optional
                  reward whitening; GAE; advantages whitened over the global batch;
  4. optimise   — ppo_epochs x minibatches of the clipped policy loss + vf_coef x clipped value loss.
The pure maths is in `rlhf.train.ppo.losses`. Statistics (whitening, token counts) are reduced over processes, so a
2-process run takes the same steps as a 1-process run of the same global batch. `save_state`/`load_state`
hold everything an exact resume needs: model(s), optimizer, scheduler and RNG states (accelerate's
save_state, trainable weights only), the step (= the data cursor), the KL controller and any extra state.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs
from transformers import get_scheduler

from rlhf.config import ConfigError, bounded, documented
from rlhf.distributed import gathered_for_save, under_deepspeed
from rlhf.errors import TrainingError
from rlhf.generation import Rollout, SamplingSettings, decode_responses, forward_responses, sample
from rlhf.models import on_fp32_base, save_model
from rlhf.reward import Reward
from rlhf.rollouts import PolicySampler
from rlhf.runs import CKPT_MARKER
from rlhf.train.args import fast_bf16
from rlhf.train.ppo import losses as L
from rlhf.train.ppo.actor_critic import ActorCritic, is_value_param

STATE_FILE = "rlhf_ppo_state.json"


@dataclass
class PPOSettings:
    steps: int = bounded(10, ge=1, help="rollout + optimisation rounds")
    rollout_batch_size: int = bounded(8, ge=1, help="prompts per step, per process")
    minibatch_size: int = bounded(4, ge=1, help="per process, per optimizer step")
    ppo_epochs: int = bounded(2, ge=1)
    learning_rate: float = bounded(1.0e-5, gt=0)
    value_learning_rate: float | None = bounded(None, gt=0, help="default: learning_rate")
    weight_decay: float = bounded(0.0, ge=0)
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = bounded(0, ge=0, help="optimizer steps")
    max_grad_norm: float = bounded(1.0, ge=0)
    gamma: float = bounded(1.0, ge=0, le=1)
    lam: float = bounded(0.95, ge=0, le=1)
    clip_range: float = bounded(0.2, gt=0)
    clip_range_value: float = bounded(0.2, gt=0)
    vf_coef: float = bounded(0.1, ge=0)
    kl_coef: float = bounded(0.05, ge=0, help="initial coefficient of the per-token KL penalty")
    kl_target: float | None = bounded(
        None, gt=0, help="adaptive controller's target KL (nats per response); null: fixed"
    )
    kl_horizon: int = bounded(10000, ge=1)
    kl_estimator: Literal["k1", "k2", "k3"] = documented("k1", help="for the penalty")
    whiten_rewards: bool = False
    gradient_checkpointing: bool = False
    bf16: bool | None = documented(None, help="null: where the hardware does bf16 natively")
    logging_steps: int = bounded(1, ge=1)
    save_steps: int = bounded(5, ge=0, help="0: only at the end")
    save_total_limit: int | None = bounded(2, ge=1)

    def __post_init__(self):
        if self.rollout_batch_size % self.minibatch_size:
            raise ConfigError(
                f"'ppo.rollout_batch_size' ({self.rollout_batch_size}) must be a multiple of "
                f"'ppo.minibatch_size' ({self.minibatch_size})."
            )

    @property
    def optimizer_steps(self) -> int:
        return self.steps * self.ppo_epochs * (self.rollout_batch_size // self.minibatch_size)


def prompt_indices(n: int, seed: int, start: int, count: int) -> list[int]:
    """Positions start..start+count of an endless stream: a seeded permutation of range(n) per epoch."""
    out, perms = [], {}
    for i in range(start, start + count):
        epoch = i // n
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        out.append(perms[epoch][i % n])
    return out


def make_accelerator(settings: PPOSettings) -> Accelerator:
    bf16 = settings.bf16 if settings.bf16 is not None else fast_bf16()
    kwargs = {"mixed_precision": "bf16" if bf16 else "no"}
    if not under_deepspeed():
        kwargs["cpu"] = not torch.cuda.is_available()
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo", timeout=timedelta(minutes=30))]
    acc = Accelerator(**kwargs)
    plugin = acc.state.deepspeed_plugin
    if plugin is not None:
        ds = plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = settings.minibatch_size
        ds["train_batch_size"] = settings.minibatch_size * acc.num_processes
        ds["gradient_accumulation_steps"] = 1
        if ds.get("gradient_clipping") in (None, "auto"):
            ds["gradient_clipping"] = settings.max_grad_norm
    return acc


class PPOTrainer:
    def __init__(
        self,
        settings: PPOSettings,
        sampling: SamplingSettings,
        accelerator: Accelerator,
        model: ActorCritic,
        reference,
        tokenizer,
        reward: Reward,
        *,
        seed: int,
        missing_eos_penalty: float | None = None,
        sampler: PolicySampler | None = None,
    ):
        self.p, self.sampling, self.acc = settings, sampling, accelerator
        self.sampler = sampler
        self.reference, self.tok, self.reward = reference, tokenizer, reward
        self.seed, self.missing_eos_penalty = seed, missing_eos_penalty
        p = settings
        groups = {False: [], True: []}
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups[is_value_param(name)].append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": groups[False], "lr": p.learning_rate},
                {"params": groups[True], "lr": p.value_learning_rate or p.learning_rate},
            ],
            weight_decay=p.weight_decay,
        )
        scheduler = get_scheduler(
            p.lr_scheduler if p.lr_scheduler != "constant" else "constant_with_warmup",
            optimizer,
            num_warmup_steps=p.warmup_steps,
            num_training_steps=p.optimizer_steps,
        )
        self.model, self.opt, self.sched = accelerator.prepare(model, optimizer, scheduler)
        self._checkpoint_trainable_only()
        self.kl_ctl = L.KLController(p.kl_coef, p.kl_target, p.kl_horizon)
        plugin = accelerator.state.deepspeed_plugin
        self.zero3 = plugin is not None and plugin.zero_stage == 3
        self.synced = self.zero3 and accelerator.num_processes > 1

    @property
    def policy(self):
        return self.acc.unwrap_model(self.model).policy

    # -- one step -------------------------------------------------------------------------------------------

    def rollout(self, prompt_ids: list[list[int]], step: int = 0) -> Rollout:
        self.model.eval()
        if self.sampler is None:
            return sample(self.policy, self.tok, prompt_ids, self.sampling, synced_gpus=self.synced)
        key = f"ppo-step-{step}-rank-{self.acc.process_index}"
        return self.sampler.sample(
            self.policy, self.tok, prompt_ids, self.sampling, key=key, synced_gpus=self.synced
        )

    def score(self, step: int, prompts: list, rollout: Rollout, ids: list | None = None):
        """(raw rewards, shaped scores): the reward on the decoded responses; shaped = clipped, minus the
        missing-EOS penalty. A NaN/inf on any process halts every process before the update."""
        texts = decode_responses(self.tok, rollout)
        try:
            raw = self.reward(prompts, texts, where=f"at PPO step {step}", ids=ids)
            error = None
        except TrainingError as e:
            raw, error = [0.0] * len(texts), e
        if self._sum(torch.tensor(float(error is not None), device=self.acc.device)).item() > 0:
            raise error or TrainingError(f"the reward was not finite on another process at PPO step {step}.")
        scores = torch.tensor(self.reward.clipped(raw), dtype=torch.float32)
        if self.missing_eos_penalty is not None:
            scores = scores - self.missing_eos_penalty * (~rollout.ended).float()
        return torch.tensor(raw), scores

    def advantages(self, rollout: Rollout, scores: torch.Tensor) -> dict:
        p, temperature = self.p, self.sampling.temperature
        mask = rollout.response_mask.to(self.acc.device)
        with torch.no_grad():
            old_logp, old_values = self.model(rollout, temperature)
            if self.reference is None:
                with self.policy.disable_adapter():
                    ref_logp = forward_responses(self.policy, rollout, temperature=temperature)[0]
            else:
                ref_logp = forward_responses(self.reference, rollout, temperature=temperature)[0]
            old_logp, old_values, ref_logp = old_logp * mask, old_values * mask, ref_logp * mask
            kl = L.kl_per_token(old_logp, ref_logp, p.kl_estimator) * mask
            rewards = L.token_rewards(scores.to(mask.device), kl, self.kl_ctl.value, mask)
            if p.whiten_rewards:
                rewards = L.masked_whiten(rewards, mask, shift_mean=False, reduce=self._sum)
            advantages, returns = L.gae(rewards, old_values, mask, p.gamma, p.lam)
            advantages = L.masked_whiten(advantages, mask, reduce=self._sum)
        return {
            "mask": mask,
            "old_logp": old_logp,
            "old_values": old_values,
            "kl": kl,
            "advantages": advantages,
            "returns": returns,
        }

    def optimise(self, step: int, rollout: Rollout, batch: dict) -> dict[str, list[float]]:
        p, temperature = self.p, self.sampling.temperature
        self.model.train()
        stats: dict[str, list[float]] = {}
        gen = torch.Generator().manual_seed(self.seed * 100003 + step)
        for _ in range(p.ppo_epochs):
            order = torch.randperm(p.rollout_batch_size, generator=gen)
            for k in range(p.rollout_batch_size // p.minibatch_size):
                mb = order[k * p.minibatch_size : (k + 1) * p.minibatch_size]
                m = batch["mask"][mb]
                denom = self._sum(m.sum()) / self.acc.num_processes
                logp, values = self.model(rollout.select(mb), temperature)
                pg, pg_stats = L.policy_loss(
                    logp, batch["old_logp"][mb], batch["advantages"][mb], m, p.clip_range, denom
                )
                vf, vf_stats = L.value_loss(
                    values, batch["old_values"][mb], batch["returns"][mb], m, p.clip_range_value, denom
                )
                loss = pg + p.vf_coef * vf
                self._halt_if(not torch.isfinite(loss).item(), f"the PPO loss became {loss.item()}", step)
                self.acc.backward(loss)
                if self.acc.distributed_type != DistributedType.DEEPSPEED and p.max_grad_norm:
                    self.acc.clip_grad_norm_(self.model.parameters(), p.max_grad_norm)
                self.opt.step()
                self.sched.step()
                self.opt.zero_grad()
                for key, v in {"loss/policy": pg, "loss/value": vf, **pg_stats, **vf_stats}.items():
                    stats.setdefault(key, []).append(float(v.detach()))
        return stats

    def step(self, step: int, prompts: list, prompt_ids: list[list[int]], ids: list | None = None) -> dict:
        """One PPO round; returns the step's metrics (means over all processes)."""
        t0 = time.perf_counter()
        rollout = self.rollout(prompt_ids, step)
        t1 = time.perf_counter()
        raw, scores = self.score(step, prompts, rollout, ids)
        t2 = time.perf_counter()
        batch = self.advantages(rollout, scores)
        stats = self.optimise(step, rollout, batch)
        t3 = time.perf_counter()
        mask = batch["mask"]
        n_seq = self._sum(torch.tensor(float(len(scores)), device=self.acc.device))
        mean = lambda x: (self._sum(x.sum().to(self.acc.device)) / n_seq).item()  # noqa: E731
        out = {
            "reward": mean(raw),
            "reward/with_penalties": mean(scores),
            "kl": mean(batch["kl"].sum(1)),
            "kl_coef": self.kl_ctl.value,
            "response_length": mean(mask.sum(1)),
            "ended_fraction": mean(rollout.ended.float()),
            "entropy_estimate": mean(-(batch["old_logp"].sum(1))) / max(1e-9, mean(mask.sum(1))),
            **{k: self._mean_over_processes(sum(v) / len(v)) for k, v in stats.items()},
            "lr": self.sched.get_last_lr()[0],
            "time/generation": t1 - t0,
            "time/scoring": t2 - t1,
            "time/optimisation": t3 - t2,
        }
        self.kl_ctl.update(out["kl"], int(n_seq.item()))
        return out

    # -- state ----------------------------------------------------------------------------------------------

    def save_state(self, path: Path, step: int, extra: dict, keep: int | None = None) -> None:
        """A complete checkpoint at `path` (COMPLETE marker written last); keeps the newest `keep`."""
        self.acc.save_state(str(path))
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            state = {"step": step, "kl_controller": self.kl_ctl.state_dict(), **extra}
            (path / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
            (path / CKPT_MARKER).write_text(f"{step}\n")
            if keep:
                done = sorted(
                    (d for d in path.parent.glob("checkpoint-*") if (d / CKPT_MARKER).exists()),
                    key=lambda d: int(d.name.split("-")[-1]),
                )
                for old in done[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()

    def load_state(self, path: str | Path, *, weights_only: bool = False) -> dict:
        """Restore a checkpoint; returns its saved state (step, KL controller, extras)."""
        self.acc.load_state(str(path), strict=False)
        state = json.loads((Path(path) / STATE_FILE).read_text())
        if not weights_only:
            self.kl_ctl.load_state_dict(state["kl_controller"])
        return state

    def save_policy(self, out_dir: Path, *, merge_lora: bool, fp32_base: str | None = None) -> str | None:
        """The policy into out_dir (merged or adapter); under ZeRO-3 every rank gathers it first.
        `fp32_base`: the LoRA base was held in bf16; a merged save folds the adapter into it loaded in fp32."""
        kind = None
        with gathered_for_save(self.policy, zero3=self.zero3):
            if self.acc.is_main_process:
                policy = self.policy
                if fp32_base is not None and merge_lora and hasattr(policy, "peft_config"):
                    policy = on_fp32_base(policy, fp32_base)
                kind = save_model(policy, self.tok, out_dir, merge_lora=merge_lora)
        self.acc.wait_for_everyone()
        return kind

    # -- helpers --------------------------------------------------------------------------------------------

    def _checkpoint_trainable_only(self) -> None:
        """Checkpoints hold the trainable weights only (with LoRA: the adapters and the value head, not a
        copy of the frozen base, which is reloaded from model.name on resume). DeepSpeed keeps its own
        engine format."""
        if self.acc.distributed_type == DistributedType.DEEPSPEED:
            return
        names = {n for n, p in self.acc.unwrap_model(self.model).named_parameters() if p.requires_grad}
        names |= {f"module.{n}" for n in names}  # DDP-wrapped state dicts

        def keep_trainable(models, weights, output_dir):
            for i, w in enumerate(weights):
                weights[i] = {k: v for k, v in w.items() if k in names}

        self.acc.register_save_state_pre_hook(keep_trainable)

    def _sum(self, x):
        return self.acc.reduce(x, "sum") if self.acc.num_processes > 1 else x

    def _mean_over_processes(self, value: float) -> float:
        return self._sum(torch.tensor(value, device=self.acc.device)).item() / self.acc.num_processes

    def _halt_if(self, bad: bool, what: str, step: int) -> None:
        if self._sum(torch.tensor(float(bad), device=self.acc.device)).item() > 0:
            raise TrainingError(
                f"{what} at PPO step {step}; training stopped before updating the weights. The last complete "
                "checkpoint is intact (resume with --resume after fixing the cause: lower ppo.learning_rate, "
                "check the reward model or function, or set reward.clip)."
            )
