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
- Drift guard (`drift:`, rlhf/train/drift.py): at the start and at each checkpoint save (or every
  `drift.every_steps` steps) a few training prompts are sampled and the KL to the reference and the mean response length logged; alarms warn or stop, and a
  stop exports the newest checkpoint saved within bounds.
- Rows are validated like imports and their token length (prompt + longer response, after the chat
  template) is checked against data.max_length: over-long rows are rejected and reported by id, not
  truncated silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from rlhf.config import bounded, documented
from rlhf.data import holdout_split, source_path
from rlhf.distributed import zero3_sharded
from rlhf.models import ModelConfig, load_causal_lm, load_tokenizer, lora_config, resolve_model_path
from rlhf.preferences import import_preferences
from rlhf.runs import RunDir, RunSettings
from rlhf.train import (
    DriftCallback,
    DriftGuard,
    DriftSettings,
    RunDirCallback,
    build_trl_config,
    check_reserved,
    check_trainer,
    point_tensorboard_at,
    sample_drift,
    save_trained,
    train,
)

RESERVED = {"output_dir": "run.output_root and run.name", "seed": "run.seed", "max_length": "data.max_length"}
COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class DPOData:
    train: str = documented(
        "demo:preferences", help="TRL rows, HH-RLHF transcripts, an export/import run dir"
    )
    split: str = "train"
    eval: str | None = None
    eval_fraction: float = bounded(0.0, ge=0, lt=1, help="share of the train rows held out for eval (seeded)")
    max_length: int = bounded(512, ge=1, help="prompt + longer response, tokens after the chat template")
    as_chat: bool = True


@dataclass
class DPOStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="dpo"))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DPOData = field(default_factory=DPOData)
    save: Literal["merged", "adapter"] = "merged"
    drift: DriftSettings = field(default_factory=DriftSettings)
    trainer: dict = documented(default_factory=dict, help="-> trl.DPOConfig(**trainer)")

    def __post_init__(self):
        check_reserved(self.trainer, RESERVED)
        check_trainer(DPOConfig, self.trainer)


def prepare_rows(cfg: DPOStageConfig, tokenizer) -> tuple[list[dict], list[dict], dict]:
    d = cfg.data

    def read(source: str, what: str):
        return import_preferences(
            source, what=what, max_length=d.max_length, tokenizer=tokenizer, as_chat=d.as_chat, split=d.split
        )

    rows, acct = read(d.train, "data.train")
    report = {"train": acct.summary()}
    eval_rows: list[dict] = []
    if d.eval:
        eval_rows, eval_acct = read(d.eval, "data.eval")
        report["eval"] = eval_acct.summary()
    elif d.eval_fraction:
        rows, eval_rows = holdout_split(rows, d.eval_fraction, cfg.run.seed)
        report["train"]["rows_held_out_for_eval"] = len(eval_rows)
    report["train"]["rows_trained"] = len(rows)
    keep = lambda rs: [{k: r[k] for k in COLUMNS} for r in rs]  # noqa: E731
    return keep(rows), keep(eval_rows), report


def training_args(cfg: DPOStageConfig, *, has_eval: bool) -> DPOConfig:
    owned = {
        "output_dir": str(RunDir.at(cfg.run).checkpoints),
        "seed": cfg.run.seed,
        "max_length": cfg.data.max_length,
    }
    if has_eval and "eval_strategy" not in cfg.trainer:
        owned["eval_strategy"] = "epoch"
    return build_trl_config(DPOConfig, cfg.trainer, owned)


def run(cfg: DPOStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    training_args(cfg, has_eval=False)  # bad trainer keys fail before anything is written
    with RunDir.prepare(cfg.run, "dpo", cfg, resume=resume, overwrite=overwrite) as run_dir:
        tokenizer = load_tokenizer(cfg.model.name)
        train_rows, eval_rows, report = prepare_rows(cfg, tokenizer)
        run_dir.record_input("data.train", cfg.data.train, source_path(cfg.data.train))
        run_dir.record_input("model", cfg.model.name, resolve_model_path(cfg.model.name))
        run_dir.account("dpo", report)
        args = training_args(cfg, has_eval=bool(eval_rows))
        point_tensorboard_at(run_dir.path / "tensorboard")
        model = load_causal_lm(cfg.model.name, cfg.model.dtype)
        callback = RunDirCallback(run_dir)
        guard = DriftGuard(cfg.drift)
        probe = [r["prompt"] for r in train_rows[:: max(1, len(train_rows) // cfg.drift.num_prompts)]]
        probe = probe[: cfg.drift.num_prompts]
        drift = DriftCallback(
            run_dir,
            guard,
            measure=lambda m: sample_drift(
                m, tokenizer, probe, cfg.drift.max_new_tokens, trainer.ref_model, synced_gpus=zero3_sharded()
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
        trained = train(trainer, run_dir, resume=resume, drift=drift)
        result, seconds = trained.result, trained.seconds
        last = {k: v for k, v in callback.last_logs.items() if k.startswith(("rewards/", "logps/", "loss"))}
        reference = (
            "adapter disabled (no copy)"
            if cfg.model.lora
            else ("precomputed log-probs" if args.precompute_ref_log_probs else "frozen copy")
        )
        outcome = {
            "global_step": trainer.state.global_step,
            "train_loss": result.training_loss,
            "train_seconds": round(seconds, 2),
            "reference": reference,
            "last_logged": last,
            "drift": {**guard.summary(), "restored_checkpoint": trained.restored},
        }
        outcome["model_kind"] = save_trained(trainer.model, tokenizer, run_dir, cfg.save)
        run_dir.finish(result=outcome, outputs={"model": run_dir.model_dir})
        run_dir.say(
            f"dpo finished: {trainer.state.global_step} steps in {seconds:.0f} s, train loss "
            f"{result.training_loss:.4f} -> model {run_dir.model_dir}"
        )
        return run_dir
