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
- Throughput: TRL 1.16 has switched its padding-free DPO off; rlhf's (`data.padding_free`, on where the
  model allows: `rlhf.train.packing`) runs a batch's chosen and rejected sequences in one row with no
  padding. Where batches are padded, `data.group_by_length` draws pairs of similar length (demo pairs,
  batch 4: 79 % of the positions are tokens rather than 66 %). With LoRA under bf16 mixed precision the frozen base is held in bf16
  (`rlhf.train.stage`); the reference is the adapter-off pass of the same batch (TRL's PEFT path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from datasets import Dataset
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import DPOConfig, DPOTrainer

from rlhf.config import bounded, documented
from rlhf.data import holdout_split
from rlhf.models import ModelConfig, load_tokenizer, lora_config
from rlhf.preferences import import_preferences
from rlhf.runs import RunDir, RunSettings
from rlhf.train import DriftSettings, TRLStage, check_trainer_section, probe_drift

# trainer keys the stage sets itself (beyond output_dir, seed); TRL 1.16's padding-free DPO is switched off
RESERVED = {"max_length": "data.max_length", "padding_free": "data.padding_free"}
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
    padding_free: bool | None = documented(
        None,
        help="a batch's sequences in one row, no padding computed (rlhf.train.packing); null: on where the model's "
        "attention is known plain causal (Llama, Mistral, Qwen2/3, OLMo2), false: padded as TRL does",
    )
    group_by_length: bool = documented(
        False,
        help="batches of pairs of similar length (HF's LengthGroupedSampler: random mega-batches, sorted within): "
        "less padding where batches are padded (data.padding_free false or not possible)",
    )


@dataclass
class DPOStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="dpo"))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DPOData = field(default_factory=DPOData)
    save: Literal["merged", "adapter"] = "merged"
    drift: DriftSettings = field(default_factory=DriftSettings)
    trainer: dict = documented(default_factory=dict, help="-> trl.DPOConfig(**trainer)")

    def __post_init__(self):
        check_trainer_section(DPOConfig, self.trainer, RESERVED)


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


def length_grouped(trainer_cls):
    """`trainer_cls` drawing its training batches with HF's LengthGroupedSampler on the pairs' lengths (prompt +
    longer response, tokenized by TRL): mega-batches of 50 batches drawn at random, sorted by length within,
    so a batch pads to a length its rows share."""

    class LengthGrouped(trainer_cls):
        def _get_train_sampler(self, train_dataset=None):
            data = self.train_dataset if train_dataset is None else train_dataset
            lengths = [
                len(p) + max(len(c), len(r))
                for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True)
            ]
            size = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedSampler(size, lengths=lengths)

    return LengthGrouped


def run(cfg: DPOStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    stage = TRLStage("dpo", DPOConfig, cfg, owned={"max_length": cfg.data.max_length})  # fails early
    with stage.open(resume=resume, overwrite=overwrite) as run_dir:
        tokenizer = load_tokenizer(cfg.model.name)
        train_rows, eval_rows, report = prepare_rows(cfg, tokenizer)
        stage.record_inputs("data.train", cfg.data.train)
        run_dir.account("dpo", report)
        args = stage.args(has_eval=bool(eval_rows))
        drift = probe_drift(
            cfg.drift, run_dir, tokenizer, train_rows, lambda: trainer.ref_model, seed=cfg.run.seed
        )
        trainer_cls = length_grouped(DPOTrainer) if cfg.data.group_by_length else DPOTrainer
        trainer = trainer_cls(
            model=stage.load_model(),
            ref_model=None,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=lora_config(cfg.model.lora) if cfg.model.lora else None,
            callbacks=[stage.callback, drift],
        )
        packed = stage.pack_pairs(trainer, cfg.data.padding_free)
        trained = stage.train(trainer, resume=resume, drift=drift)
        logged = stage.callback.last_logs.items()
        reference = (
            "adapter disabled (no copy)"
            if cfg.model.lora
            else ("precomputed log-probs" if args.precompute_ref_log_probs else "frozen copy")
        )
        outcome = {
            **trained.outcome(),
            "reference": reference,
            "padding_free": {"on": packed is not None, "forwards_packed": packed.calls if packed else 0},
            "last_logged": {k: v for k, v in logged if k.startswith(("rewards/", "logps/", "loss"))},
            "drift": {**drift.guard.summary(), "restored_checkpoint": trained.restored},
        }
        summary = f"train loss {outcome['train_loss']:.4f}"
        stage.finish(trainer, tokenizer, trained, outcome, save=cfg.save, summary=summary)
        return run_dir
