"""Online RL stages: GRPO and RLOO on TRL's GRPOTrainer / RLOOTrainer, rewarded by a trained reward model.

    rlhf grpo --config configs/grpo.yaml [trainer.beta=0.04 trainer.num_generations=4 ...]
    rlhf rloo --config configs/rloo.yaml [...]

Inputs : a policy (alias | directory | run dir | hub id; typically runs/sft-demo), prompts (`prompt`
         column: a string or a message list ending with a user turn; optional `id`), and a reward: an
         `rlhf reward` run (its declared model, with rlhf_reward.json) or a `module:function`.
Outputs: runs/<name>/model (merged weights, or the adapter), checkpoints, metrics.jsonl (reward, KL,
         completion lengths, drift/*), manifest with the prompt accounting, the reward-model calls and the
         drift guard's summary, COMPLETED.

Choices:
- One module serves both algorithms; they differ only in the TRL trainer/config class and the default run
  name. The `trainer:` mapping goes to `trl.GRPOConfig` / `trl.RLOOConfig` verbatim (num_generations,
  max_completion_length, beta, loss_type, temperature, ...).
- The reward (`rlhf.reward.sources`, shared with PPO) decodes nothing itself: TRL hands it the prompts and the
  decoded completions (text, or message lists for chat prompts); a reward model formats them with its
  *own* tokenizer — the RM and the policy may use different tokenizers. A NaN/inf reward stops the run
  with a TrainingError naming the step and the prompt (TRL alone would silently zero its advantage).
- With LoRA the reference is the policy with its adapter disabled (no second copy). TRL computes (and
  logs, as `kl`) the KL to the reference only when `trainer.beta > 0`; GRPO's default beta is 0, so
  `drift.max_kl` requires a positive beta.
- Drift guard: `DriftCallback` reads TRL's logged per-token `kl` (times `completions/mean_length`) and
  `completions/mean_length`; under `drift.action: stop` the exported model is the best checkpoint.
- Completions (`generation.backend`): hf is TRL's own generation (and `trainer.use_vllm`, TRL's vLLM modes
  for GPUs); vllm samples the policy of each generation step in a vLLM engine in its own environment
  (`rlhf.train.online`: its adapter or full weights written and loaded, one engine start per run).
- Prompts longer than data.max_prompt_length tokens (after the policy's chat template) are rejected and
  reported by id — TRL would otherwise feed them whole (it has no prompt truncation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import trl
from datasets import Dataset

from rlhf.config import ConfigError, documented
from rlhf.engine import EngineSettings
from rlhf.errors import DataError
from rlhf.models import ModelConfig, load_tokenizer, lora_config
from rlhf.prompts import PromptSource, as_messages, encode_prompt, load_prompts
from rlhf.reward import Reward, RewardSettings, check_reward, load_reward
from rlhf.rollouts import PolicySampler
from rlhf.runs import RunDir, RunSettings
from rlhf.train import (
    DriftCallback,
    DriftGuard,
    DriftSettings,
    Trained,
    TRLStage,
    autocast_generation,
    check_trainer_section,
    engine_sampled,
    engine_sampling,
)

LOG_KL = "kl"  # TRL 1.16: mean per-token KL to the reference (logged only when beta > 0)
LOG_LENGTH = "completions/mean_length"  # TRL 1.16: mean completion length in tokens
REWARD_NAME = "reward_model"  # TRL logs rewards/reward_model/mean and /std (plus `reward`, `reward_std`)
TRL_CLASSES = {"grpo": (trl.GRPOConfig, trl.GRPOTrainer), "rloo": (trl.RLOOConfig, trl.RLOOTrainer)}


@dataclass
class PromptData(PromptSource):
    as_chat: bool = documented(
        True, help="wrap plain-string prompts as a user turn (the chat template then formats them)"
    )


@dataclass
class GRPOStageConfig:
    algorithm: ClassVar[str] = "grpo"
    run: RunSettings = field(default_factory=lambda: RunSettings(name="grpo"))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PromptData = field(default_factory=PromptData)
    reward: RewardSettings = field(default_factory=RewardSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    generation: EngineSettings = documented(
        default_factory=EngineSettings,
        help="the completions' engine: hf is TRL's own generation (or trainer.use_vllm); vllm writes the policy "
        "each generation step and samples it in a vLLM engine in its own environment (docs/generation.md)",
    )
    save: Literal["merged", "adapter"] = "merged"
    trainer: dict = documented(default_factory=dict, help="-> trl.GRPOConfig(**trainer)")

    def __post_init__(self):
        check_trainer_section(TRL_CLASSES[self.algorithm][0], self.trainer)


@dataclass
class RLOOStageConfig(GRPOStageConfig):
    algorithm: ClassVar[str] = "rloo"
    run: RunSettings = documented(
        default_factory=lambda: RunSettings(name="rloo"), help="trainer -> trl.RLOOConfig"
    )


def prepare_prompts(data: PromptData, tokenizer) -> tuple[list[dict], dict]:
    """Validated prompt rows [{id, prompt}] as TRL will feed them (strings wrapped as a user turn when
    `as_chat`; token counts by the chat template for message lists, the plain tokenizer for strings)."""

    def encode(tok, prompt) -> list[int]:
        if isinstance(prompt, str) and not data.as_chat:
            return tok(prompt)["input_ids"]
        return encode_prompt(tok, as_messages(prompt))

    prompts = load_prompts(data, [tokenizer], section="data", encode=encode)
    rows = [
        {"id": pid, "prompt": as_messages(p) if isinstance(p, str) and data.as_chat else p}
        for pid, p in zip(prompts.ids, prompts.prompts, strict=True)
    ]
    if len({isinstance(r["prompt"], str) for r in rows}) > 1:
        raise DataError(
            f"data.prompts: '{data.prompts}' mixes plain-string and message-list prompts, which TRL cannot batch "
            "together; set data.as_chat=true to wrap the strings as user turns."
        )
    return rows, prompts.accounting


class TRLReward:
    """TRL reward function over a `Reward`: the score of each (prompt, decoded completion)."""

    __name__ = REWARD_NAME

    def __init__(self, reward: Reward):
        self.reward = reward

    def __call__(self, prompts, completions, trainer_state=None, **columns):
        step = trainer_state.global_step + 1 if trainer_state is not None else "?"
        values = self.reward(prompts, completions, where=f"at step {step}", ids=columns.get("id"))
        return self.reward.clipped(values)


def result_of(stage: TRLStage, trained: Trained, reward: Reward, guard: DriftGuard) -> dict:
    """The manifest's result: training, reference, reward-model use, last logged metrics, drift."""
    cfg, args, logs = stage.cfg, stage.config, stage.callback.last_logs
    rewards = [r["reward"] for r in stage.run_dir.read_metrics() if "reward" in r]
    keys = ("reward", "reward_std", "kl", "loss", "entropy", LOG_LENGTH, f"rewards/{REWARD_NAME}/")
    reference = "adapter disabled (no copy)" if cfg.model.lora else "frozen copy"
    return {
        "algorithm": cfg.algorithm,
        **trained.outcome(),
        "reference": "none (beta = 0: no KL term)" if not args.beta else reference,
        "reward_model": cfg.reward.source,
        "reward_calls": reward.calls,
        "completions_scored": reward.scored,
        "reward_first_logged": rewards[0] if rewards else None,
        "reward_last_logged": rewards[-1] if rewards else None,
        "last_logged": {k: v for k, v in logs.items() if k.startswith(keys)},
        "drift": guard.summary(),
        "restored_checkpoint": trained.restored,
    }


def run(cfg: GRPOStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    algo = cfg.algorithm
    config_cls, trainer_cls = TRL_CLASSES[algo]
    # Config errors (trainer keys, the reward model, KL without beta) fail before the run dir is written.
    stage = TRLStage(algo, config_cls, cfg)
    args = stage.config
    if cfg.drift.max_kl is not None and not args.beta > 0:
        raise ConfigError(
            f"'drift.max_kl' needs trainer.beta > 0: TRL computes the KL to the reference only then "
            f"(trl.{config_cls.__name__} beta is {args.beta}). Set trainer.beta (e.g. 0.04) or drift.max_kl=null."
        )
    rm_path = check_reward(cfg.reward)
    sampling = engine_sampling(args, "auto") if cfg.generation.backend == "vllm" else None

    with stage.open(resume=resume, overwrite=overwrite) as run_dir:
        tokenizer = load_tokenizer(cfg.model.name)
        prompts, report = prepare_prompts(cfg.data, tokenizer)
        stage.record_inputs("data.prompts", cfg.data.prompts)
        run_dir.record_input(
            "reward.model" if cfg.reward.model else "reward.function", cfg.reward.source, rm_path
        )
        run_dir.account(algo, {"prompts": report})
        reward = load_reward(cfg.reward)
        drift = DriftCallback(run_dir, DriftGuard(cfg.drift), kl_key=LOG_KL, length_key=LOG_LENGTH)
        sampler = PolicySampler(
            cfg.generation,
            seed=cfg.run.seed,
            scratch=run_dir.path / "engine-policy",
            processes=args.world_size,
            log_dir=run_dir.path,
        )
        model = stage.load_model()
        if sampling is not None:
            trainer_cls = engine_sampled(trainer_cls, sampler, sampling, with_logprobs=algo == "grpo")
        elif stage.bf16_base:  # the bf16 LoRA base meets its fp32 adapters only under autocast
            trainer_cls = autocast_generation(trainer_cls)
        try:
            trainer = trainer_cls(
                model=model,
                reward_funcs=TRLReward(reward),
                args=args,
                train_dataset=Dataset.from_list(prompts),
                processing_class=tokenizer,
                peft_config=lora_config(cfg.model.lora) if cfg.model.lora else None,
                callbacks=[stage.callback, drift],
            )
            trained = stage.train(trainer, resume=resume, drift=drift)
        finally:
            sampler.close()
        outcome = {**result_of(stage, trained, reward, drift.guard), "rollouts": sampler.stats}
        first, last = outcome["reward_first_logged"], outcome["reward_last_logged"]
        stage.finish(trainer, tokenizer, trained, outcome, save=cfg.save, summary=f"reward {first} -> {last}")
        return run_dir
