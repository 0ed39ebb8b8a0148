"""Every checkpoint's answers and what they measure without a reward model: `measure_checkpoints`.

Each checkpoint's answers come from the answer cache or `generation.backend` (one engine pool for all of
them: one vLLM engine for every checkpoint on the same base), then its response lengths and, where it
shares the reference's vocabulary, its KL to the reference on its own samples. Each model is loaded at most
once, in the sampling precision (answers and KL are in it), and released after its turn; the reference
only when something needs it.
"""

from __future__ import annotations

from pathlib import Path

from rlhf.compare.answers import (
    Answers,
    Lazy,
    collect_answers,
    generation_counts,
    kl_on_samples,
    lengths,
    same_vocabulary,
)
from rlhf.compare.result import CheckpointResult, CompareResult
from rlhf.compare.settings import CompareSampling
from rlhf.engine import EngineSettings, engines
from rlhf.models import load_causal_lm, model_fingerprint


def measure_checkpoints(
    specs: dict[str, str],
    tokenizers: dict,
    prompts,
    *,
    baseline: str,
    reference: str,
    sampling: CompareSampling,
    generation: EngineSettings,
    cache: Path,
    seed: int,
    batch_size: int,
    sample_batch_size: int,
    max_batch_tokens: int | None,
    bootstrap: int,
    log_dir: Path,
) -> tuple[dict[str, Answers], CompareResult]:
    """`specs` {name: model}, `tokenizers` {name: tokenizer}, `prompts` (`rlhf.prompts.load_prompts`,
    encoded per checkpoint in `specs` order) -> every checkpoint's answers and a CompareResult holding their
    generation counts, lengths and KL. `batch_size`: sequences per scoring forward (KL)."""
    dtype = sampling.precision_choice().name
    ref_model = Lazy(lambda: load_causal_lm(specs[reference], dtype).eval())
    ref_tok, ref_fp = tokenizers[reference], model_fingerprint(specs[reference])
    names = list(specs)
    result = CompareResult(names, baseline, reference, prompts=len(prompts), checkpoints={})
    answers = {}
    with engines(generation, dtype, seed, log_dir) as engine:
        for k, name in enumerate(names):
            tok = tokenizers[name]
            if name == reference:
                model = ref_model
            else:
                model = Lazy(lambda n=name: load_causal_lm(specs[n], dtype).eval())
            answers[name] = ans = collect_answers(
                name,
                specs[name],
                tok,
                prompts.prompts,
                prompts.encoded[k],
                sampling.plain(),
                samples=sampling.n,
                cache_root=cache,
                seed=seed,
                batch_size=sample_batch_size,
                max_batch_tokens=max_batch_tokens,
                model=model,
                engine=engine,
            )
            entry = result.checkpoints[name] = CheckpointResult(generation_counts(ans), lengths(ans))
            if same_vocabulary(tok, ref_tok):
                entry.kl = kl_on_samples(
                    model,
                    ref_model,
                    ref_fp,
                    tok,
                    prompts.encoded[k],
                    ans,
                    sampling,
                    batch_size=batch_size,
                    bootstrap_resamples=bootstrap,
                    seed=seed,
                )
            if model is not ref_model:
                model.release()
    return answers, result
