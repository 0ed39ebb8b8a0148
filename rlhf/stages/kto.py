"""KTO stage: optimise the policy on unpaired feedback — single answers judged desirable or undesirable
(thumbs up / down) — with TRL's KTOTrainer.

    rlhf kto --config configs/kto.yaml [trainer.beta=0.1 trainer.desirable_weight=1.3 ...]

Inputs : a policy (alias | directory | hub id; typically runs/sft-demo/model) and unpaired rows (prompt,
         completion, label): `rlhf export format=unpaired` of a binary / Likert project, `rlhf import
         kind=feedback` of production logs (optionally through `rlhf clean`), or TRL KTO rows. Preference
         pairs (TRL, HH-RLHF, an export of pairs) are taken too: each pair is two rows, "<id>:chosen"
         desirable and "<id>:rejected" undesirable.
Outputs: runs/<name>/model (merged weights, or the adapter), checkpoints, metrics.jsonl (rewards and
         log-probs of the desirable and undesirable answers, KL), manifest with the row accounting, the
         desirable / undesirable balance and the weights used, COMPLETED.

Choices:
- The `trainer:` mapping goes to `trl.KTOConfig` (`loss_type: kto | apo_zero_unpaired`, `beta`, ...).
- With LoRA the reference model is the same network with the adapter disabled (TRL's PEFT path): no
  second copy of the weights in memory. Without LoRA, TRL keeps a frozen copy (or precomputed log-probs).
- Precision as for SFT and DPO: with LoRA under bf16 mixed precision the frozen base is held in bf16
  (`rlhf.train.stage`), the adapters and optimizer state in fp32. Batches (and the KL batches) are
  padding-free as DPO's (`data.padding_free`, `rlhf.train.packing`).
- Desirable / undesirable weights: when `trainer:` sets neither, they come from the data's balance (TRL's
  guidance, from the KTO paper: desirable_weight x n_desirable : undesirable_weight x n_undesirable within
  1:1 .. 4:3). Where 1 and 1 already meet it they stay; otherwise the minority class's weight makes the
  ratio 7:6, the middle of the range, and the majority's stays 1. Set either in `trainer:` and both are
  TRL's as given.
- Rows are validated like imports and their token length (prompt + completion, after the chat template)
  is checked against data.max_length: over-long rows are rejected and reported by id (TRL would cut them).
- TRL estimates KTO's KL term from each row's batch neighbours and so reads the rows in order: they are
  shuffled once with run.seed, so that a file sorted by label still mixes both kinds in every batch.
- Drift guard (`drift:`) as for DPO: sampled training prompts' KL to the reference and response length.
Assumptions: both labels occur in the training rows (KTO needs desirable and undesirable examples); the
per-device batch holds at least 2 rows (TRL's KL estimate needs a neighbour).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from datasets import Dataset
from trl import KTOConfig, KTOTrainer

from rlhf.config import ConfigError, bounded, documented
from rlhf.data import holdout_split
from rlhf.errors import DataError
from rlhf.models import ModelConfig, load_tokenizer, lora_config
from rlhf.preferences import import_unpaired
from rlhf.runs import RunDir, RunSettings
from rlhf.store import balance
from rlhf.train import DriftSettings, TRLStage, check_trainer_section, probe_drift

RESERVED = {"max_length": "data.max_length"}  # trainer keys the stage sets itself (beyond output_dir, seed)
COLUMNS = ("prompt", "completion", "label")
WEIGHT_KEYS = ("desirable_weight", "undesirable_weight")
RATIO = 7 / 6  # desirable_weight * n_desirable / (undesirable_weight * n_undesirable): mid of [1, 4/3]


@dataclass
class KTOData:
    train: str = documented(
        "demo:preferences",
        help="unpaired rows (prompt, completion, label), an export/import run dir; pairs become two rows",
    )
    split: str = "train"
    eval: str | None = None
    eval_fraction: float = bounded(0.0, ge=0, lt=1, help="share of the train rows held out for eval (seeded)")
    max_length: int = bounded(512, ge=1, help="prompt + completion, tokens after the chat template")
    as_chat: bool = True
    padding_free: bool | None = documented(
        None,
        help="a batch's sequences (and its KL batch) in one row, no padding computed (rlhf.train.packing); null: "
        "on where the model's attention is known plain causal, false: padded as TRL does",
    )


@dataclass
class KTOStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="kto"))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: KTOData = field(default_factory=KTOData)
    save: Literal["merged", "adapter"] = "merged"
    drift: DriftSettings = field(default_factory=DriftSettings)
    trainer: dict = documented(default_factory=dict, help="-> trl.KTOConfig(**trainer)")

    def __post_init__(self):
        check_trainer_section(KTOConfig, self.trainer, RESERVED)
        t = self.trainer
        if t.get("loss_type", "kto") == "kto" and t.get("per_device_train_batch_size", 8) < 2:
            raise ConfigError(
                "'trainer.per_device_train_batch_size' must be at least 2 with loss_type kto: its KL term pairs "
                "each row with a neighbour in the batch (or use loss_type: apo_zero_unpaired)."
            )
        if (
            t.get("loss_type", "kto") == "kto"
            and t.get("train_sampling_strategy", "sequential") != "sequential"
        ):
            raise ConfigError(
                "'trainer.train_sampling_strategy' must be sequential with loss_type kto (TRL pairs each row with "
                "its neighbours in order; rlhf shuffles the rows once with run.seed instead)."
            )


def balance_weights(desirable: int, undesirable: int) -> dict[str, float]:
    """KTO's class weights from the balance: 1 and 1 where n_desirable : n_undesirable is within TRL's / the
    paper's 1:1 .. 4:3; otherwise the minority class weighted so that desirable_weight x n_desirable :
    undesirable_weight x n_undesirable = 7:6 (the middle of the range), the majority's weight 1. Pure."""
    if undesirable <= desirable <= 4 / 3 * undesirable:
        return {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    if desirable < undesirable:
        return {"desirable_weight": round(RATIO * undesirable / desirable, 3), "undesirable_weight": 1.0}
    return {"desirable_weight": 1.0, "undesirable_weight": round(desirable / (RATIO * undesirable), 3)}


def prepare_rows(cfg: KTOStageConfig, tokenizer) -> tuple[list[dict], list[dict], dict]:
    d = cfg.data

    def read(source: str, what: str):
        return import_unpaired(
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
    desirable = sum(r["label"] for r in rows)
    report["train"]["balance"] = balance(desirable, len(rows) - desirable)
    if desirable in (0, len(rows)):
        raise DataError(
            f"data.train: all {len(rows)} training rows are {'desirable' if desirable else 'undesirable'}; KTO "
            "needs both desirable and undesirable answers. Add rows of the other label (e.g. export a binary "
            "project with both thumbs, or check the feedback lists of `rlhf import`)."
        )
    keep = lambda rs: [{k: r[k] for k in COLUMNS} for r in rs]  # noqa: E731
    rows = keep(rows)
    random.Random(cfg.run.seed).shuffle(rows)  # TRL reads KTO rows in order (the KL term pairs neighbours)
    return rows, keep(eval_rows), report


def class_weights(cfg: KTOStageConfig, balance_of_train: dict) -> tuple[dict, dict]:
    """(the weights to pass to KTOConfig — empty when trainer: sets one —, what the manifest records)."""
    given = {k: cfg.trainer[k] for k in WEIGHT_KEYS if k in cfg.trainer}
    if given:
        return {}, {**{k: 1.0 for k in WEIGHT_KEYS}, **given, "from": "trainer"}
    weights = balance_weights(balance_of_train["desirable"], balance_of_train["undesirable"])
    return weights, {**weights, "from": "the data's balance"}


def run(cfg: KTOStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    stage = TRLStage("kto", KTOConfig, cfg, owned={"max_length": cfg.data.max_length})  # fails early
    with stage.open(resume=resume, overwrite=overwrite) as run_dir:
        tokenizer = load_tokenizer(cfg.model.name)
        train_rows, eval_rows, report = prepare_rows(cfg, tokenizer)
        stage.record_inputs("data.train", cfg.data.train)
        run_dir.account("kto", report)
        weights, weights_record = class_weights(cfg, report["train"]["balance"])
        args = stage.args(has_eval=bool(eval_rows), **weights)
        drift = probe_drift(
            cfg.drift, run_dir, tokenizer, train_rows, lambda: trainer.ref_model, seed=cfg.run.seed
        )
        trainer = KTOTrainer(
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
            "weights": weights_record,
            "balance": report["train"]["balance"],
            "last_logged": {k: v for k, v in logged if k.startswith(("rewards/", "logps/", "kl", "loss"))},
            "drift": {**drift.guard.summary(), "restored_checkpoint": trained.restored},
        }
        b = outcome["balance"]
        summary = (
            f"train loss {outcome['train_loss']:.4f} on {b['desirable']} desirable / {b['undesirable']} "
            f"undesirable rows (weights {weights_record['desirable_weight']:g} / "
            f"{weights_record['undesirable_weight']:g})"
        )
        stage.finish(trainer, tokenizer, trained, outcome, save=cfg.save, summary=summary)
        return run_dir
