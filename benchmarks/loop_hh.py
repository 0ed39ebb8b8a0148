"""Does the loop make a better model? On the shared HH-RLHF harmless file with a seeded held-out split:
SFT on the chosen answers -> DPO (LoRA) on the training pairs -> `rlhf compare` of start vs trained with
the held-out pairs (human agreement of the implicit reward) and an RM trained on the training pairs
(win rate, KL). Every step is a normal stage run (the same entry points the loop uses).

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
    ap.add_argument("--prompts", type=int, default=64, help="held-out prompts for the RM win rate")
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
    # SFT on the chosen transcripts of the training pairs (HH rows: the importer turns them into prompt/chosen)
    sft_rows = []
    for r in train:
        if "prompt" in r and isinstance(r.get("chosen"), str):
            sft_rows.append({"prompt": r["prompt"], "completion": r["chosen"]})
        else:
            sft_rows.append({"text": r["chosen"]})
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
        "drift.every_steps=0",
    )
    prompts = [{"id": f"h{i}", "prompt": r["prompt"]} for i, r in enumerate(held) if "prompt" in r][
        : a.prompts
    ]
    (out / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))
    times["compare"] = stage(
        "compare",
        "--config",
        "configs/compare.yaml",
        root,
        "run.name=compare",
        f"checkpoints=[{{name: start, model: '{out / 'sft'}'}}, {{name: trained, model: '{out / 'dpo'}'}}]",
        "baseline=start",
        "reference=start",
        f"reward.model={out / 'rm'}",
        f"data.prompts={out / 'prompts.jsonl'}",
        f"human.preferences={out / 'held.jsonl'}",
    )
    res = json.loads((out / "compare" / "compare.json").read_text())
    agree = {n: res["human_agreement"][n]["accuracy"] for n in ("start", "trained")}
    trained = res["checkpoints"]["trained"]
    print(f"times (s): {json.dumps({k: round(v) for k, v in times.items()})}")
    print(f"held-out human agreement: start {agree['start']:.3f}, trained {agree['trained']:.3f}")
    print(
        f"RM win rate trained over start: {trained['vs_baseline']['win_rate']:.3f}, KL {trained['kl']['mean']:.2f}"
    )
    print(f"ratio agreement trained/start {agree['trained'] / max(agree['start'], 1e-9):.3f}")


if __name__ == "__main__":
    main()
