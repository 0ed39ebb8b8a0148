"""Shared harness for "rlhf vs the raw library" throughput benchmarks: each side runs in its own fresh
process (`--side rlhf|raw`), the order alternates round by round, and the medians are compared.

A benchmark script defines run_rlhf(steps, out) and run_raw(steps, out), each returning
{"tokens": int, "seconds": float} for the timed trainer.train(), and calls `main(__file__, ...)`."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile


def main(script: str, run_rlhf, run_raw, *, default_steps: int, describe: str) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=default_steps)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--side", choices=["rlhf", "raw"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        with tempfile.TemporaryDirectory() as out:
            res = (run_rlhf if a.side == "rlhf" else run_raw)(a.steps, out)
        print("RESULT " + json.dumps(res), flush=True)
        return
    print(f"{describe}; steps={a.steps} rounds={a.rounds}", flush=True)
    rates: dict[str, list[float]] = {"rlhf": [], "raw": []}
    for rnd in range(a.rounds):
        for side in ("rlhf", "raw") if rnd % 2 == 0 else ("raw", "rlhf"):
            out = subprocess.run(
                [sys.executable, script, "--side", side, "--steps", str(a.steps)],
                capture_output=True,
                text=True,
            )
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"{side} run failed:\n{out.stderr[-3000:]}")
            res = json.loads(line[-1][7:])
            rates[side].append(res["tokens"] / res["seconds"])
            print(
                f"round {rnd} {side:5s} tokens={res['tokens']} seconds={res['seconds']:.2f} "
                f"tokens/s={rates[side][-1]:.1f}",
                flush=True,
            )
    ours, raw = statistics.median(rates["rlhf"]), statistics.median(rates["raw"])
    print(f"median tokens/s: rlhf {ours:.1f}, raw_trl {raw:.1f}")
    print(f"ratio rlhf/raw_trl {ours / raw:.3f}")
