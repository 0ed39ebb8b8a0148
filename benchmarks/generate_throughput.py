"""Claim: batched `rlhf generate` is >= 5x faster than one-prompt-at-a-time `model.generate`.

    .venv/bin/python benchmarks/generate_throughput.py [--prompts 24] [--k 2] [--new-tokens 48]

Both sides: SmolLM2-135M-Instruct (built-in alias), the demo prompts through the chat template, K samples
per prompt, sampling at temperature 0.8, and exactly `--new-tokens` new tokens per sample
(min_new_tokens = max_new_tokens, so both sides do the same work). Batched = the function `rlhf generate`
runs (prompts sorted by length, left padding, KV cache, num_return_sequences); naive = a loop of single
`model.generate` calls. Prints tokens/s of each, then `ratio batched/naive <x>`.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=24)
    a = ap.parse_args()

    from rlhf.data import load_rows
    from rlhf.generation import SamplingSettings, generate_texts
    from rlhf.models import SMOLLM2, load_causal_lm, load_tokenizer
    from rlhf.prompts import encode_prompt

    tok = load_tokenizer(SMOLLM2, padding_side="left")
    model = load_causal_lm(SMOLLM2).eval()
    model.generation_config.min_new_tokens = a.new_tokens  # equal work on both sides
    prompts = [r["prompt"] for r in load_rows("demo:prompts", what="prompts").rows[: a.prompts]]
    enc = [encode_prompt(tok, p) for p in prompts]
    sampling = SamplingSettings(max_new_tokens=a.new_tokens, temperature=0.8, top_p=0.95)
    print(
        f"model {SMOLLM2}, {len(enc)} prompts x {a.k} samples x {a.new_tokens} new tokens, "
        f"prompt lengths {min(map(len, enc))}..{max(map(len, enc))}, batch {a.batch_size}",
        flush=True,
    )

    def batched() -> int:
        return generate_texts(model, tok, enc, sampling, n=a.k, batch_size=a.batch_size).new_tokens

    def naive() -> int:
        n = 0
        for ids in enc:
            for _ in range(a.k):
                with torch.inference_mode():
                    out = model.generate(
                        input_ids=torch.tensor([ids]),
                        max_new_tokens=a.new_tokens,
                        min_new_tokens=a.new_tokens,
                        do_sample=True,
                        temperature=0.8,
                        top_p=0.95,
                        pad_token_id=tok.pad_token_id,
                    )
                n += out.shape[1] - len(ids)
        return n

    rates: dict[str, list[float]] = {"batched": [], "naive": []}
    for side, fn in (("batched", batched), ("naive", naive), ("batched", batched)):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        rates[side].append(n / dt)
        print(f"{side:8s} new_tokens={n} seconds={dt:.2f} tokens/s={n / dt:.1f}", flush=True)
    best_batched = sum(rates["batched"]) / len(rates["batched"])
    print(f"ratio batched/naive {best_batched / rates['naive'][0]:.2f}")


if __name__ == "__main__":
    main()
