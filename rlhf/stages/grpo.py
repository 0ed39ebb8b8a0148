"""Online RL stages: GRPO and RLOO on TRL's GRPOTrainer / RLOOTrainer, rewarded by a trained reward model.

    rlhf grpo --config configs/grpo.yaml [trainer.beta=0.04 trainer.num_generations=4 ...]
    rlhf rloo --config configs/rloo.yaml [...]

Inputs : a policy (alias | directory | hub id; typically runs/sft-demo/model), prompts (`prompt` column: a
         string or a message list ending with a user turn; optional `id`), and a reward model directory
         from `rlhf reward` (runs/<name>/model with rlhf_reward.json).
Outputs: runs/<name>/model (merged weights, or the adapter), checkpoints, metrics.jsonl (reward, KL,
         completion lengths, drift/*), manifest with the prompt accounting, the reward-model calls and the
         drift guard's summary, COMPLETED.

Choices:
- One module serves both algorithms; they differ only in the TRL trainer/config class and the default run
  name. The `trainer:` mapping goes to `trl.GRPOConfig` / `trl.RLOOConfig` verbatim (num_generations,
  max_completion_length, beta, loss_type, temperature, ...).
- The reward function decodes nothing itself: TRL hands it the prompts and the decoded completions (text,
  or message lists for chat prompts) and it calls `RewardScorer.score`, which formats them with the reward
  model's *own* tokenizer — the RM and the policy may use different tokenizers. A NaN/inf reward stops the
  run with a TrainingError (TRL alone would treat it as "unscorable" and silently zero its advantage).
- With LoRA the reference is the policy with its adapter disabled (no second copy). TRL computes (and
  logs, as `kl`) the KL to the reference only when `trainer.beta > 0`; GRPO's default beta is 0, so
  `drift.max_kl` requires a positive beta.
- Drift guard: `DriftCallback` reads TRL's logged per-token `kl` (times `completions/mean_length`) and
  `completions/mean_length`; under `drift.action: stop` the exported model is the best checkpoint.
- Prompts longer than data.max_prompt_length tokens (after the policy's chat template) are rejected and
  reported by id — TRL would otherwise feed them whole (it has no prompt truncation).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rlhf.config import ConfigError
from rlhf.drift import DriftSettings
from rlhf.errors import DataError, ModelError, TrainingError
from rlhf.models import ModelConfig
from rlhf.runs import RunDir, RunSettings
from rlhf.trainer_args import build_trl_config, check_reserved, point_tensorboard_at, save_trained

RESERVED = {"output_dir": "run.output_root and run.name", "seed": "run.seed"}
LOG_KL = "kl"  # TRL 1.16: mean per-token KL to the reference (logged only when beta > 0)
LOG_LENGTH = "completions/mean_length"  # TRL 1.16: mean completion length in tokens
REWARD_NAME = "reward_model"  # TRL logs rewards/reward_model/mean and /std (plus `reward`, `reward_std`)


@dataclass
class PromptData:
    prompts: str = "demo:prompts"  # demo:prompts, .jsonl/.json/.parquet, a saved dataset dir, a hub id
    split: str = "train"
    limit: int | None = None  # first N valid prompts
    max_prompt_length: int = 256  # tokens after the policy's chat template; longer prompts are rejected
    as_chat: bool = True  # wrap plain-string prompts as a user turn (the chat template then formats them)

    def __post_init__(self):
        if self.max_prompt_length < 1:
            raise ConfigError(f"'data.max_prompt_length' must be at least 1, got {self.max_prompt_length}.")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"'data.limit' must be at least 1 or null, got {self.limit}.")


@dataclass
class RewardSettings:
    model: str = "runs/reward-demo/model"  # a reward model directory written by `rlhf reward`
    normalize: bool = True  # use the RM's saved mean/std (rlhf_reward.json)
    batch_size: int = 16  # RM forward batch

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"'reward.batch_size' must be at least 1, got {self.batch_size}.")


@dataclass
class GRPOStageConfig:
    algorithm: ClassVar[str] = "grpo"
    run: RunSettings = field(default_factory=lambda: RunSettings(name="grpo"))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PromptData = field(default_factory=PromptData)
    reward: RewardSettings = field(default_factory=RewardSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    save: str = "merged"  # merged | adapter (LoRA)
    trainer: dict = field(default_factory=dict)  # -> trl.GRPOConfig(**trainer)

    def __post_init__(self):
        check_reserved(self.trainer, RESERVED)
        if self.save not in ("merged", "adapter"):
            raise ConfigError(f"'save' must be one of merged, adapter; got {self.save!r}.")


@dataclass
class RLOOStageConfig(GRPOStageConfig):
    algorithm: ClassVar[str] = "rloo"
    run: RunSettings = field(default_factory=lambda: RunSettings(name="rloo"))  # trainer -> trl.RLOOConfig


def trl_classes(algorithm: str):
    import trl

    return {"grpo": (trl.GRPOConfig, trl.GRPOTrainer), "rloo": (trl.RLOOConfig, trl.RLOOTrainer)}[algorithm]


# -- prompts ------------------------------------------------------------------------------------------------


def prompt_token_count(tokenizer, prompt) -> int:
    """Prompt tokens as TRL will feed them: the chat template (with the generation prompt) for message
    lists, the plain tokenizer for strings."""
    from rlhf.stages.generate import encode_prompt

    if isinstance(prompt, list):
        return len(encode_prompt(tokenizer, prompt))
    return len(tokenizer(prompt)["input_ids"])


def prepare_prompts(data: PromptData, tokenizer) -> tuple[list[dict], dict]:
    """Validated prompt rows [{id, prompt}] and the accounting: rows in = used + rejected + not used."""
    from rlhf.data import load_rows, validate_rows
    from rlhf.stages.generate import normalise_prompt

    rows = load_rows(data.prompts, what="data.prompts", split=data.split)
    row_ids = {id(r): rid for rid, r in zip(rows.ids, rows.rows, strict=True)}

    def normalise(row: dict) -> tuple[dict | None, str | None]:
        out, reason = normalise_prompt(row)
        if out is None:
            return None, reason
        prompt = out["prompt"]
        if isinstance(prompt, str) and data.as_chat:
            prompt = [{"role": "user", "content": prompt}]
        n = prompt_token_count(tokenizer, prompt)
        if n > data.max_prompt_length:
            return None, f"too long: {n} prompt tokens > data.max_prompt_length {data.max_prompt_length}"
        return {"id": row_ids[id(row)], "prompt": prompt}, None

    kept, acct = validate_rows(rows, normalise, what="data.prompts")
    if len({isinstance(r["prompt"], str) for r in kept}) > 1:
        raise DataError(
            f"data.prompts: '{data.prompts}' mixes plain-string and message-list prompts, which TRL cannot batch "
            "together; set data.as_chat=true to wrap the strings as user turns."
        )
    unused = max(0, len(kept) - data.limit) if data.limit is not None else 0
    kept = kept[: data.limit] if data.limit is not None else kept
    summary = {**acct.summary(), "rows_not_used_limit": unused, "rows_used": len(kept)}
    return kept, summary


# -- reward -------------------------------------------------------------------------------------------------


def check_reward_model(settings: RewardSettings) -> Path:
    """The reward model directory, or a ConfigError that says what to run first."""
    from rlhf.scorer import META_FILE

    p = Path(settings.model).expanduser()
    hint = (
        "Train one first with `rlhf reward --config configs/reward.yaml` (it writes runs/reward-demo/model) "
        "and point reward.model at that run's model/ directory."
    )
    if not p.exists():
        raise ConfigError(f"'reward.model': no reward model at '{settings.model}' ({p.resolve()}). {hint}")
    if not p.is_dir() or not (p / "config.json").is_file():
        raise ConfigError(
            f"'reward.model': '{settings.model}' is not a reward model directory (need a directory with "
            f"config.json and weights). {hint}"
        )
    if settings.normalize:
        import json

        meta = p / META_FILE
        norm = json.loads(meta.read_text()).get("norm") if meta.is_file() else None
        if not norm:
            raise ConfigError(
                f"'reward.normalize' is true but the reward model '{settings.model}' has no normalisation "
                f"statistics in {META_FILE}. Set reward.normalize=false, or use a reward model trained by "
                "`rlhf reward`."
            )
    return p


class RewardModelReward:
    """TRL reward function: the reward model's score of each (prompt, decoded completion)."""

    __name__ = REWARD_NAME

    def __init__(self, scorer, *, normalize: bool, model_name: str):
        self.scorer, self.normalize, self.model_name = scorer, normalize, model_name
        self.calls = 0
        self.scored = 0

    def __call__(self, prompts, completions, trainer_state=None, **columns):
        step = trainer_state.global_step + 1 if trainer_state is not None else "?"
        rewards = self.scorer.score(list(prompts), list(completions), normalize=self.normalize)
        self.calls += 1
        self.scored += len(rewards)
        bad = [i for i, r in enumerate(rewards) if not math.isfinite(r)]
        if bad:
            i = bad[0]
            ids = columns.get("id")
            which = f" for prompt {ids[i]}" if ids else ""
            raise TrainingError(
                f"the reward model '{self.model_name}' returned {rewards[i]} at step {step}{which} "
                f"({len(bad)} of {len(rewards)} rewards not finite). Check the reward model (`rlhf score "
                f"--model {self.model_name} ...`) and its rlhf_reward.json normalisation statistics; the last "
                "complete checkpoint is kept (--resume continues from it)."
            )
        return [float(r) for r in rewards]


# -- the stage ----------------------------------------------------------------------------------------------


def run(cfg: GRPOStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    from datasets import Dataset

    from rlhf.callbacks import DriftCallback, RunDirCallback, restore_best
    from rlhf.drift import DriftGuard
    from rlhf.models import load_causal_lm, load_tokenizer, lora_config, resolve_model_path
    from rlhf.scorer import RewardScorer
    from rlhf.stages.sft import load_path

    algo = cfg.algorithm
    config_cls, trainer_cls = trl_classes(algo)
    # Config errors (trainer keys, the reward model, KL without beta) fail before the run dir is written.
    owned = {"output_dir": str(RunDir.at(cfg.run).checkpoints), "seed": cfg.run.seed}
    args = build_trl_config(config_cls, cfg.trainer, owned)
    if cfg.drift.max_kl is not None and not args.beta > 0:
        raise ConfigError(
            f"'drift.max_kl' needs trainer.beta > 0: TRL computes the KL to the reference only then "
            f"(trl.{config_cls.__name__} beta is {args.beta}). Set trainer.beta (e.g. 0.04) or drift.max_kl=null."
        )
    rm_path = check_reward_model(cfg.reward)

    run_dir = RunDir.prepare(cfg.run, algo, cfg, resume=resume, overwrite=overwrite)
    try:
        tokenizer = load_tokenizer(cfg.model.name)
        prompts, report = prepare_prompts(cfg.data, tokenizer)
        run_dir.record_input("data.prompts", cfg.data.prompts, load_path(cfg.data.prompts))
        run_dir.record_input("model", cfg.model.name, resolve_model_path(cfg.model.name))
        run_dir.record_input("reward.model", cfg.reward.model, rm_path)
        run_dir.update_manifest(data={"prompts": report})
        print(
            f"[rlhf] {algo} prompts: {report['rows_in']} in, {report['rows_used']} used, "
            f"{report['rows_rejected']} rejected {report['rejected_by_reason'] or ''}",
            flush=True,
        )
        for r in report["rejected_examples"][:5]:
            print(f"[rlhf]   rejected {r['id']}: {r['reason']}", flush=True)
        try:
            scorer = RewardScorer(str(rm_path), batch_size=cfg.reward.batch_size)
        except (OSError, ValueError) as e:
            raise ModelError(
                f"'reward.model': could not load the reward model '{cfg.reward.model}': {e}. Train one with "
                "`rlhf reward --config configs/reward.yaml`."
            ) from None
        reward_fn = RewardModelReward(scorer, normalize=cfg.reward.normalize, model_name=cfg.reward.model)
        point_tensorboard_at(run_dir.path / "tensorboard")
        model = load_causal_lm(cfg.model.name, cfg.model.dtype)
        guard = DriftGuard(cfg.drift)
        log_cb = RunDirCallback(run_dir)
        drift_cb = DriftCallback(run_dir, guard, kl_key=LOG_KL, length_key=LOG_LENGTH)
        trainer = trainer_cls(
            model=model,
            reward_funcs=reward_fn,
            args=args,
            train_dataset=Dataset.from_list(prompts),
            processing_class=tokenizer,
            peft_config=lora_config(cfg.model.lora) if cfg.model.lora else None,
            callbacks=[log_cb, drift_cb],
        )
        checkpoint = run_dir.resume_point(resume)
        drift_cb.resume_from(checkpoint)
        t0 = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=checkpoint)
        seconds = time.perf_counter() - t0
        restored = restore_best(trainer.model, run_dir, guard) if guard.should_stop else None
        if guard.should_stop:
            print(
                f"[rlhf] drift stop: exporting {restored or 'the final weights (no checkpoint within bounds)'}",
                flush=True,
            )
        rewards = [r["reward"] for r in run_dir.read_metrics() if "reward" in r]
        keys = ("reward", "reward_std", "kl", "loss", "entropy", LOG_LENGTH, f"rewards/{REWARD_NAME}/")
        outcome = {
            "algorithm": algo,
            "global_step": trainer.state.global_step,
            "train_loss": result.training_loss,
            "train_seconds": round(seconds, 2),
            "reference": (
                "none (beta = 0: no KL term)"
                if not args.beta
                else "adapter disabled (no copy)"
                if cfg.model.lora
                else "frozen copy"
            ),
            "reward_model": cfg.reward.model,
            "reward_calls": reward_fn.calls,
            "completions_scored": reward_fn.scored,
            "reward_first_logged": rewards[0] if rewards else None,
            "reward_last_logged": rewards[-1] if rewards else None,
            "last_logged": {k: v for k, v in log_cb.last_logs.items() if k.startswith(keys)},
            "drift": guard.summary(),
            "restored_checkpoint": restored,
        }
        outcome["model_kind"] = save_trained(trainer.model, tokenizer, run_dir, cfg.save)
        run_dir.finish(result=outcome, model_dir=str(run_dir.model_dir))
        print(
            f"[rlhf] {algo} finished: {trainer.state.global_step} steps in {seconds:.1f} s, reward "
            f"{outcome['reward_first_logged']} -> {outcome['reward_last_logged']} -> {run_dir.model_dir}",
            flush=True,
        )
        return run_dir
    except BaseException as e:
        run_dir.fail(f"{type(e).__name__}: {e}")
        raise
