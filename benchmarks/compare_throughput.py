"""Claim: `rlhf compare` does the generation + reward-model scoring of a checkpoint comparison much faster
than a plain script that handles one checkpoint at a time with `model.generate` per prompt and scores one
response at a time — from batching — and a re-run costs only the scoring, from the generation cache.

    .venv/bin/python benchmarks/compare_throughput.py [--prompts 24] [--new-tokens 48]

Setup: two checkpoints — SmolLM2-135M-Instruct (the built-in alias) and a copy with slightly perturbed
weights — and a reward model on the `minilm-l6` encoder (a fresh score head with rlhf's metadata: the
score values do not matter here, only the work). Both sides: the first N demo prompts, sampling with
temperature 0.7 / top-p 0.9, exactly `--new-tokens` new tokens per answer (min_new_tokens: equal work).
The naive side runs fp32 (`from_pretrained`'s default); the rlhf side samples in the precision the stage
picks (`sampling.precision: auto`: bf16 where the CPU does bf16 natively, else fp32). The rlhf side is the stage as users run it (run dir, KL to the reference on the samples, bootstrap
CIs, Bradley-Terry, report) — more work than the naive side does. Each side runs in a fresh process,
in the order rlhf, naive, then rlhf again with the cache warm. Last line: `ratio rlhf/naive <x>` (goal
<= 0.3).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup(root: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.models import MINILM, SMOLLM2, resolve_model_path

    base = resolve_model_path(SMOLLM2)
    copy = root / "perturbed"
    shutil.copytree(base, copy)
    m = AutoModelForCausalLM.from_pretrained(copy)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    m.save_pretrained(copy)
    rm = root / "rm"
    AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(MINILM), num_labels=1
    ).save_pretrained(rm)
    AutoTokenizer.from_pretrained(resolve_model_path(MINILM)).save_pretrained(rm)
    (rm / "rlhf_reward.json").write_text(json.dumps({"max_length": 256, "norm": {"mean": 0.0, "std": 1.0}}))
    return {"base": SMOLLM2, "perturbed": str(copy), "rm": str(rm)}


def side_rlhf(a, paths: dict, root: Path) -> float:
    from rlhf.config import load_config
    from rlhf.stages import compare

    over = [
        f"run.output_root={root}/runs",
        f"run.name=bench-{time.time_ns()}",
        f"checkpoints=[{{name: base, model: {paths['base']}}}, {{name: perturbed, model: '{paths['perturbed']}'}}]",
        "data.prompts=demo:prompts",
        f"data.limit={a.prompts}",
        f"sampling.max_new_tokens={a.new_tokens}",
        "sampling.temperature=0.7",
        "sampling.top_p=0.9",
        f"batch_size={a.prompts}",
        f"reward.model={paths['rm']}",
        f"cache={root}/cache",
        "bootstrap=200",
    ]
    cfg = load_config(compare.CompareStageConfig, None, over)
    import rlhf.generation as gen

    # equal work: exactly new_tokens per answer (the naive side sets min_new_tokens; rlhf's seeded sampler
    # simply sees no end-of-sequence token)
    gen.eos_ids = lambda model, tokenizer: []
    t0 = time.perf_counter()
    compare.run(cfg)
    return time.perf_counter() - t0


def side_naive(a, paths: dict, root: Path) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.data import load_rows
    from rlhf.models import resolve_model_path
    from rlhf.prompts import encode_prompt
    from rlhf.reward import RewardScorer

    prompts = [r["prompt"] for r in load_rows("demo:prompts", what="prompts").rows[: a.prompts]]
    t0 = time.perf_counter()
    scorer = RewardScorer(paths["rm"], batch_size=1)
    for name in ("base", "perturbed"):
        path = resolve_model_path(paths[name])
        tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
        torch.manual_seed(0)
        answers = []
        for p in prompts:
            ids = encode_prompt(tok, p)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=torch.tensor([ids]),
                    max_new_tokens=a.new_tokens,
                    min_new_tokens=a.new_tokens,
                    do_sample=True,
                    temperature=0.7,
                    top_p=0.9,
                    pad_token_id=tok.pad_token_id,
                )
            answers.append(tok.decode(out[0, len(ids) :], skip_special_tokens=True))
        for p, r in zip(prompts, answers, strict=True):
            scorer.score([p], [r])
        del model
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--side", choices=["rlhf", "naive"])
    ap.add_argument("--root")
    a = ap.parse_args()
    if a.side:
        root = Path(a.root)
        paths = json.loads((root / "paths.json").read_text())
        seconds = (side_rlhf if a.side == "rlhf" else side_naive)(a, paths, root)
        print(f"RESULT {seconds}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "paths.json").write_text(json.dumps(setup(root)))
        print(
            f"2 checkpoints (SmolLM2, perturbed copy) x {a.prompts} prompts x {a.new_tokens} new tokens; RM minilm-l6",
            flush=True,
        )
        times = {}
        for label, side in (("rlhf", "rlhf"), ("naive", "naive"), ("rlhf cached", "rlhf")):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--side",
                    side,
                    "--root",
                    tmp,
                    "--prompts",
                    str(a.prompts),
                    "--new-tokens",
                    str(a.new_tokens),
                ],
                capture_output=True,
                text=True,
            )
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"{label} failed:\n{out.stderr[-3000:]}")
            times[label] = float(line[-1][7:])
            print(f"{label:12s} {times[label]:.1f} s", flush=True)
    print(
        f"cached re-run {times['rlhf cached']:.1f} s = {times['rlhf cached'] / times['rlhf']:.2f} of the first run"
    )
    print(f"ratio rlhf/naive {times['rlhf'] / times['naive']:.2f}")


if __name__ == "__main__":
    main()
