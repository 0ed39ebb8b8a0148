"""PPO step time on the tiny model, split into generation, scoring and optimisation.

    python benchmarks/ppo_throughput.py [--steps 24] [--batch 4] [--new-tokens 24]

The tiny random Llama (tests/support/tiny.py) is the policy, and the same network with a fresh score head (and
the rlhf_reward.json every rlhf reward model carries) is the reward model, scored through RewardScorer on decoded text — so the figures measure the PPO machinery
(rollout, scoring, log-prob/value passes, GAE, ppo_epochs x minibatches, logging), not model FLOPs.
`rlhf ppo` runs as users run it (run dir, metrics, drift guard, a checkpoint at the end). The first two
steps are warm-up and left out. Goal: <= 0.5 s per step at batch 4 x 24 new tokens on 2 CPU cores.
Final line: `ratio step_s/goal_0.5 <x>` (below 1 meets the goal).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 0.5
sys.path.insert(
    0, str(Path(__file__).resolve().parents[1] / "tests")
)  # the tiny model lives in tests/support


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=24)
    a = ap.parse_args()

    import torch
    from support.tiny import WORDS, build_tiny_llama, build_tiny_reward_model

    from rlhf.config import load_config
    from rlhf.stages import ppo

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_llama(Path(tmp) / "tiny")
        rm = build_tiny_reward_model(Path(tmp) / "tiny-rm", model)
        prompts = Path(tmp) / "prompts.jsonl"
        prompts.write_text(
            "".join(
                json.dumps({"prompt": f"{w} {WORDS[i % 9]} question"}) + "\n" for i, w in enumerate(WORDS)
            )
        )
        over = {
            "run.output_root": f"{tmp}/runs",
            "run.name": "bench",
            "model.name": model,
            "model.lora": "null",
            "reward.model": rm,
            "data.prompts": str(prompts),
            "sampling.max_new_tokens": a.new_tokens,
            "ppo.steps": a.steps,
            "ppo.rollout_batch_size": a.batch,
            "ppo.minibatch_size": a.batch,
            "ppo.ppo_epochs": 2,
            "ppo.save_steps": 0,
            "ppo.learning_rate": 1e-4,
        }
        cfg = load_config(ppo.PPOStageConfig, None, [f"{k}={v}" for k, v in over.items()])
        t0 = time.perf_counter()
        run = ppo.run(cfg)
        wall = time.perf_counter() - t0
        rows = [r for r in run.read_metrics() if "time/generation" in r][2:]
        result = run.read_manifest()["result"]

    def med(key):
        return statistics.median(r[key] for r in rows)

    gen, score, opt = med("time/generation"), med("time/scoring"), med("time/optimisation")
    per_step = result["seconds_per_step"]
    print(
        f"tiny Llama policy + tiny RM via RewardScorer; batch {a.batch} x {a.new_tokens} new tokens, {a.steps} steps"
    )
    print(f"mean response length {statistics.mean(r['response_length'] for r in rows):.1f} tokens")
    print(f"median per step: generation {gen:.3f} s, scoring {score:.3f} s, optimisation {opt:.3f} s")
    print(f"mean step incl. logging/drift/loop: {per_step:.3f} s (whole run with loading {wall:.1f} s)")
    print(f"ratio step_s/goal_{GOAL_S} {(gen + score + opt) / GOAL_S:.3f}")


if __name__ == "__main__":
    sys.exit(main())
