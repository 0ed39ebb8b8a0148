"""Claim: `rlhf reward` trains a useful reward model on real human preferences on a laptop CPU.

    .venv/bin/python benchmarks/rm_hh.py [--epochs 2] [--lr 1e-4] [--max-length 128] [--swap-check] [--ensemble 3]

Trains the `minilm-l6` encoder on ../shared/data/hh_harmless_1800.jsonl (Anthropic HH-RLHF harmless-base,
MIT) with a seeded 90/10 split, through the same code path as `rlhf reward`, and prints the held-out
pairwise accuracy with its bootstrap 95 % CI beside the "longer answer wins" baseline. Last line:
`ratio accuracy/length_baseline <x>`. With --ensemble N: the single model (member 0, trained on all pairs
exactly as without an ensemble) and the N-member mean side by side on the same held-out pairs; last line
`ratio accuracy ensemble/single <x>`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh_harmless_1800.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--swap-check", action="store_true")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ensemble", type=int, default=1)
    a = ap.parse_args()
    if not Path(a.data).is_file():
        raise SystemExit(f"{a.data} not found: this benchmark needs the shared HH-RLHF file (--data PATH)")
    from rlhf.config import load_config
    from rlhf.stages.reward import RewardStageConfig, run

    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            RewardStageConfig,
            ROOT / "configs" / "reward.yaml",
            [
                f"run.output_root={out}",
                "run.name=rm-hh",
                f"run.seed={a.seed}",
                f"data.train={a.data}",
                "data.eval_fraction=0.1",
                f"data.max_length={a.max_length}",
                f"report.swap_check={str(a.swap_check).lower()}",
                f"trainer.num_train_epochs={a.epochs}",
                f"trainer.learning_rate={a.lr}",
                f"trainer.per_device_train_batch_size={a.batch}",
                "trainer.logging_steps=20",
                f"ensemble={a.ensemble}",
            ],
        )
        t0 = time.time()
        r = run(cfg)
        report = json.loads((r.path / "rm_report.json").read_text())
        data = r.read_manifest()["data"]
    acc, (lo, hi) = report["accuracy"]["value"], report["accuracy"]["ci95"]
    base = report["length"]["baseline_accuracy"]
    print(
        f"minilm-l6 on HH harmless: {data['train']['rows_trained']} train pairs, {report['pairs']} held-out, "
        f"{data['train']['rows_rejected']} rows rejected, {data['train']['rows_truncated_left']} cut from the left; "
        f"epochs {a.epochs}, lr {a.lr}, max_length {a.max_length}; {time.time() - t0:.0f} s"
    )
    print(
        f"held-out accuracy {acc:.3f} (95 % CI {lo:.3f} - {hi:.3f}); longer-answer-wins baseline {base:.3f}; "
        f"reward/length correlation {report['length']['reward_length_correlation']}; ECE {report['calibration']['ece']:.3f}"
        + (
            f"; swap check {report['swap_check']['swapped_label_accuracy']:.3f}"
            if report.get("swap_check")
            else ""
        )
    )
    ens = report.get("ensemble")
    if ens:
        single = ens["member_accuracy"][0]
        print(
            f"single model {single:.3f} | ensemble of {ens['members']} (mean) {ens['mean_accuracy']:.3f} | "
            f"members {', '.join(f'{x:.3f}' for x in ens['member_accuracy'])} | mean margin spread "
            f"{ens['mean_margin_spread']:.3f}"
        )
        print(f"ratio accuracy ensemble/single {ens['mean_accuracy'] / single:.3f}")
        return
    print(f"ratio accuracy/length_baseline {acc / base:.3f}")


if __name__ == "__main__":
    main()
