"""Each checkpoint's sampled answers, and the KL to a reference measured on them.

- `collect_answers`: `n` answers per prompt per checkpoint, from the answer cache or generated now. Each
  answer is drawn from its own generator seeded by (run seed, prompt, sample index), so it is the same
  whatever the batch size and whichever other answers were already cached. Answers are sampled in
  `sampling.precision` (auto: bf16 where the hardware has it natively), which is part of the cache key.
- `kl_on_samples`: KL(checkpoint || reference) on the checkpoint's own samples with the k1 estimator
  sum_t log pi(y_t) - log pi_ref(y_t). It is unbiased only when y was sampled from the pi being scored,
  so both models score the **sampled token ids** (not re-tokenized text) under the **same temperature** the
  answers were sampled at, with **no EOS term on an answer that was cut at max_new_tokens**. Top-k / top-p
  truncation is not applied when scoring: the reference would give -inf to tokens outside its own nucleus.
  So with `top_p < 1` (or `top_k`) the estimate is E_{y ~ pi_truncated}[log pi_T(y) - log ref_T(y)], close to
  but not exactly KL(pi_truncated || ref_T); with `top_p: 1` and `top_k: 0` it is exact in expectation.
  Per prompt the samples are averaged; the interval is a bootstrap over prompts.
- Backend (`generation.backend`): answers sampled by a vLLM engine are cached under their own key; their
  log pi(y) is recomputed by the hf scorer in the sampling precision, like the reference's (vLLM's kernels
  differ from transformers' by rounding: one scorer for both sides keeps that out of the KL).
- Precision: log pi(y) is the log-prob each token had when it was drawn (recorded by the decoder, in the
  precision sampled in), so it belongs to exactly the distribution y came from; the reference is scored in
  that same precision. The estimate is then unbiased for KL(pi_p || ref_p), both models at precision p.
  Scoring bf16 samples with fp32 log-probs would instead estimate
  E_{y~pi_bf16}[log pi_fp32(y) - log ref(y)] = KL(pi_bf16 || ref) - KL(pi_bf16 || pi_fp32): biased low by the
  precision gap itself. (bf16 logits are rounded to 8 bits of mantissa, ≈ 0.06 at a logit of 16: noise of
  that order per token on the reference's log-probs, not a bias worth a flag threshold of nats.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from rlhf.compare.answer_cache import GenerationCache, prompt_key
from rlhf.compare.result import KL, Generation, Lengths
from rlhf.engine import Engines
from rlhf.generation import SamplingSettings, generate_texts, row_seed
from rlhf.logprobs import token_logprobs
from rlhf.models import model_fingerprint
from rlhf.stats import bootstrap


class Lazy:
    """A model loaded on first use (`lazy()`), and dropped with `release()`: a re-run whose answers and
    log-probs are all cached loads no model at all."""

    def __init__(self, load):
        self.load, self.value = load, None

    def __call__(self):
        if self.value is None:
            self.value = self.load()
        return self.value

    def release(self) -> None:
        self.value = None


@dataclass
class Answers:
    """A checkpoint's answers, prompt-major: answer k is sample `sample[k]` of prompt `prompt_index[k]`."""

    texts: list[str]
    ids: list[list[int]]  # sampled token ids, the EOS included where the answer ended
    ended: list[bool]
    prompt_index: list[int]
    sample: list[int]
    cached: int  # answers taken from the cache
    generated: int  # answers generated now
    seconds: float
    cache: GenerationCache | None = None
    prompts: list = field(default_factory=list)

    @property
    def tokens(self) -> list[int]:
        return [len(i) for i in self.ids]

    def first(self) -> list[str]:
        """Sample 0 of each prompt (what the judge, the arena and the side-by-side view use)."""
        return [t for t, j in zip(self.texts, self.sample, strict=True) if j == 0]


def collect_answers(
    name: str,
    spec: str,
    tokenizer,
    prompts: list,
    token_ids: list[list[int]],
    sampling: SamplingSettings,
    *,
    samples: int = 1,
    cache_root,
    seed: int,
    batch_size: int,
    model: Lazy,
    max_batch_tokens: int | None = None,
    engine: Engines | None = None,
) -> Answers:
    """`samples` answers per prompt of one checkpoint; the (lazy) model is loaded only when one is missing.
    Batches: at most `batch_size` prompts and `max_batch_tokens` KV-cache tokens (answers do not depend on
    either). `engine`: the backend that samples (default: hf, in this process)."""
    backend = "hf" if engine is None else engine.backend
    cache = GenerationCache(cache_root, model_fingerprint(spec), sampling, seed, backend)
    keys = [(i, j) for i in range(len(prompts)) for j in range(samples)]
    missing = [(i, j) for i, j in keys if cache.get(prompts[i], j) is None]
    t0 = time.perf_counter()
    if missing:
        seeds = [row_seed(seed, prompt_key(prompts[i]), j) for i, j in missing]
        kw = dict(batch_size=batch_size, max_batch_tokens=max_batch_tokens, seeds=seeds)
        rows = [token_ids[i] for i, _ in missing]
        with tqdm(total=len(missing), desc=f"generate [{name}]") as bar:
            if engine is None:
                out = generate_texts(model(), tokenizer, rows, sampling, progress=bar, **kw)
            else:
                out = engine.generate(spec, model, tokenizer, rows, sampling, progress=bar, **kw)
        # a vLLM answer's log-prob is recomputed by the hf scorer, like the reference's (one scorer for both
        # sides of the KL); the hf decoder's is the one the token was drawn with
        cache.put_many(
            [(prompts[i], j) for i, j in missing],
            [
                {
                    "text": s[0].text,
                    "ended": s[0].ended,
                    "ids": list(s[0].ids),
                    "logp": s[0].logp if backend == "hf" else None,
                }
                for s in out.samples
            ],
        )
    entries = [cache.get(prompts[i], j) for i, j in keys]
    return Answers(
        texts=[e["text"] for e in entries],
        ids=[e["ids"] for e in entries],
        ended=[e["ended"] for e in entries],
        prompt_index=[i for i, _ in keys],
        sample=[j for _, j in keys],
        cached=len(keys) - len(missing),
        generated=len(missing),
        seconds=round(time.perf_counter() - t0, 2),
        cache=cache,
        prompts=list(prompts),
    )


def generation_counts(ans: Answers) -> Generation:
    return Generation(cached=ans.cached, generated=ans.generated, seconds=ans.seconds)


def lengths(ans: Answers) -> Lengths:
    tokens = ans.tokens
    return Lengths(
        tokens=tokens,
        mean_tokens=sum(tokens) / len(tokens),
        mean_chars=sum(map(len, ans.texts)) / len(ans.texts),
        ended_fraction=sum(ans.ended) / len(ans.ended),
    )


def same_vocabulary(tok_a, tok_b) -> bool:
    return tok_a.get_vocab() == tok_b.get_vocab()


def kl_on_samples(
    model: Lazy,
    reference: Lazy,
    ref_fp: str,
    tokenizer,
    token_ids: list[list[int]],
    ans: Answers,
    sampling: SamplingSettings,
    *,
    batch_size: int,
    bootstrap_resamples: int,
    seed: int = 0,
) -> KL:
    """KL per answer from the sampled ids' log-probs under the checkpoint (as recorded while sampling) and
    under the reference, scored in the sampling precision at the sampling temperature (cached with the
    answers under the reference's content hash), averaged per prompt, with a bootstrap interval over
    prompts. The reference against itself is 0: no forward pass."""
    n_answers = len(ans.ids)
    if model is reference:
        return KL(mean=0.0, ci95=[0.0, 0.0], n=len(ans.prompts), per_token=0.0)
    temperature = sampling.temperature if sampling.do_sample else 1.0
    ref_key = f"ref_logp:{ref_fp[:16]}"
    keys = [(ans.prompts[i], j) for i, j in zip(ans.prompt_index, ans.sample, strict=True)]
    kw = dict(temperature=temperature, batch_size=batch_size, precision=sampling.precision_choice())
    pad = tokenizer.pad_token_id
    for field_name, scorer in (("logp", model), (ref_key, reference)):
        entries = [ans.cache.get(p, j) for p, j in keys]
        todo = [k for k, e in enumerate(entries) if e.get(field_name) is None]
        if todo:
            prompt_ids = [token_ids[ans.prompt_index[k]] for k in todo]
            logp = token_logprobs(scorer(), prompt_ids, [ans.ids[k] for k in todo], pad, **kw)
            ans.cache.update_many([keys[k] for k in todo], [{field_name: v} for v in logp])
    entries = [ans.cache.get(p, j) for p, j in keys]
    per_answer = np.array([e["logp"] - e[ref_key] for e in entries])
    fit = bootstrap(
        lambda idx: per_answer[idx].mean(),
        n_answers,
        resamples=bootstrap_resamples,
        seed=seed,
        groups=ans.prompt_index,
    )
    return KL(
        mean=float(per_answer.mean()),
        ci95=[float(fit.low), float(fit.high)],
        n=len(ans.prompts),
        per_token=float(per_answer.sum() / max(1, sum(ans.tokens))),
    )
