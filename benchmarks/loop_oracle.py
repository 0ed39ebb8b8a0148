"""Claim: the loop makes a better model, by a judge no model was trained on — the oracle.

    .venv/bin/python benchmarks/loop_oracle.py [--rounds 3] [--out /tmp/loop_oracle] [--dpo-steps 16]
        [--lora-r 16] [--dpo-lr 5e-4] [--prompts-per-round 24] [--runs accumulate,per-round]
        [--set KEY=VALUE ...]

Two runs of `rlhf loop` on the embedded demo settings (SmolLM2-135M-Instruct; DPO with LoRA r=16 at lr
5e-4, where the demo itself fine-tunes fully; the minilm-l6 reward model, three simulated assessors whose taste is `rlhf.loop.simulate:demo_preference`, 64 held-out
prompts), `--rounds` rounds each: (a) labels accumulate (the reward model trains on every round's pairs,
DPO replays half as many earlier pairs), (b) per-round labels only (the behaviour before). With simulated
assessors the taste is known, so each round reports the oracle win rate — the noise-free taste's
preference for the round's policy over the start on the held-out prompts — with its 95 % bootstrap
interval over prompts. Prints both runs side by side, each round's verdict, the wall time, and last
`ratio oracle_win_final/0.5 <x>` for the accumulating run (goal >= 1.3: the final policy wins >= 65 %).
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

from rlhf.config import load_config
from rlhf.loop import Loop, LoopConfig
from rlhf.quiet import third_party_to


def run(
    name: str,
    out: Path,
    rounds: int,
    dpo_steps: int,
    accumulate: bool,
    lora_r: int,
    lr: float,
    per_round: int,
    promote_on: str,
    extra: list[str],
) -> tuple[dict, float]:
    with resources.as_file(resources.files("rlhf") / "demo" / "loop.yaml") as demo:
        cfg = load_config(
            LoopConfig,
            demo,
            [
                f"run.name={name}",
                f"run.output_root={out}",
                f"rounds={rounds}",
                f"promote_on={promote_on}",
                f"arena={str(promote_on == 'arena').lower()}",
                # every pair of start / best / new meets on every held-out prompt, judged by all 3 assessors
                "stages.compare.arena={battles_per_prompt: 3, overlap: 3}",
                f"prompts_per_round={per_round}",
                f"labels.accumulate={str(accumulate).lower()}",
                f"labels.dpo_replay={0.5 if accumulate else 0.0}",
                f"stages.dpo.trainer.max_steps={dpo_steps}",
                f"stages.dpo.trainer.learning_rate={lr}",
                *([f"stages.dpo.model.lora={{r: {lora_r}, alpha: {2 * lora_r}}}"] if lora_r else []),
                *extra,
            ],
        )
    loop = Loop(cfg, source=f"loop_oracle {name}")
    t0 = time.perf_counter()
    with third_party_to(loop.dir / "loop.log"):
        state = loop.run()
    return state, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dpo-steps", type=int, default=16)
    ap.add_argument("--lora-r", type=int, default=16, help="DPO with LoRA of this rank (0: full fine-tune)")
    ap.add_argument("--dpo-lr", type=float, default=5e-4)
    ap.add_argument("--prompts-per-round", type=int, default=24)
    ap.add_argument(
        "--promote-on",
        default="arena",
        choices=["arena", "human", "reward_model"],
        help="the promotion evidence (arena: the simulated assessors' blind votes, new vs best)",
    )
    ap.add_argument("--runs", default="accumulate,per-round", help="which of the two runs (comma-separated)")
    ap.add_argument("--out", default="/tmp/loop_oracle")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any loop config override (repeatable)",
    )
    a = ap.parse_args()
    out = Path(a.out)
    print(
        f"DPO: {a.dpo_steps} steps per round, lr {a.dpo_lr}, "
        + (f"LoRA r={a.lora_r}" if a.lora_r else "full fine-tune")
    )
    results = {}
    wanted = a.runs.split(",")
    for name, accumulate in (("accumulate", True), ("per-round", False)):
        if name not in wanted:
            continue
        state, seconds = run(
            name,
            out,
            a.rounds,
            a.dpo_steps,
            accumulate,
            a.lora_r,
            a.dpo_lr,
            a.prompts_per_round,
            a.promote_on,
            a.set,
        )
        results[name] = (state, seconds)
        print(f"{name}: {seconds / 60:.1f} min", flush=True)
    print(
        f"\n{'round':<6} {'oracle win over the start (accumulate)':<44} {'(per-round labels)':<44} verdict (accumulate)"
    )
    for r in range(1, a.rounds + 1):
        cells = []
        for name in ("accumulate", "per-round"):
            o = (results[name][0]["rounds"][str(r)].get("oracle") or {}) if name in results else {}
            cells.append(f"{o['rate']:.0%} [{o['ci95'][0]:.0%}, {o['ci95'][1]:.0%}] n={o['n']}" if o else "-")
        verdict = results["accumulate"][0]["rounds"][str(r)]["verdict"]["text"]
        print(f"{r:<6} {cells[0]:<44} {cells[1]:<44} {verdict}")
    final = results["accumulate"][0]["rounds"][str(a.rounds)].get("oracle") or {"rate": float("nan")}
    total = sum(s for _, s in results.values())
    print(f"wall time {total / 60:.1f} min for both runs")
    print(f"ratio oracle_win_final/0.5 {final['rate'] / 0.5:.2f}")


if __name__ == "__main__":
    main()
