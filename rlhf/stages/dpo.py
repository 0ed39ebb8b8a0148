"""DPO stage: optimise the policy directly on preference pairs (TRL's DPOTrainer and its loss family).

    rlhf dpo --config configs/dpo.yaml [trainer.loss_type=ipo trainer.beta=0.1 ...]

Inputs : a policy (alias | directory | hub id; typically runs/sft-demo/model) and preference rows (TRL
         format, HH-RLHF transcripts, or `rlhf export` output).
Outputs: runs/<name>/model (merged weights, or the adapter), checkpoints, metrics.jsonl (reward margins,
         accuracies, chosen/rejected log-probs), manifest with the row accounting, COMPLETED.

Choices:
- The `trainer:` mapping goes to `trl.DPOConfig`: every TRL loss (`loss_type: sigmoid | ipo | hinge |
  robust | ...`, also lists with `loss_weights`), `beta`, `precompute_ref_log_probs`, ... work as in TRL.
- With LoRA the reference model is the same network with the adapter disabled (TRL's PEFT path): no
  second copy of the weights in memory. Without LoRA, TRL keeps a frozen copy (or precomputed log-probs).
- Drift guard (`drift:`, rlhf/drift.py): at the start and at each checkpoint save (or every
  `drift.every_steps` steps) a few training prompts are sampled and the KL to the reference and the mean response length logged; alarms warn or stop, and a
  stop exports the newest checkpoint saved within bounds.
- Rows are validated like imports and their token length (prompt + longer response, after the chat
  template) is checked against data.max_length: over-long rows are rejected and reported by id, not
  truncated silently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rlhf.config import ConfigError
from rlhf.drift import DriftSettings
from rlhf.models import ModelConfig
from rlhf.runs import RunDir, RunSettings
from rlhf.trainer_args import (
    build_trl_config,
    check_reserved,
    point_tensorboard_at,
    save_trained,
    zero3_sharded,
)

RESERVED = {"output_dir": "run.output_root and run.name", "seed": "run.seed", "max_length": "data.max_length"}


@dataclass
class DPOData:
    train: str = "demo:preferences"
    split: str = "train"
    eval: str | None = None
    eval_fraction: float = 0.0
    max_length: int = 512  # prompt + longer response, tokens after the chat template
    as_chat: bool = True

    def __post_init__(self):
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"'data.eval_fraction' must be in [0, 1), got {self.eval_fraction}.")


@dataclass
class DPOStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="dpo"))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DPOData = field(default_factory=DPOData)
    save: str = "merged"  # merged | adapter (LoRA)
    drift: DriftSettings = field(default_factory=DriftSettings)
    trainer: dict = field(default_factory=dict)  # -> trl.DPOConfig(**trainer)

    def __post_init__(self):
        check_reserved(self.trainer, RESERVED)
        if self.save not in ("merged", "adapter"):
            raise ConfigError(f"'save' must be one of merged, adapter; got {self.save!r}.")


def prepare_rows(cfg: DPOStageConfig, tokenizer) -> tuple[list[dict], list[dict], dict]:
    from rlhf.data import holdout_split
    from rlhf.preferences import import_preferences

    d = cfg.data
    keep = ("prompt", "chosen", "rejected")
    rows, acct = import_preferences(
        d.train,
        what="data.train",
        max_length=d.max_length,
        tokenizer=tokenizer,
        as_chat=d.as_chat,
        split=d.split,
    )
    report = {"train": acct.summary()}
    if d.eval:
        eval_rows, eval_acct = import_preferences(
            d.eval,
            what="data.eval",
            max_length=d.max_length,
            tokenizer=tokenizer,
            as_chat=d.as_chat,
            split=d.split,
        )
        report["eval"] = eval_acct.summary()
    elif d.eval_fraction:
        rows, eval_rows = holdout_split(rows, d.eval_fraction, cfg.run.seed)
        report["train"]["rows_held_out_for_eval"] = len(eval_rows)
    else:
        eval_rows = []
    report["train"]["rows_trained"] = len(rows)
    return [{k: r[k] for k in keep} for r in rows], [{k: r[k] for k in keep} for r in eval_rows], report


def run(cfg: DPOStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from rlhf.callbacks import DriftCallback, RunDirCallback, restore_best
    from rlhf.drift import DriftGuard, sample_drift
    from rlhf.models import load_causal_lm, load_tokenizer, lora_config, resolve_model_path
    from rlhf.stages.sft import load_path

    run_dir = RunDir.prepare(cfg.run, "dpo", cfg, resume=resume, overwrite=overwrite)
    try:
        owned = {
            "output_dir": str(run_dir.checkpoints),
            "seed": cfg.run.seed,
            "max_length": cfg.data.max_length,
        }
        build_trl_config(DPOConfig, cfg.trainer, owned)  # bad trainer keys fail before any loading
        tokenizer = load_tokenizer(cfg.model.name)
        train_rows, eval_rows, report = prepare_rows(cfg, tokenizer)
        run_dir.record_input("data.train", cfg.data.train, load_path(cfg.data.train))
        run_dir.record_input("model", cfg.model.name, resolve_model_path(cfg.model.name))
        run_dir.update_manifest(data=report)
        t = report["train"]
        print(
            f"[rlhf] dpo data: {t['rows_in']} rows in, {t['rows_trained']} trained, {t['rows_rejected']} rejected "
            f"{t['rejected_by_reason'] or ''}",
            flush=True,
        )
        if eval_rows and "eval_strategy" not in cfg.trainer:
            owned["eval_strategy"] = "epoch"
        args = build_trl_config(DPOConfig, cfg.trainer, owned)
        point_tensorboard_at(run_dir.path / "tensorboard")
        model = load_causal_lm(cfg.model.name, cfg.model.dtype)
        callback = RunDirCallback(run_dir)
        guard = DriftGuard(cfg.drift)
        probe = [r["prompt"] for r in train_rows[:: max(1, len(train_rows) // cfg.drift.num_prompts)]]
        drift = DriftCallback(
            run_dir,
            guard,
            measure=lambda m: sample_drift(
                m,
                tokenizer,
                probe[: cfg.drift.num_prompts],
                cfg.drift.max_new_tokens,
                trainer.ref_model,
                synced_gpus=zero3_sharded(),
            ),
            every_steps=cfg.drift.every_steps,
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=lora_config(cfg.model.lora) if cfg.model.lora else None,
            callbacks=[callback, drift],
        )
        checkpoint = run_dir.resume_point(resume)
        drift.resume_from(checkpoint)
        t0 = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=checkpoint)
        seconds = time.perf_counter() - t0
        restored = restore_best(trainer.model, run_dir, guard) if guard.should_stop else None
        last = {k: v for k, v in callback.last_logs.items() if k.startswith(("rewards/", "logps/", "loss"))}
        outcome = {
            "global_step": trainer.state.global_step,
            "train_loss": result.training_loss,
            "train_seconds": round(seconds, 2),
            "reference": "adapter disabled (no copy)"
            if cfg.model.lora
            else ("precomputed log-probs" if args.precompute_ref_log_probs else "frozen copy"),
            "last_logged": last,
            "drift": {**guard.summary(), "restored_checkpoint": restored},
        }
        outcome["model_kind"] = save_trained(trainer.model, tokenizer, run_dir, cfg.save)
        run_dir.finish(result=outcome, model_dir=str(run_dir.model_dir))
        print(
            f"[rlhf] dpo finished: {trainer.state.global_step} steps in {seconds:.1f} s -> {run_dir.model_dir}",
            flush=True,
        )
        return run_dir
    except BaseException as e:
        run_dir.fail(f"{type(e).__name__}: {e}")
        raise
