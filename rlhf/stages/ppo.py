"""PPO stage: on-policy RL of the policy against a reward model or function (our own trainer, on accelerate).

    rlhf ppo --config configs/ppo.yaml [ppo.steps=50 ppo.kl_coef=0.1 ...]
    accelerate launch --config_file configs/accelerate/zero2.yaml -m rlhf ppo --config configs/ppo.yaml

Inputs : a policy (alias | directory | run dir | LoRA adapter), prompts, and a reward: `reward.model` (an
         `rlhf reward` run, scored through RewardScorer on decoded text, so the RM may use another
         tokenizer) or `reward.function` ("module:function" taking (prompts, responses) -> list of floats).
Outputs: runs/<name>/model (merged policy, or the adapter; the declared `model` output),
         checkpoints/checkpoint-N (full state), metrics.jsonl (reward, KL, lengths, losses, time split per
         step), manifest, COMPLETED.

The algorithm lives in the library — `rlhf.train.ppo.trainer` (one step: rollout -> score -> advantages ->
optimise; state save/load), `rlhf.train.ppo.actor_critic` (policy + value head, `value.mode: shared | separate`),
`rlhf.train.ppo.losses` (the pure maths). This module wires config, data, reward and models, and runs the loop:
each step takes this process's share of a seeded endless prompt stream (the cursor is the step), then the
KL controller and the drift guard update, and a checkpoint is written every `ppo.save_steps`. Checkpoints
hold everything needed for an exact resume. A NaN/inf reward or loss stops the run before any weight is
touched, naming the step; the last checkpoint stays intact. Under `drift.action: stop` the exported
policy is the newest checkpoint saved within bounds. Rollouts (`generation.backend`, `rlhf.rollouts`): hf
samples the training model in this process; vllm writes the policy each step (a LoRA adapter, or the full
weights, reloaded into the running engine) and samples it in one vLLM engine for the run; log-probs, KL
and values always come from the training model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from rlhf.config import documented
from rlhf.data import source_path
from rlhf.distributed import finish_distributed
from rlhf.engine import EngineSettings
from rlhf.generation import SamplingSettings
from rlhf.models import ModelConfig, load_causal_lm, load_tokenizer, record_model
from rlhf.prompts import PromptSource, load_prompts
from rlhf.reward import RewardSettings, check_reward, load_reward
from rlhf.rollouts import PolicySampler
from rlhf.runs import CKPT_MARKER, RunDir, RunSettings
from rlhf.train import DriftGuard, DriftSettings, best_checkpoint, describe_precision
from rlhf.train.ppo import (
    PPOSettings,
    PPOTrainer,
    ValueSettings,
    build_actor_critic,
    make_accelerator,
    prompt_indices,
)


@dataclass
class PPORewardSettings(RewardSettings):
    missing_eos_penalty: float | None = documented(1.0, help="subtracted from responses that never reach EOS")


@dataclass
class PPOStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="ppo"))
    model: ModelConfig = field(default_factory=ModelConfig)
    value: ValueSettings = field(default_factory=ValueSettings)
    reward: PPORewardSettings = field(default_factory=PPORewardSettings)
    data: PromptSource = field(default_factory=PromptSource)
    sampling: SamplingSettings = field(default_factory=lambda: SamplingSettings(max_new_tokens=48))
    generation: EngineSettings = documented(
        default_factory=EngineSettings,
        help="the rollouts' engine: hf samples the training model in this process; vllm writes the policy "
        "each step (LoRA: its adapter) and samples it in a vLLM engine (docs/generation.md)",
    )
    ppo: PPOSettings = field(default_factory=PPOSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    save: Literal["merged", "adapter"] = "merged"


def run(cfg: PPOStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    p = cfg.ppo
    rm_path = check_reward(cfg.reward)  # a missing reward model fails before anything is written
    sampler = None
    try:
        with RunDir.prepare(cfg.run, "ppo", cfg, resume=resume, overwrite=overwrite) as run_dir:
            tokenizer = load_tokenizer(cfg.model.name, padding_side="left")
            prompts = load_prompts(cfg.data, [tokenizer], section="data")
            run_dir.record_input("data.prompts", cfg.data.prompts, source_path(cfg.data.prompts))
            record_model(run_dir, "model", cfg.model.name)
            run_dir.record_input(
                f"reward.{'model' if cfg.reward.model else 'function'}", cfg.reward.source, rm_path
            )
            run_dir.account("ppo", {"prompts": prompts.accounting})
            # The reward model and the frozen reference load before the Accelerator exists: under ZeRO-3 a
            # model loaded afterwards would be partitioned without an engine to gather it.
            reward = load_reward(cfg.reward)
            reference = None
            if not cfg.model.lora:
                reference = load_causal_lm(cfg.model.name, cfg.model.dtype).eval().requires_grad_(False)
            accelerator = make_accelerator(p)
            accelerator.wait_for_everyone()
            if reference is not None:
                reference.to(accelerator.device)
            mixed = None if accelerator.mixed_precision == "no" else accelerator.mixed_precision
            bf16_base = bool(cfg.model.lora) and mixed == "bf16" and cfg.model.dtype == "float32"
            precision = describe_precision(
                mixed, cfg.model.dtype, bf16_base=bf16_base, trained="adapters, value head"
            )
            run_dir.say(f"precision: {precision}")
            model = build_actor_critic(
                cfg.model,
                cfg.value,
                seed=cfg.run.seed,
                gradient_checkpointing=p.gradient_checkpointing,
                bf16_base=bf16_base,
            )
            sampler = PolicySampler(
                cfg.generation,
                seed=cfg.run.seed,
                scratch=run_dir.path / "engine-policy",
                precision=cfg.sampling.precision,
                processes=accelerator.num_processes,
                log_dir=run_dir.path,
            )
            trainer = PPOTrainer(
                p,
                cfg.sampling,
                accelerator,
                model,
                reference,
                tokenizer,
                reward,
                seed=cfg.run.seed,
                missing_eos_penalty=cfg.reward.missing_eos_penalty,
                sampler=sampler,
            )
            guard = DriftGuard(cfg.drift)
            start = 0
            checkpoint = run_dir.resume_point(resume)
            if checkpoint:
                state = trainer.load_state(checkpoint)
                start = state["step"]
                guard.load_state_dict(state["drift"])
            t0 = time.perf_counter()
            step, last = start, {}
            world, rank = accelerator.num_processes, accelerator.process_index
            for step in range(start + 1, p.steps + 1):
                first = (step - 1) * p.rollout_batch_size * world + rank * p.rollout_batch_size
                idx = prompt_indices(len(prompts), cfg.run.seed, first, p.rollout_batch_size)
                last = trainer.step(
                    step,
                    [prompts.prompts[i] for i in idx],
                    [prompts.token_ids[i] for i in idx],
                    [prompts.ids[i] for i in idx],
                )
                drift_metrics, _ = guard.observe(step, last["kl"], last["response_length"])
                if step % p.logging_steps == 0 or step == p.steps:
                    run_dir.log_metrics({"step": step, **last, **drift_metrics})
                    run_dir.say(_progress(step, p.steps, last))
                if guard.should_stop:
                    break
                if (p.save_steps and step % p.save_steps == 0) or step == p.steps:
                    path = run_dir.checkpoints / f"checkpoint-{step}"
                    trainer.save_state(path, step, {"drift": guard.state_dict()}, p.save_total_limit)
            seconds = time.perf_counter() - t0
            restored = None
            if guard.should_stop:
                best = best_checkpoint(run_dir.checkpoints, guard.last_ok_step, CKPT_MARKER)
                if best is not None:
                    trainer.load_state(best, weights_only=True)
                    restored = str(best)
                run_dir.say(
                    "ppo stopped by the drift guard; exporting "
                    f"{restored or 'the current policy (no checkpoint was within bounds)'}"
                )
            outcome = {
                "steps": step,
                "train_seconds": round(seconds, 2),
                "seconds_per_step": round(seconds / max(1, step - start), 3),
                "reference": "adapter disabled (no copy)" if cfg.model.lora else "frozen copy",
                "precision": precision,
                "value": cfg.value.mode,
                "reward": cfg.reward.source,
                "kl_coef": trainer.kl_ctl.value,
                "drift": {**guard.summary(), "restored_checkpoint": restored},
                "rollouts": sampler.stats,
                "last_logged": last,
            }
            outcome["model_kind"] = trainer.save_policy(
                run_dir.model_dir,
                merge_lora=cfg.save == "merged",
                fp32_base=cfg.model.name if bf16_base else None,
            )
            run_dir.finish(result=outcome, outputs={"model": run_dir.model_dir})
            run_dir.say(
                f"ppo finished: {step} steps in {seconds:.0f} s, reward {last.get('reward', float('nan')):.3f}, "
                f"KL {last.get('kl', float('nan')):.2f} nats -> model {run_dir.model_dir}"
            )
            return run_dir
    finally:
        if sampler is not None:
            sampler.close()
        finish_distributed()


def _progress(step: int, total: int, m: dict) -> str:
    return (
        f"ppo step {step}/{total}: reward {m['reward']:.3f} kl {m['kl']:.3f} len {m['response_length']:.1f} "
        f"loss {m['loss/policy']:.4f}/{m['loss/value']:.4f} "
        f"({m['time/generation']:.2f}+{m['time/scoring']:.2f}+{m['time/optimisation']:.2f} s)"
    )
