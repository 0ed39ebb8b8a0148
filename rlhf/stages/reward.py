"""Reward stage: train a reward model on preference pairs, and write its QA report.

    rlhf reward --config configs/reward.yaml [data.train=runs/export-demo/preferences.jsonl ...]

Inputs : preference rows (TRL format or HH-RLHF transcripts; `margin` used when present; optional
         `assessor`, `slice`, `item_id` columns feed the report), a backbone that loads as
         AutoModelForSequenceClassification (the `minilm-l6` encoder alias, or a causal LM with a score head).
Outputs: runs/<name>/model (merged weights + tokenizer + rlhf_reward.json: formatting, max length,
         normalization stats), rm_report.json and rm_report.html, metrics, manifest, COMPLETED.

Choices:
- Pairs are tokenized here, with the RM's own tokenizer (`rlhf.reward.scorer`): inputs longer than
  data.max_length are cut from the LEFT, keeping the responses being judged; TRL would otherwise drop
  long rows silently. Rows whose response alone cannot fit are rejected and reported; the rest that were
  cut are counted (rows_truncated).
- TRL's RewardTrainer does the Bradley-Terry training (with `margin` when the data has it).
- The report answers "is this RM good enough?": held-out accuracy with a bootstrap CI, calibration,
  the "longer answer wins" baseline and reward/length correlation, per-assessor and per-slice accuracy,
  the human agreement ceiling, and a swap check — the same training on swapped labels must score below
  0.5, which catches pipelines whose accuracy does not depend on the labels at all.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification
from trl import RewardConfig, RewardTrainer

from rlhf.config import ConfigError, bounded, documented
from rlhf.data import holdout_split, load_rows, source_path, validate_rows
from rlhf.models import MINILM, ModelConfig, load_tokenizer, lora_config, resolve_model_path, torch_dtype
from rlhf.preferences import normalize_preference_row
from rlhf.reward import (
    META_FILE,
    RewardScorer,
    accuracy,
    build_report,
    encode_pair,
    ensemble_accuracy,
    response_fits,
    write_html,
)
from rlhf.runs import RunDir, RunSettings
from rlhf.train import RunDirCallback, build_trl_config, check_reserved, check_trainer, point_tensorboard_at

RESERVED = {"output_dir": "run.output_root and run.name", "seed": "run.seed", "max_length": "data.max_length"}
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
        check_reserved(self.trainer, RESERVED)
        check_trainer(RewardConfig, self.trainer)
        if not self.data.eval and not self.data.eval_fraction:
            raise ConfigError("the QA report needs held-out pairs: set data.eval or data.eval_fraction > 0.")


def normalize(row: dict, as_chat: bool):
    out, reason = normalize_preference_row(row, as_chat=as_chat)
    if out is not None:
        out.update({k: row[k] for k in META_COLUMNS if row.get(k) is not None})
    return out, reason


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


def train_model(
    cfg: RewardStageConfig,
    tokenizer,
    train: list[dict],
    eval_rows: list[dict],
    output_dir: str,
    callbacks=(),
    *,
    seed: int | None = None,
):
    args = build_trl_config(
        RewardConfig,
        cfg.trainer,
        {
            "output_dir": output_dir,
            "seed": cfg.run.seed if seed is None else seed,
            "max_length": cfg.data.max_length,
        },
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(cfg.model.name), num_labels=1, dtype=torch_dtype(cfg.model.dtype)
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(cfg.model.lora, task_type="SEQ_CLS") if cfg.model.lora else None,
        callbacks=list(callbacks),
    )
    trainer.train()
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model, trainer


def train_members(cfg: RewardStageConfig, tokenizer, train_tok: list[dict], run_dir: RunDir) -> list[str]:
    """Members 1..N-1 of an ensemble (member 0 is the model itself): each its own seed and bootstrap
    resample. Saved under model/members/<k>; returns their paths relative to model/."""
    paths = []
    for k in range(1, cfg.ensemble):
        rng = random.Random(cfg.run.seed + k)
        sample = [train_tok[rng.randrange(len(train_tok))] for _ in train_tok]
        run_dir.say(
            f"reward: ensemble member {k + 1}/{cfg.ensemble} (bootstrap resample, seed {cfg.run.seed + k})"
        )
        member, _ = train_model(
            cfg, tokenizer, sample, [], str(run_dir.checkpoints / f"member-{k}"), seed=cfg.run.seed + k
        )
        member.save_pretrained(run_dir.model_dir / "members" / str(k))
        paths.append(f"members/{k}")
    return paths


def run(cfg: RewardStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    owned = {
        "output_dir": str(RunDir.at(cfg.run).checkpoints),
        "seed": cfg.run.seed,
        "max_length": cfg.data.max_length,
    }
    build_trl_config(RewardConfig, cfg.trainer, owned)  # bad trainer keys fail before anything is written
    with RunDir.prepare(cfg.run, "reward", cfg, resume=resume, overwrite=overwrite) as run_dir:
        d = cfg.data
        tokenizer = load_tokenizer(cfg.model.name)
        if tokenizer.eos_token is None and tokenizer.sep_token is not None:
            tokenizer.eos_token = tokenizer.sep_token  # encoders (BERT): TRL needs an eos token

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
        train_acct = {
            **acct.summary(),
            **train_len,
            "rows_trained": len(train_tok),
            "rows_held_out": len(eval_rows) if not d.eval else 0,
        }
        run_dir.record_input("data.train", d.train, source_path(d.train))
        run_dir.record_input("model", cfg.model.name, resolve_model_path(cfg.model.name))
        run_dir.account("reward", {"train": train_acct})
        run_dir.update_manifest(data={"train": train_acct, "eval": {**eval_len, "pairs": len(eval_tok)}})
        run_dir.say(
            f"reward: {len(train_tok)} train pairs, {len(eval_tok)} eval pairs, "
            f"{train_len['rows_truncated_left']} cut from the left"
        )
        point_tensorboard_at(run_dir.path / "tensorboard")
        model, trainer = train_model(
            cfg, tokenizer, train_tok, eval_tok, str(run_dir.checkpoints), [RunDirCallback(run_dir)]
        )
        model.save_pretrained(run_dir.model_dir)
        tokenizer.save_pretrained(run_dir.model_dir)
        meta = {
            "max_length": d.max_length,
            "format": "chat" if tokenizer.chat_template else "plain",
            "base": cfg.model.name,
        }
        if cfg.ensemble > 1:
            meta["ensemble"] = train_members(cfg, tokenizer, train_tok, run_dir)
        (run_dir.model_dir / META_FILE).write_text(json.dumps(meta, indent=2))
        scorer = RewardScorer(str(run_dir.model_dir))
        r_c = scorer.score([r["prompt"] for r in eval_rows], [r["chosen"] for r in eval_rows])
        r_r = scorer.score([r["prompt"] for r in eval_rows], [r["rejected"] for r in eval_rows])
        ensemble = None
        if cfg.ensemble > 1:
            prompts = [r["prompt"] for r in eval_rows]
            ensemble = ensemble_accuracy(
                scorer.score_members(prompts, [r["chosen"] for r in eval_rows]),
                scorer.score_members(prompts, [r["rejected"] for r in eval_rows]),
            )
        all_r = r_c + r_r
        mean = sum(all_r) / len(all_r)
        std = (sum((x - mean) ** 2 for x in all_r) / max(1, len(all_r) - 1)) ** 0.5
        meta["norm"] = {"mean": mean, "std": std, "reference": "held-out responses", "n": len(all_r)}
        (run_dir.model_dir / META_FILE).write_text(json.dumps(meta, indent=2))
        swapped = swap_check(cfg, tokenizer, train_tok, eval_tok, run_dir) if cfg.report.swap_check else None
        report = build_report(
            eval_rows,
            r_c,
            r_r,
            rows_all=rows,
            bootstrap=cfg.report.bootstrap,
            bins=cfg.report.bins,
            seed=cfg.run.seed,
            swapped_accuracy=swapped,
        )
        if ensemble:
            report["ensemble"] = ensemble
        (run_dir.path / "rm_report.json").write_text(json.dumps(report, indent=2))
        write_html(report, run_dir.path / "rm_report.html", title=f"Reward model report — {cfg.run.name}")
        result = {
            "eval_accuracy": report["accuracy"]["value"],
            "eval_accuracy_ci95": report["accuracy"]["ci95"],
            "length_baseline": report["length"]["baseline_accuracy"],
            "swap_check": report.get("swap_check"),
            "global_step": trainer.state.global_step,
        }
        if ensemble:
            result["ensemble"] = ensemble
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
        return run_dir


def swap_check(
    cfg: RewardStageConfig, tokenizer, train_tok: list[dict], eval_tok: list[dict], run_dir: RunDir
) -> float:
    """Train the same way on swapped labels; return its held-out accuracy (should be well below 0.5)."""
    swapped = [{**r, "chosen_ids": r["rejected_ids"], "rejected_ids": r["chosen_ids"]} for r in train_tok]
    model, _ = train_model(cfg, tokenizer, swapped, [], str(run_dir.path / "swap_check"))
    model.eval()

    def rewards(seqs):
        out = []
        for s in seqs:
            with torch.inference_mode():
                out.append(model(input_ids=torch.tensor([s], device=model.device)).logits[0, 0].item())
        return out

    rc, rr = rewards([r["chosen_ids"] for r in eval_tok]), rewards([r["rejected_ids"] for r in eval_tok])
    shutil.rmtree(run_dir.path / "swap_check", ignore_errors=True)
    return accuracy(rc, rr)
