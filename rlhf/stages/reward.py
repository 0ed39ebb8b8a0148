"""Reward stage: train a reward model on preference pairs, and write its QA report.

    rlhf reward --config configs/reward.yaml [data.train=runs/export-demo/preferences.jsonl ...]

Inputs : preference rows (TRL format or HH-RLHF transcripts; `margin` used when present; optional
         `assessor`, `slice`, `item_id` columns feed the report), a backbone that loads as
         AutoModelForSequenceClassification (the `minilm-l6` encoder alias, or a causal LM with a score head).
Outputs: runs/<name>/model (merged weights + tokenizer + rlhf_reward.json: formatting, max length,
         normalization stats), rm_report.json and rm_report.html, metrics, manifest, COMPLETED.

Choices:
- Pairs are tokenized with the RM's own tokenizer (`rlhf.train.tokenize_pairs`): inputs longer than
  data.max_length are cut from the LEFT, keeping the responses being judged; TRL would otherwise drop
  long rows silently. Rows whose response alone cannot fit are rejected and reported; the rest that were
  cut are counted (rows_truncated_left).
- TRL's RewardTrainer does the Bradley-Terry training (with `margin` when the data has it).
- The held-out rows are scored by `RewardScorer` on the saved model, as every later user scores them;
  their mean and std go into rlhf_reward.json as the normalization statistics.
- The report answers "is this RM good enough?": held-out accuracy with a bootstrap CI, calibration,
  the "longer answer wins" baseline and reward/length correlation, per-assessor and per-slice accuracy,
  the human agreement ceiling, and a swap check — the same training on swapped labels, scored the same
  way, must score below 0.5, which catches pipelines whose accuracy does not depend on the labels at all.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from trl import RewardConfig

from rlhf.config import ConfigError, bounded, documented
from rlhf.data import holdout_split, load_rows, validate_rows
from rlhf.errors import DataError
from rlhf.models import MINILM, ModelConfig
from rlhf.preferences import normalize_preference_row
from rlhf.reward import META_FILE, RewardScorer, accuracy, build_report, ensemble_accuracy, write_html
from rlhf.runs import RunDir, RunSettings
from rlhf.train import (
    TRLStage,
    check_trainer_section,
    reward_tokenizer,
    swap_labels,
    tokenize_pairs,
    train_members,
    train_reward_model,
)

RESERVED = {"max_length": "data.max_length"}  # trainer keys the stage sets itself (beyond output_dir, seed)
META_COLUMNS = ("assessor", "slice", "item_id")


@dataclass
class RewardData:
    train: str = "demo:preferences"
    split: str = "train"
    eval: str | None = None
    eval_fraction: float = bounded(0.1, ge=0, lt=1)
    max_length: int = bounded(
        256, ge=16, help="tokens of prompt + response after formatting; cut from the left beyond"
    )
    as_chat: bool = True


@dataclass
class ReportSettings:
    bootstrap: int = bounded(1000, ge=1)
    bins: int = bounded(10, ge=1)
    swap_check: bool = documented(
        True, help="retrain on swapped labels (doubles training time) and expect accuracy < 0.5"
    )


@dataclass
class RewardStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="reward"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name=MINILM))
    data: RewardData = field(default_factory=RewardData)
    report: ReportSettings = field(default_factory=ReportSettings)
    trainer: dict = documented(default_factory=dict, help="-> trl.RewardConfig(**trainer)")
    # N > 1: N-1 more members, each trained with its own seed on a bootstrap resample of the train pairs;
    # the reward is their mean, their spread the disagreement (active selection, uncertainty)
    ensemble: int = bounded(1, ge=1, le=16)

    def __post_init__(self):
        check_trainer_section(RewardConfig, self.trainer, RESERVED)
        if not self.data.eval and not self.data.eval_fraction:
            raise ConfigError("the QA report needs held-out pairs: set data.eval or data.eval_fraction > 0.")


def normalize(row: dict, as_chat: bool):
    out, reason = normalize_preference_row(row, as_chat=as_chat)
    if out is not None:
        out.update({k: row[k] for k in META_COLUMNS if row.get(k) is not None})
    return out, reason


@dataclass
class Pairs:
    """The stage's data: text rows (scored by RewardScorer, read by the report) and tokenized pairs
    ({chosen_ids, rejected_ids, margin?}, trained on)."""

    rows: list[dict]  # every valid row of data.train (the report's agreement ceiling reads them all)
    eval_rows: list[dict]  # held-out rows, as text
    train: list[dict]  # tokenized train pairs
    eval: list[dict]  # tokenized held-out pairs (the trainer's eval set)
    train_accounting: dict
    eval_accounting: dict


@dataclass
class HeldOut:
    """Rewards of the held-out chosen and rejected responses (an ensemble's: its members' mean)."""

    chosen: list[float]
    rejected: list[float]
    ensemble: dict | None = None  # an ensemble's accuracy and disagreement (ensemble_accuracy)


def prepare_pairs(cfg: RewardStageConfig, tokenizer) -> Pairs:
    """Load and validate the rows, hold some out (data.eval or data.eval_fraction), tokenize both sides."""
    d = cfg.data

    def validated(source: str, what: str):
        return validate_rows(
            load_rows(source, what=what, split=d.split), lambda r: normalize(r, d.as_chat), what=what
        )

    rows, acct = validated(d.train, "data.train")
    if d.eval:
        train_rows, eval_rows = rows, validated(d.eval, "data.eval")[0]
    else:
        train_rows, eval_rows = holdout_split(rows, d.eval_fraction, cfg.run.seed)
    train_tok, train_len = tokenize_pairs(train_rows, tokenizer, d.max_length)
    eval_tok, eval_len = tokenize_pairs(eval_rows, tokenizer, d.max_length)
    if not train_tok:
        raise DataError(
            f"data.train: '{d.train}' leaves no pairs to train on ({acct.rows_in} rows in, "
            f"{len(acct.rejected)} rejected, {0 if d.eval else len(eval_rows)} held out by data.eval_fraction "
            f"{d.eval_fraction}). Add preference pairs, or lower data.eval_fraction."
        )
    train_acct = {
        **acct.summary(),
        **train_len,
        "rows_trained": len(train_tok),
        "rows_held_out": len(eval_rows) if not d.eval else 0,
    }
    slices = Counter(str(r["slice"]) for r in train_rows if r.get("slice") is not None)
    if slices:
        train_acct["rows_by_slice"] = dict(sorted(slices.items()))  # e.g. the loop's rounds
    return Pairs(rows, eval_rows, train_tok, eval_tok, train_acct, {**eval_len, "pairs": len(eval_tok)})


def reward_meta(cfg: RewardStageConfig, tokenizer) -> dict:
    """What rlhf_reward.json says of a model trained here (before members and normalization are added)."""
    return {
        "max_length": cfg.data.max_length,
        "format": "chat" if tokenizer.chat_template else "plain",
        "base": cfg.model.name,
    }


def score_held_out(model_dir: Path, meta: dict, rows: list[dict]) -> HeldOut:
    """Score the held-out rows as every later user of the model does: RewardScorer on the saved model,
    with `meta` standing in for its rlhf_reward.json."""
    scorer = RewardScorer(str(model_dir), meta=meta)
    prompts = [r["prompt"] for r in rows]
    chosen, rejected = [r["chosen"] for r in rows], [r["rejected"] for r in rows]
    held_out = HeldOut(scorer.score(prompts, chosen), scorer.score(prompts, rejected))
    if len(scorer.members) > 1:
        held_out.ensemble = ensemble_accuracy(
            scorer.score_members(prompts, chosen), scorer.score_members(prompts, rejected)
        )
    return held_out


def norm_stats(rewards: list[float]) -> dict:
    """Normalization statistics for rlhf_reward.json: mean and sample std of the held-out rewards."""
    return {
        "mean": float(np.mean(rewards)),
        "std": float(np.std(rewards, ddof=1)),
        "reference": "held-out responses",
        "n": len(rewards),
    }


def swap_check(stage: TRLStage, tokenizer, pairs: Pairs) -> float:
    """Train the same way on swapped labels and score the held-out rows like the model itself (saved in a
    scratch dir inside the run dir, removed after); return the accuracy (should be well below 0.5)."""
    scratch = stage.run_dir.path / "swap_check"
    model, _ = train_reward_model(stage, tokenizer, swap_labels(pairs.train), output_dir=str(scratch))
    model.save_pretrained(scratch / "model")
    tokenizer.save_pretrained(scratch / "model")
    held_out = score_held_out(scratch / "model", reward_meta(stage.cfg, tokenizer), pairs.eval_rows)
    shutil.rmtree(scratch, ignore_errors=True)
    return accuracy(held_out.chosen, held_out.rejected)


def write_report(cfg: RewardStageConfig, run_dir: RunDir, pairs: Pairs, held_out: HeldOut, swapped) -> dict:
    """rm_report.json and rm_report.html from the held-out scores (and the swap check's accuracy)."""
    report = build_report(
        pairs.eval_rows,
        held_out.chosen,
        held_out.rejected,
        rows_all=pairs.rows,
        bootstrap=cfg.report.bootstrap,
        bins=cfg.report.bins,
        seed=cfg.run.seed,
        swapped_accuracy=swapped,
    )
    if held_out.ensemble:
        report["ensemble"] = held_out.ensemble
    (run_dir.path / "rm_report.json").write_text(json.dumps(report, indent=2))
    write_html(report, run_dir.path / "rm_report.html", title=f"Reward model report — {cfg.run.name}")
    return report


def finish(run_dir: RunDir, report: dict, global_step: int) -> None:
    """The manifest's result and declared outputs, and the closing line."""
    result = {
        "eval_accuracy": report["accuracy"]["value"],
        "eval_accuracy_ci95": report["accuracy"]["ci95"],
        "length_baseline": report["length"]["baseline_accuracy"],
        "swap_check": report.get("swap_check"),
        "global_step": global_step,
    }
    if report.get("ensemble"):
        result["ensemble"] = report["ensemble"]
    outputs = {
        "model": run_dir.model_dir,
        "report": run_dir.path / "rm_report.html",
        "report_json": run_dir.path / "rm_report.json",
    }
    run_dir.finish(result=result, outputs=outputs)
    lo, hi = report["accuracy"]["ci95"]
    run_dir.say(
        f"reward finished: held-out accuracy {report['accuracy']['value']:.3f} [{lo:.3f}, {hi:.3f}] "
        f"(longer-wins baseline {report['length']['baseline_accuracy']:.3f}) -> model {run_dir.model_dir}, "
        f"report {run_dir.path / 'rm_report.html'}"
    )


def run(cfg: RewardStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    stage = TRLStage("reward", RewardConfig, cfg, owned={"max_length": cfg.data.max_length})  # fails early
    with stage.open(resume=resume, overwrite=overwrite) as run_dir:
        tokenizer = reward_tokenizer(cfg.model.name)
        pairs = prepare_pairs(cfg, tokenizer)
        stage.record_inputs("data.train", cfg.data.train)
        run_dir.account("reward", {"train": pairs.train_accounting})
        run_dir.update_manifest(data={"train": pairs.train_accounting, "eval": pairs.eval_accounting})
        run_dir.say(
            f"reward: {len(pairs.train)} train pairs, {len(pairs.eval)} eval pairs, "
            f"{pairs.train_accounting['rows_truncated_left']} cut from the left"
        )
        model, trainer = train_reward_model(stage, tokenizer, pairs.train, pairs.eval, [stage.callback])
        model.save_pretrained(run_dir.model_dir)
        tokenizer.save_pretrained(run_dir.model_dir)
        meta = reward_meta(cfg, tokenizer)
        if cfg.ensemble > 1:
            meta["ensemble"] = train_members(stage, tokenizer, pairs.train, cfg.ensemble)
        held_out = score_held_out(run_dir.model_dir, meta, pairs.eval_rows)
        meta["norm"] = norm_stats(held_out.chosen + held_out.rejected)
        (run_dir.model_dir / META_FILE).write_text(json.dumps(meta, indent=2))
        swapped = swap_check(stage, tokenizer, pairs) if cfg.report.swap_check else None
        report = write_report(cfg, run_dir, pairs, held_out, swapped)
        finish(run_dir, report, trainer.state.global_step)
        return run_dir
