"""Does the loop make a better model? On the shared HH-RLHF harmless file with a seeded held-out split:
SFT on the chosen answers -> DPO (LoRA) on the training pairs -> `rlhf compare` of start vs trained with
the held-out pairs (human agreement of each policy's implicit reward against the base model) and an RM
trained on the training pairs (win rate of trained over start; KL to the base model). Every step is a normal stage run (the same entry points the loop uses).

    .venv/bin/python benchmarks/loop_hh.py [--pairs 1800] [--held-out 200] [--sft-steps 60] [--dpo-steps 100]

Prints the held-out agreement of start and trained, the RM win rate of trained over start and the KL;
last line `ratio agreement trained/start <x>`.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from rlhf.preferences import normalize_preference_row

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_harmless_1800.jsonl"


def stage(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rlhf", *args, "--overwrite"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--out", default="runs/bench-loop-hh")
    ap.add_argument("--pairs", type=int, default=1800)
    ap.add_argument("--held-out", type=int, default=200)
    ap.add_argument("--sft-steps", type=int, default=60)
    ap.add_argument("--dpo-steps", type=int, default=100)
    ap.add_argument("--dpo-lr", type=float, default=1e-4)
    ap.add_argument(
        "--max-length", type=int, default=512, help="SFT truncates to it; DPO rejects longer rows"
    )
    ap.add_argument("--prompts", type=int, default=64, help="held-out prompts for the RM win rate")
    ap.add_argument("--human-limit", type=int, default=100, help="held-out pairs for the human agreement")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in Path(a.data).read_text().splitlines() if line.strip()][: a.pairs]
    random.Random(0).shuffle(rows)
    held, train = rows[: a.held_out], rows[a.held_out :]
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (out / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    root = f"run.output_root={out}"
    times = {}
    # SFT on the chosen answers of the training pairs (HH transcripts split into turns, as rlhf reads them)
    norm = [normalize_preference_row(r, as_chat=True)[0] for r in rows]
    sft_rows = [{"prompt": n["prompt"], "completion": n["chosen"]} for n in norm[a.held_out :] if n]
    (out / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    times["sft"] = stage(
        "sft",
        "--config",
        "configs/sft.yaml",
        root,
        "run.name=sft",
        f"data.train={out / 'sft.jsonl'}",
        f"trainer.max_steps={a.sft_steps}",
        "data.overlength=truncate",
        f"data.max_length={a.max_length}",
        "data.eval_fraction=0",
    )
    times["reward"] = stage(
        "reward",
        "--config",
        "configs/reward.yaml",
        root,
        "run.name=rm",
        f"data.train={out / 'train.jsonl'}",
        "report.swap_check=false",
        "trainer.num_train_epochs=1",
    )
    times["dpo"] = stage(
        "dpo",
        "--config",
        "configs/dpo.yaml",
        root,
        "run.name=dpo",
        f"model.name={out / 'sft'}",
        f"data.train={out / 'train.jsonl'}",
        f"trainer.max_steps={a.dpo_steps}",
        f"trainer.learning_rate={a.dpo_lr}",
        f"data.max_length={a.max_length}",
        "drift.every_steps=0",
    )
    prompts = [{"id": f"h{i}", "prompt": n["prompt"]} for i, n in enumerate(norm[: a.held_out]) if n]
    prompts = prompts[: a.prompts]
    (out / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))
    times["compare"] = stage(
        "compare",
        "--config",
        "configs/compare.yaml",
        root,
        "run.name=compare",
        "checkpoints=[{name: base, model: smollm2-135m-instruct}, "
        f"{{name: start, model: '{out / 'sft'}'}}, {{name: trained, model: '{out / 'dpo'}'}}]",
        "baseline=start",
        "reference=base",
        f"reward.model={out / 'rm'}",
        f"data.prompts={out / 'prompts.jsonl'}",
        f"human.preferences={out / 'held.jsonl'}",
        f"human.limit={a.human_limit}",
    )
    res = json.loads((out / "compare" / "compare.json").read_text())
    agree = {n: res["human_agreement"][n]["implicit_reward"]["rate"] for n in ("start", "trained")}
    trained = res["checkpoints"]["trained"]
    print(f"times (s): {json.dumps({k: round(v) for k, v in times.items()})}")
    print(f"held-out human agreement: start {agree['start']:.3f}, trained {agree['trained']:.3f}")
    start = res["checkpoints"]["start"]
    print(
        f"RM win rate trained over start: {trained['vs_baseline']['win_rate']:.3f}; KL to the base model: "
        f"start {start['kl']['mean']:.2f}, trained {trained['kl']['mean']:.2f} nats"
    )
    print(f"ratio agreement trained/start {agree['trained'] / max(agree['start'], 1e-9):.3f}")


if __name__ == "__main__":
    main()
