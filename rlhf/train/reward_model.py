"""Reward-model training on preference pairs (the reward stage's training step): pairs -> token ids with
the reward model's own tokenizer, one model on TRL's RewardTrainer (Bradley-Terry, with `margin` when
the pairs carry it), and the members of an ensemble.

Inputs longer than max_length are cut from the LEFT (`rlhf.reward.encode_pair`), keeping the responses
being judged — TRL would otherwise drop long rows silently; pairs whose response alone cannot fit are
rejected and reported, the rest that were cut are counted.
"""

from __future__ import annotations

import random

from datasets import Dataset
from transformers import AutoModelForSequenceClassification
from trl import RewardTrainer

from rlhf.models import load_tokenizer, lora_config, resolve_model_path, torch_dtype
from rlhf.reward import encode_pair, response_fits
from rlhf.train.stage import TRLStage


def reward_tokenizer(name: str):
    """The reward model's tokenizer, as TRL's RewardTrainer needs it (an eos token)."""
    tokenizer = load_tokenizer(name)
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token  # encoders (BERT): TRL needs an eos token
    return tokenizer


def tokenize_pairs(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], dict]:
    """Rows -> {chosen_ids, rejected_ids, margin?}; rows whose response cannot fit are rejected."""
    out, rejected, truncated = [], [], 0
    for r in rows:
        if not (
            response_fits(tokenizer, r["chosen"], max_length)
            and response_fits(tokenizer, r["rejected"], max_length)
        ):
            rejected.append(
                {"id": r.get("id"), "reason": f"too long: a response alone exceeds max_length {max_length}"}
            )
            continue
        c, cut_c = encode_pair(tokenizer, r["prompt"], r["chosen"], max_length)
        j, cut_j = encode_pair(tokenizer, r["prompt"], r["rejected"], max_length)
        truncated += cut_c or cut_j
        item = {"chosen_ids": c, "rejected_ids": j}
        if "margin" in r:
            item["margin"] = float(r["margin"])
        out.append(item)
    return out, {
        "rows_truncated_left": truncated,
        "rows_rejected_too_long": len(rejected),
        "rejected_too_long": rejected[:50],
    }


def train_reward_model(
    stage: TRLStage, tokenizer, train: list[dict], eval_pairs=(), callbacks=(), **override
):
    """One reward model (stage.cfg.model, LoRA merged back) trained on tokenized pairs; returns (model,
    trainer). `override` replaces keys rlhf owns in the TRL config (an ensemble member's seed and output
    dir, the swap check's output dir)."""
    model_cfg = stage.cfg.model
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(model_cfg.name), num_labels=1, dtype=torch_dtype(model_cfg.dtype)
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(
        model=model,
        args=stage.args(**override),
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(list(eval_pairs)) if eval_pairs else None,
        processing_class=tokenizer,
        peft_config=lora_config(model_cfg.lora, task_type="SEQ_CLS") if model_cfg.lora else None,
        callbacks=list(callbacks),
    )
    trainer.train()
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model, trainer


def train_members(stage: TRLStage, tokenizer, train: list[dict], size: int) -> list[str]:
    """Members 1..size-1 of an ensemble (member 0 is the model itself): each its own seed (run.seed + k)
    and bootstrap resample of the train pairs. Saved under model/members/<k>; returns their paths
    relative to model/ (for rlhf_reward.json's `ensemble`)."""
    run_dir, base_seed = stage.run_dir, stage.cfg.run.seed
    paths = []
    for k in range(1, size):
        seed = base_seed + k
        rng = random.Random(seed)
        sample = [train[rng.randrange(len(train))] for _ in train]
        run_dir.say(f"reward: ensemble member {k + 1}/{size} (bootstrap resample, seed {seed})")
        member, _ = train_reward_model(
            stage, tokenizer, sample, output_dir=str(run_dir.checkpoints / f"member-{k}"), seed=seed
        )
        member.save_pretrained(run_dir.model_dir / "members" / str(k))
        paths.append(f"members/{k}")
    return paths


def swap_labels(pairs: list[dict]) -> list[dict]:
    """The same tokenized pairs with chosen and rejected exchanged (the reward stage's swap check)."""
    return [{**r, "chosen_ids": r["rejected_ids"], "rejected_ids": r["chosen_ids"]} for r in pairs]
