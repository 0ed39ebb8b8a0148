"""PPO stage: on-policy RL of the policy against a reward model (our own trainer, on accelerate).

    rlhf ppo --config configs/ppo.yaml [ppo.steps=50 ppo.kl_coef=0.1 ...]
    accelerate launch --config_file configs/accelerate/zero2.yaml -m rlhf ppo --config configs/ppo.yaml

Inputs : a policy (alias | directory | LoRA adapter), prompts, and a reward: `reward.model` (a run of
         `rlhf reward`, scored through RewardScorer on decoded text, so the RM may use another tokenizer)
         or `reward.function` ("module:function" taking (prompts, responses) -> list of floats).
Outputs: runs/<name>/model (merged policy, or the adapter), checkpoints/checkpoint-N (full state),
         metrics.jsonl (reward, KL, lengths, losses, time split per step), manifest, COMPLETED.

One step:
  1. rollout   — this process's share of the prompt stream (seeded order, epoch after epoch; the cursor is
                 the step), batched generation with left padding and the KV cache;
  2. score     — reward on the decoded text, minus `reward.missing_eos_penalty` for responses that never
                 reach EOS; optional RM normalisation, clipping and whitening;
  3. evaluate  — log-probs of policy and reference (LoRA: the adapter disabled — no copy; full: a frozen
                 copy) and values; per-token reward = -kl_coef * KL + score on the last token; GAE;
                 advantages whitened over the global batch;
  4. optimise  — ppo_epochs x minibatches of the clipped policy loss + vf_coef x clipped value loss;
  5. control   — KL controller update (fixed, or adaptive to kl_target), drift guard, checkpoint.
Value model: `value.mode: shared` puts a value head on the policy's own network (one forward gives both;
with LoRA they share the base and the adapter); `separate` gives the critic its own backbone (a copy of
`value.model`, default the policy's init, with its own LoRA when the policy has one).

Checkpoints hold everything needed for an exact resume: model(s), optimizer, scheduler, RNG states
(accelerate's save_state), plus the step (= data cursor), the KL controller and the drift guard. A reward or
loss that is NaN/inf stops the run before any weight is touched, naming the step; the last checkpoint
stays intact. Statistics (whitening, token counts) are reduced over processes, so a 2-process run takes the
same steps as a 1-process run of the same global batch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field

from rlhf.config import ConfigError
from rlhf.drift import DriftSettings
from rlhf.errors import TrainingError
from rlhf.models import ModelConfig
from rlhf.runs import CKPT_MARKER, RunDir, RunSettings
from rlhf.trainer_args import finish_distributed

SCHEDULERS = ("constant", "linear", "cosine")
STATE_FILE = "rlhf_ppo_state.json"


@dataclass
class PPOData:
    prompts: str = (
        "demo:prompts"  # demo:<name> | .jsonl/.json/.parquet | dataset dir | hub id: `prompt` column
    )
    split: str = "train"
    max_prompt_length: int = 256  # tokens after the chat template; longer prompts are rejected, reported


@dataclass
class RewardSettings:
    model: str | None = "runs/reward-demo/model"  # an `rlhf reward` run's model dir
    function: str | None = None  # or "module:function": (prompts, responses) -> list[float]
    normalize: bool = False  # use the RM's saved mean/std (rlhf_reward.json)
    batch_size: int = 16
    clip: float | None = None  # clip scores to [-clip, clip]
    missing_eos_penalty: float | None = 1.0  # subtracted from responses that never reach EOS

    def __post_init__(self):
        if (self.model is None) == (self.function is None):
            raise ConfigError("set exactly one of 'reward.model' (a reward-model dir) and 'reward.function'.")


@dataclass
class ValueSettings:
    mode: str = "shared"  # shared (value head on the policy's network) | separate (own backbone)
    model: str | None = None  # separate: critic init (default: the policy's)

    def __post_init__(self):
        if self.mode not in ("shared", "separate"):
            raise ConfigError(f"'value.mode' must be shared or separate; got {self.mode!r}.")


@dataclass
class GenerationSettings:
    max_new_tokens: int = 48
    do_sample: bool = True  # false: greedy rollouts (deterministic; for debugging and tests)
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


@dataclass
class PPOSettings:
    steps: int = 10  # rollout + optimisation rounds
    rollout_batch_size: int = 8  # prompts per step, per process
    minibatch_size: int = 4  # per process, per optimizer step
    ppo_epochs: int = 2
    learning_rate: float = 1.0e-5
    value_learning_rate: float | None = None  # default: learning_rate
    weight_decay: float = 0.0
    lr_scheduler: str = "constant"  # constant | linear | cosine
    warmup_steps: int = 0  # optimizer steps
    max_grad_norm: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    kl_coef: float = 0.05  # initial coefficient of the per-token KL penalty
    kl_target: float | None = None  # adaptive controller's target KL (nats per response); null: fixed
    kl_horizon: int = 10000
    kl_estimator: str = "k1"  # k1 | k2 | k3 (for the penalty)
    whiten_rewards: bool = False
    gradient_checkpointing: bool = False
    bf16: bool | None = None  # null: where the hardware does bf16 natively
    logging_steps: int = 1
    save_steps: int = 5  # 0: only at the end
    save_total_limit: int | None = 2

    def __post_init__(self):
        if self.rollout_batch_size % self.minibatch_size:
            raise ConfigError(
                f"'ppo.rollout_batch_size' ({self.rollout_batch_size}) must be a multiple of "
                f"'ppo.minibatch_size' ({self.minibatch_size})."
            )
        if self.lr_scheduler not in SCHEDULERS:
            raise ConfigError(f"'ppo.lr_scheduler' must be one of {', '.join(SCHEDULERS)}.")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ConfigError(f"'ppo.kl_estimator' must be k1, k2 or k3; got {self.kl_estimator!r}.")
        for key in ("steps", "rollout_batch_size", "minibatch_size", "ppo_epochs"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"'ppo.{key}' must be positive, got {getattr(self, key)}.")


@dataclass
class PPOStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="ppo"))
    model: ModelConfig = field(default_factory=ModelConfig)
    value: ValueSettings = field(default_factory=ValueSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    data: PPOData = field(default_factory=PPOData)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    save: str = "merged"  # merged | adapter

    def __post_init__(self):
        if self.save not in ("merged", "adapter"):
            raise ConfigError(f"'save' must be one of merged, adapter; got {self.save!r}.")


# -- reward -------------------------------------------------------------------------------------------------


def load_reward(settings: RewardSettings):
    """-> (callable(prompts, responses) -> list[float], description)."""
    if settings.function:
        import importlib

        module, _, name = settings.function.partition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigError(
                f"'reward.function' {settings.function!r} could not be loaded ({e}); write it as "
                "'package.module:function'."
            ) from None
        return fn, settings.function
    from pathlib import Path

    from rlhf.scorer import RewardScorer

    if not Path(settings.model).expanduser().is_dir():
        raise ConfigError(
            f"'reward.model' {settings.model!r} is not a directory. Train one first with "
            "`rlhf reward --config configs/reward.yaml` (it writes runs/reward-demo/model)."
        )
    scorer = RewardScorer(settings.model, batch_size=settings.batch_size)
    if settings.normalize and not scorer.norm:
        raise ConfigError(f"'reward.normalize': {settings.model} has no normalisation statistics.")
    return (lambda p, r: scorer.score(p, r, normalize=settings.normalize)), settings.model


# -- models -------------------------------------------------------------------------------------------------


def build_actor_critic(cfg: PPOStageConfig):
    from accelerate.utils import set_seed
    from torch import nn

    from rlhf.models import load_causal_lm, lora_config, resolve_model_path
    from rlhf.rollout import forward_responses, position_ids

    set_seed(cfg.run.seed)  # LoRA and value-head initialisation, then the rollouts: reproducible
    policy = load_causal_lm(cfg.model.name, cfg.model.dtype, trainable_adapter=True)
    if cfg.model.lora and not hasattr(policy, "peft_config"):
        from peft import get_peft_model

        policy = get_peft_model(policy, lora_config(cfg.model.lora))
    critic = None
    if cfg.value.mode == "separate":
        from transformers import AutoModel

        critic = AutoModel.from_pretrained(
            resolve_model_path(cfg.value.model or _base_of(cfg.model.name)), dtype=policy.dtype
        )
        if cfg.model.lora:
            from peft import get_peft_model

            critic = get_peft_model(critic, lora_config(cfg.model.lora, "FEATURE_EXTRACTION"))
    hidden = policy.config.hidden_size if critic is None else critic.config.hidden_size
    if cfg.ppo.gradient_checkpointing:
        for m in (policy, critic):
            if m is not None:
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                if hasattr(m, "enable_input_require_grads"):
                    m.enable_input_require_grads()

    class ActorCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.policy, self.critic = policy, critic
            self.value_head = nn.Linear(hidden, 1, dtype=policy.dtype)
            nn.init.normal_(self.value_head.weight, std=1.0 / math.sqrt(hidden + 1))
            nn.init.zeros_(self.value_head.bias)

        def forward(self, rollout, temperature: float):
            logp, states = forward_responses(
                self.policy, rollout, temperature=temperature, hidden=self.critic is None
            )
            if self.critic is not None:
                mask = rollout.attention_mask.to(logp.device)
                out = self.critic(
                    input_ids=rollout.input_ids.to(logp.device),
                    attention_mask=mask,
                    position_ids=position_ids(mask),
                )
                states = out.last_hidden_state[:, rollout.prompt_width - 1 : -1]
            return logp, self.value_head(states).squeeze(-1).float()

    return ActorCritic()


def _base_of(name: str) -> str:
    from rlhf.models import _adapter_base, resolve_model_path

    return _adapter_base(resolve_model_path(name)) or name


# -- the stage ----------------------------------------------------------------------------------------------


def load_prompts(cfg: PPOStageConfig, tokenizer) -> tuple[list, list[list[int]], dict]:
    from rlhf.data import load_rows, validate_rows
    from rlhf.stages.generate import encode_prompt, normalise_prompt

    rows = load_rows(cfg.data.prompts, what="data.prompts", split=cfg.data.split)
    kept, acct = validate_rows(
        rows,
        normalise_prompt,
        what="data.prompts",
        length=lambda r: len(encode_prompt(tokenizer, r["prompt"])),
        max_length=cfg.data.max_prompt_length,
    )
    prompts = [r["prompt"] for r in kept]
    return prompts, [encode_prompt(tokenizer, p) for p in prompts], acct.summary()


def prompt_indices(n: int, seed: int, start: int, count: int) -> list[int]:
    """Positions start..start+count of an endless stream: a seeded permutation of range(n) per epoch."""
    import torch

    out, perms = [], {}
    for i in range(start, start + count):
        epoch = i // n
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        out.append(perms[epoch][i % n])
    return out


def make_accelerator(cfg: PPOStageConfig):
    import torch
    from accelerate import Accelerator

    from rlhf.trainer_args import fast_bf16, under_deepspeed

    bf16 = cfg.ppo.bf16 if cfg.ppo.bf16 is not None else fast_bf16()
    kwargs = {"mixed_precision": "bf16" if bf16 else "no"}
    if not under_deepspeed():
        kwargs["cpu"] = not torch.cuda.is_available()
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from datetime import timedelta

        from accelerate.utils import InitProcessGroupKwargs

        kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo", timeout=timedelta(minutes=30))]
    acc = Accelerator(**kwargs)
    plugin = acc.state.deepspeed_plugin
    if plugin is not None:
        ds = plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = cfg.ppo.minibatch_size
        ds["train_batch_size"] = cfg.ppo.minibatch_size * acc.num_processes
        ds["gradient_accumulation_steps"] = 1
        if ds.get("gradient_clipping") in (None, "auto"):
            ds["gradient_clipping"] = cfg.ppo.max_grad_norm
    return acc


def run(cfg: PPOStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    import torch
    from transformers import get_scheduler

    from rlhf.drift import DriftGuard
    from rlhf.losses import KLController
    from rlhf.models import load_causal_lm, load_tokenizer, resolve_model_path
    from rlhf.stages.sft import load_path

    run_dir = RunDir.prepare(cfg.run, "ppo", cfg, resume=resume, overwrite=overwrite)
    try:
        tokenizer = load_tokenizer(cfg.model.name, padding_side="left")
        prompts, prompt_ids, acct = load_prompts(cfg, tokenizer)
        # The reward model and the frozen reference load before the Accelerator exists: under ZeRO-3 a model
        # loaded afterwards would be partitioned without an engine to gather it.
        reward_fn, reward_desc = load_reward(cfg.reward)
        reference = None
        if not cfg.model.lora:
            reference = load_causal_lm(cfg.model.name, cfg.model.dtype).eval().requires_grad_(False)
        accelerator = make_accelerator(cfg)
        accelerator.wait_for_everyone()
        if reference is not None:
            reference.to(accelerator.device)
        run_dir.record_input("data.prompts", cfg.data.prompts, load_path(cfg.data.prompts))
        run_dir.record_input("model", cfg.model.name, resolve_model_path(cfg.model.name))
        if cfg.reward.model:
            run_dir.record_input("reward.model", cfg.reward.model, resolve_model_path(cfg.reward.model))
        run_dir.update_manifest(data={"prompts": acct})
        _say(
            accelerator,
            f"[rlhf] ppo prompts: {acct['rows_in']} in, {acct['rows_kept']} used, {acct['rows_rejected']} "
            f"rejected {acct['rejected_by_reason'] or ''}",
        )
        model = build_actor_critic(cfg)
        p = cfg.ppo
        policy_params = [x for n, x in model.named_parameters() if x.requires_grad and not _is_value(n)]
        value_params = [x for n, x in model.named_parameters() if x.requires_grad and _is_value(n)]
        optimizer = torch.optim.AdamW(
            [
                {"params": policy_params, "lr": p.learning_rate},
                {"params": value_params, "lr": p.value_learning_rate or p.learning_rate},
            ],
            weight_decay=p.weight_decay,
        )
        updates = p.steps * p.ppo_epochs * (p.rollout_batch_size // p.minibatch_size)
        scheduler = get_scheduler(
            p.lr_scheduler if p.lr_scheduler != "constant" else "constant_with_warmup",
            optimizer,
            num_warmup_steps=p.warmup_steps,
            num_training_steps=updates,
        )
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        _checkpoint_trainable_only(accelerator, model)
        kl_ctl = KLController(p.kl_coef, p.kl_target, p.kl_horizon)
        guard = DriftGuard(cfg.drift)
        start = 0
        checkpoint = run_dir.resume_point(resume)
        if checkpoint:
            accelerator.load_state(checkpoint, strict=False)
            state = json.loads((run_dir.checkpoints / checkpoint.split("/")[-1] / STATE_FILE).read_text())
            start = state["step"]
            kl_ctl.load_state_dict(state["kl_controller"])
            guard.load_state_dict(state["drift"])
        trainer = _Loop(
            cfg, accelerator, model, optimizer, scheduler, reference, tokenizer, reward_fn, reward_desc
        )
        t0 = time.perf_counter()
        step = start
        last: dict = {}
        for step in range(start + 1, p.steps + 1):
            idx = prompt_indices(
                len(prompts),
                cfg.run.seed,
                (step - 1) * p.rollout_batch_size * accelerator.num_processes
                + accelerator.process_index * p.rollout_batch_size,
                p.rollout_batch_size,
            )
            last = trainer.step(
                step, [prompts[i] for i in idx], [prompt_ids[i] for i in idx], kl_ctl, run_dir
            )
            drift_metrics, _ = guard.observe(step, last["kl"], last["response_length"])
            if step % p.logging_steps == 0 or step == p.steps:
                run_dir.log_metrics({"step": step, **last, **drift_metrics})
                _say(accelerator, _progress(step, p.steps, last))
            if guard.should_stop:
                break
            if (p.save_steps and step % p.save_steps == 0) or step == p.steps:
                _save_checkpoint(accelerator, run_dir, step, kl_ctl, guard, p.save_total_limit)
        seconds = time.perf_counter() - t0
        restored = None
        if guard.should_stop:
            from rlhf.drift import best_checkpoint

            best = best_checkpoint(run_dir.checkpoints, guard.last_ok_step, CKPT_MARKER)
            if best is not None:
                accelerator.load_state(str(best), strict=False)
                restored = str(best)
            _say(
                accelerator,
                f"[rlhf] ppo stopped by the drift guard; exporting {restored or 'the current policy (no checkpoint was within bounds)'}",
            )
        outcome = {
            "steps": step,
            "train_seconds": round(seconds, 2),
            "seconds_per_step": round(seconds / max(1, step - start), 3),
            "reference": "adapter disabled (no copy)" if cfg.model.lora else "frozen copy",
            "value": cfg.value.mode,
            "reward": reward_desc,
            "kl_coef": kl_ctl.value,
            "drift": {**guard.summary(), "restored_checkpoint": restored},
            "last_logged": last,
        }
        _save_policy(cfg, accelerator, model, tokenizer, run_dir, outcome)
        run_dir.finish(result=outcome, model_dir=str(run_dir.model_dir))
        _say(accelerator, f"[rlhf] ppo finished: {step} steps in {seconds:.1f} s -> {run_dir.model_dir}")
        return run_dir
    except BaseException as e:
        run_dir.fail(f"{type(e).__name__}: {e}")
        raise
    finally:
        finish_distributed()


def _is_value(name: str) -> bool:
    return name.startswith(("value_head.", "critic.", "module.value_head.", "module.critic."))


def _say(accelerator, text: str) -> None:
    if accelerator.is_main_process:
        print(text, flush=True)


def _progress(step: int, total: int, m: dict) -> str:
    return (
        f"[rlhf] ppo step {step}/{total}: reward {m['reward']:.3f} kl {m['kl']:.3f} len {m['response_length']:.1f} "
        f"loss {m['loss/policy']:.4f}/{m['loss/value']:.4f} "
        f"({m['time/generation']:.2f}+{m['time/scoring']:.2f}+{m['time/optimisation']:.2f} s)"
    )


def _checkpoint_trainable_only(accelerator, model) -> None:
    """Checkpoints hold the trainable weights only (with LoRA: the adapters and the value head, not a copy of
    the frozen base, which is reloaded from model.name on resume). DeepSpeed keeps its own engine format."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return
    names = {n for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
    names |= {f"module.{n}" for n in names}  # DDP-wrapped state dicts

    def keep_trainable(models, weights, output_dir):
        for i, w in enumerate(weights):
            weights[i] = {k: v for k, v in w.items() if k in names}

    accelerator.register_save_state_pre_hook(keep_trainable)


def _save_checkpoint(accelerator, run_dir: RunDir, step: int, kl_ctl, guard, limit: int | None) -> None:
    path = run_dir.checkpoints / f"checkpoint-{step}"
    accelerator.save_state(str(path))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "kl_controller": kl_ctl.state_dict(), "drift": guard.state_dict()}
        (path / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        (path / CKPT_MARKER).write_text(f"{step}\n")
        if limit:
            done = sorted(
                (d for d in run_dir.checkpoints.glob("checkpoint-*") if (d / CKPT_MARKER).exists()),
                key=lambda d: int(d.name.split("-")[-1]),
            )
            for old in done[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _save_policy(cfg: PPOStageConfig, accelerator, model, tokenizer, run_dir: RunDir, outcome: dict) -> None:
    """The policy into runs/<name>/model (merged or adapter); under ZeRO-3 every rank gathers it first."""
    from rlhf.models import save_model
    from rlhf.trainer_args import gathered_for_save

    policy = accelerator.unwrap_model(model).policy
    plugin = accelerator.state.deepspeed_plugin
    with gathered_for_save(policy, zero3=plugin is not None and plugin.zero_stage == 3):
        if accelerator.is_main_process:
            outcome["model_kind"] = save_model(
                policy, tokenizer, run_dir.model_dir, merge_lora=cfg.save == "merged"
            )
    accelerator.wait_for_everyone()


class _Loop:
    """One PPO step at a time: rollout -> score -> evaluate -> optimise. Returns the step's metrics."""

    def __init__(
        self, cfg, accelerator, model, optimizer, scheduler, reference, tokenizer, reward_fn, reward_desc
    ):
        self.cfg, self.acc, self.model, self.opt, self.sched = cfg, accelerator, model, optimizer, scheduler
        self.reference, self.tok, self.reward_fn, self.reward_desc = (
            reference,
            tokenizer,
            reward_fn,
            reward_desc,
        )
        plugin = accelerator.state.deepspeed_plugin
        self.synced = plugin is not None and plugin.zero_stage == 3 and accelerator.num_processes > 1

    def _sum(self, x):
        return self.acc.reduce(x, "sum") if self.acc.num_processes > 1 else x

    def _halt_if(self, bad: bool, what: str, step: int) -> None:
        import torch

        flag = self._sum(torch.tensor(float(bad), device=self.acc.device))
        if flag.item() > 0:
            raise TrainingError(
                f"{what} at PPO step {step}; training stopped before updating the weights. The last complete "
                "checkpoint is intact (resume with --resume after fixing the cause: lower ppo.learning_rate, "
                "check the reward model or function, or set reward.clip)."
            )

    def step(self, step: int, prompts: list, prompt_ids: list[list[int]], kl_ctl, run_dir) -> dict:
        import torch
        from accelerate.utils import DistributedType

        from rlhf import losses as L
        from rlhf.rollout import decode_responses, forward_responses, generate

        cfg, p, g = self.cfg, self.cfg.ppo, self.cfg.generation
        unwrapped = self.acc.unwrap_model(self.model)
        policy = unwrapped.policy
        t0 = time.perf_counter()
        self.model.eval()
        rollout = generate(
            policy,
            self.tok,
            prompt_ids,
            max_new_tokens=g.max_new_tokens,
            do_sample=g.do_sample,
            temperature=g.temperature,
            top_k=g.top_k,
            top_p=g.top_p,
            synced_gpus=self.synced,
        )
        t1 = time.perf_counter()
        texts = decode_responses(self.tok, rollout)
        raw = [float(x) for x in self.reward_fn(prompts, texts)]
        bad = [i for i, v in enumerate(raw) if not math.isfinite(v)]
        self._halt_if(
            bool(bad), f"the reward ({self.reward_desc}) was not finite for {len(bad)} responses", step
        )
        scores = torch.tensor(raw, dtype=torch.float32)
        if cfg.reward.clip is not None:
            scores = scores.clamp(-cfg.reward.clip, cfg.reward.clip)
        if cfg.reward.missing_eos_penalty is not None:
            scores = scores - cfg.reward.missing_eos_penalty * (~rollout.ended).float()
        t2 = time.perf_counter()
        mask = rollout.response_mask.to(self.acc.device)
        with torch.no_grad():
            old_logp, old_values = self.model(rollout, g.temperature)
            if self.reference is None:
                with policy.disable_adapter():
                    ref_logp = forward_responses(policy, rollout, temperature=g.temperature)[0]
            else:
                ref_logp = forward_responses(self.reference, rollout, temperature=g.temperature)[0]
            old_logp, old_values, ref_logp = old_logp * mask, old_values * mask, ref_logp * mask
            kl = L.kl_per_token(old_logp, ref_logp, p.kl_estimator) * mask
            rewards = L.token_rewards(scores.to(mask.device), kl, kl_ctl.value, mask)
            if p.whiten_rewards:
                rewards = L.masked_whiten(rewards, mask, shift_mean=False, reduce=self._reduce)
            advantages, returns = L.gae(rewards, old_values, mask, p.gamma, p.lam)
            advantages = L.masked_whiten(advantages, mask, reduce=self._reduce)
        self.model.train()
        stats: dict[str, list[float]] = {}
        n_mb = p.rollout_batch_size // p.minibatch_size
        gen = torch.Generator().manual_seed(cfg.run.seed * 100003 + step)
        for _ in range(p.ppo_epochs):
            order = torch.randperm(p.rollout_batch_size, generator=gen)
            for k in range(n_mb):
                mb = order[k * p.minibatch_size : (k + 1) * p.minibatch_size]
                m = mask[mb]
                denom = self._sum(m.sum()) / self.acc.num_processes
                logp, values = self.model(rollout.select(mb), g.temperature)
                pg, pg_stats = L.policy_loss(logp, old_logp[mb], advantages[mb], m, p.clip_range, denom)
                vf, vf_stats = L.value_loss(values, old_values[mb], returns[mb], m, p.clip_range_value, denom)
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
        t3 = time.perf_counter()
        seq_kl = kl.sum(1)
        n_seq = self._sum(torch.tensor(float(len(scores)), device=self.acc.device))
        mean = lambda x: (self._sum(x.sum().to(self.acc.device)) / n_seq).item()  # noqa: E731
        out = {
            "reward": mean(torch.tensor(raw)),
            "reward/with_penalties": mean(scores),
            "kl": mean(seq_kl),
            "kl_coef": kl_ctl.value,
            "response_length": mean(mask.sum(1)),
            "ended_fraction": mean(rollout.ended.float()),
            "entropy_estimate": mean(-(old_logp.sum(1))) / max(1e-9, mean(mask.sum(1))),
            **{k: self._mean_over_processes(sum(v) / len(v)) for k, v in stats.items()},
            "lr": self.sched.get_last_lr()[0],
            "time/generation": t1 - t0,
            "time/scoring": t2 - t1,
            "time/optimisation": t3 - t2,
        }
        kl_ctl.update(out["kl"], int(n_seq.item()))
        return out

    def _reduce(self, x):
        return self._sum(x)

    def _mean_over_processes(self, value: float) -> float:
        import torch

        return self._sum(torch.tensor(value, device=self.acc.device)).item() / self.acc.num_processes
