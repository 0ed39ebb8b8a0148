"""Claim: `rlhf reward` trains as fast as a plain TRL RewardTrainer script with the same settings.

    .venv/bin/python benchmarks/rm_throughput.py [--steps 15] [--rounds 2]

Both sides: the minilm-l6 encoder, the same preference pairs (HH-RLHF harmless from ../shared if present,
else the demo preferences) formatted as "User: ... / Assistant: ...", max_length 256, batch 16, lr 5e-5,
fp32, the same seed, --steps optimizer steps. rlhf tokenizes itself (cutting from the left); the raw script
lets TRL tokenize (TRL drops over-long pairs instead). Each side runs in a fresh process, alternated;
throughput = tokens in the pairs the trainer consumed / wall time of trainer.train(). Last line:
`ratio rlhf/raw_trl <x>` (goal >= 0.95).
"""

from __future__ import annotations

import time
from pathlib import Path

import alternate

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh_harmless_1800.jsonl"
S = dict(batch=16, max_length=256, lr=5e-5, seed=42)


def source() -> str:
    return str(HH) if HH.is_file() else "demo:preferences"


def consumed_tokens(ds, steps: int) -> int:
    per_pair = sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in ds) / len(ds)
    return int(per_pair * steps * S["batch"])


def run_rlhf(steps: int, out: str) -> dict:
    from rlhf.config import load_config
    from rlhf.stages import reward

    cfg = load_config(
        reward.RewardStageConfig,
        ROOT / "configs" / "reward.yaml",
        [
            f"run.output_root={out}",
            f"data.train={source()}",
            f"data.max_length={S['max_length']}",
            f"trainer.max_steps={steps}",
            f"trainer.per_device_train_batch_size={S['batch']}",
            f"trainer.learning_rate={S['lr']}",
            f"run.seed={S['seed']}",
            "trainer.logging_steps=10",
            "trainer.warmup_steps=0",
            "report.swap_check=false",
        ],
    )
    timings = {}

    class Timed(reward.RewardTrainer):
        def train(self, *args, **kw):
            t0 = time.perf_counter()
            out = super().train(*args, **kw)
            timings["seconds"] = time.perf_counter() - t0
            timings["tokens"] = consumed_tokens(self.train_dataset, steps)
            return out

    reward.RewardTrainer = Timed  # the name the stage module calls: time only train(), like the raw side
    reward.run(cfg)
    return timings


def run_raw(steps: int, out: str) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from rlhf.data import load_rows
    from rlhf.models import MINILM, resolve_model_path
    from rlhf.preferences import normalize_preference_row
    from rlhf.reward import format_pair

    path = resolve_model_path(MINILM)
    tok = AutoTokenizer.from_pretrained(path)
    tok.eos_token = tok.sep_token
    rows = [normalize_preference_row(r)[0] for r in load_rows(source(), what="data").rows]
    rows = [r for r in rows if r is not None]
    ds = Dataset.from_list(
        [
            {
                "chosen": format_pair(tok, r["prompt"], r["chosen"]),
                "rejected": format_pair(tok, r["prompt"], r["rejected"]),
            }
            for r in rows
        ]
    )
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    args = RewardConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=S["batch"],
        learning_rate=S["lr"],
        max_length=S["max_length"],
        seed=S["seed"],
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=10,
        warmup_steps=0,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    t0 = time.perf_counter()
    trainer.train()
    return {"seconds": time.perf_counter() - t0, "tokens": consumed_tokens(trainer.train_dataset, steps)}


def main() -> None:
    alternate.main(__file__, run_rlhf, run_raw, default_steps=15, describe=f"settings {S}, data {source()}")


if __name__ == "__main__":
    main()
