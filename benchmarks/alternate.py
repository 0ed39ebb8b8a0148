"""Shared harness for "rlhf vs the raw library" throughput benchmarks: each side runs in its own fresh
process (`--side rlhf|raw`), the order alternates round by round, and the medians are compared.

A benchmark script defines run_rlhf(steps, out) and run_raw(steps, out), each returning
{"tokens": int, "seconds": float} for the timed trainer.train(), and calls `main(__file__, ...)`.

Optional (backward compatible): a result dict may carry extra keys (e.g. peak_rss_mb, flops); they are
printed on the round line. `extra_sides={"name": fn}` adds more `--side` choices (fn(steps, out) -> dict),
run with `run_side(script, name, steps)`; `report(results, steps)` is called with every round's result
dicts ({"rlhf": [...], "raw": [...]}) just before the median/ratio lines, so a script can print more
figures while `ratio rlhf/raw_trl <x>` stays the last line."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile


def run_side(script: str, side: str, steps: int) -> dict:
    """Run one side in a fresh process and return its result dict (exits with its stderr on failure)."""
    out = subprocess.run(
        [sys.executable, script, "--side", side, "--steps", str(steps)],
        capture_output=True,
        text=True,
    )
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not line:
        sys.exit(f"{side} run failed:\n{out.stderr[-3000:]}")
    return json.loads(line[-1][7:])


def _extras(res: dict) -> str:
    items = [(k, v) for k, v in res.items() if k not in ("tokens", "seconds")]
    return "".join(f" {k}={v:.4g}" if isinstance(v, float) else f" {k}={v}" for k, v in items)


def main(
    script: str,
    run_rlhf,
    run_raw,
    *,
    default_steps: int,
    describe: str,
    extra_sides: dict | None = None,
    report=None,
) -> None:
    sides = {"rlhf": run_rlhf, "raw": run_raw, **(extra_sides or {})}
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=default_steps)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--side", choices=list(sides), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        with tempfile.TemporaryDirectory() as out:
            res = sides[a.side](a.steps, out)
        print("RESULT " + json.dumps(res), flush=True)
        return
    print(f"{describe}; steps={a.steps} rounds={a.rounds}", flush=True)
    rates: dict[str, list[float]] = {"rlhf": [], "raw": []}
    results: dict[str, list[dict]] = {"rlhf": [], "raw": []}
    for rnd in range(a.rounds):
        for side in ("rlhf", "raw") if rnd % 2 == 0 else ("raw", "rlhf"):
            res = run_side(script, side, a.steps)
            results[side].append(res)
            rates[side].append(res["tokens"] / res["seconds"])
            print(
                f"round {rnd} {side:5s} tokens={res['tokens']} seconds={res['seconds']:.2f} "
                f"tokens/s={rates[side][-1]:.1f}{_extras(res)}",
                flush=True,
            )
    if report is not None:
        report(results, a.steps)
    ours, raw = statistics.median(rates["rlhf"]), statistics.median(rates["raw"])
    print(f"median tokens/s: rlhf {ours:.1f}, raw_trl {raw:.1f}")
    print(f"ratio rlhf/raw_trl {ours / raw:.3f}")
