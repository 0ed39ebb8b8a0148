"""The measurements behind `rlhf compare`, one function each (the stage wires them):

- `collect_answers`: each checkpoint's answer to each prompt, from the generation cache or batched
  generation (`rlhf.generation`), with a per-checkpoint progress bar; counts cache hits.
- `kl_on_samples`: KL(checkpoint || reference) estimated on the checkpoint's own samples — per response,
  sum over tokens of log p - log q (the k1 estimator, unbiased) — in nats per response and per token.
- `human_agreement`: on held-out preference pairs, the share each checkpoint orders like the humans, by its
  implicit reward beta * (log pi(y|x) - log pi_ref(y|x)) (what DPO optimises) and by plain sequence log-prob.
- `generation_counts`, `lengths`: cache hits and response lengths of a checkpoint's answers.
- `summarize`: reward-model means, win rates, Bradley-Terry ratings and length-controlled win rates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from rlhf.compare.answer_cache import GenerationCache
from rlhf.compare.bradley_terry import ratings
from rlhf.compare.metrics import battles_from_scores, lc_win_rate_ci, mean_ci, pairwise_wins, rate_ci
from rlhf.compare.result import (
    KL,
    Generation,
    HumanAgreement,
    Leaderboard,
    Lengths,
    Rating,
    RewardSummary,
)
from rlhf.generation import SamplingSettings, generate_texts
from rlhf.logprobs import sequence_logprobs
from rlhf.models import model_fingerprint


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
    texts: list[str]
    tokens: list[int]
    ended: list[bool]
    cached: int  # answers taken from the cache
    generated: int  # answers generated now
    seconds: float
    cache: GenerationCache | None = None
    prompts: list | None = None


def collect_answers(
    name: str,
    spec: str,
    tokenizer,
    prompts: list,
    token_ids: list[list[int]],
    sampling: SamplingSettings,
    *,
    cache_root,
    seed: int,
    batch_size: int,
    model: Lazy,
) -> Answers:
    """Answers of one checkpoint; the (lazy) model is loaded only when something is missing."""
    cache = GenerationCache(cache_root, model_fingerprint(spec), sampling, seed)
    missing = [i for i, p in enumerate(prompts) if cache.get(p) is None]
    t0 = time.perf_counter()
    if missing:
        torch.manual_seed(seed)
        with tqdm(total=len(missing), desc=f"generate [{name}]") as bar:
            out = generate_texts(
                model(),
                tokenizer,
                [token_ids[i] for i in missing],
                sampling,
                batch_size=batch_size,
                progress=bar,
            )
        cache.put_many(
            [prompts[i] for i in missing],
            [{"text": s[0].text, "ended": s[0].ended, "tokens": s[0].tokens} for s in out.samples],
        )
    entries = [cache.get(p) for p in prompts]
    answers = Answers(
        texts=[e["text"] for e in entries],
        tokens=[e["tokens"] for e in entries],
        ended=[e["ended"] for e in entries],
        cached=len(prompts) - len(missing),
        generated=len(missing),
        seconds=round(time.perf_counter() - t0, 2),
        cache=cache,
        prompts=list(prompts),
    )
    return answers


def generation_counts(ans: Answers) -> Generation:
    return Generation(cached=ans.cached, generated=ans.generated, seconds=ans.seconds)


def lengths(ans: Answers) -> Lengths:
    return Lengths(
        tokens=ans.tokens,
        mean_tokens=sum(ans.tokens) / len(ans.tokens),
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
    prompts: list,
    ans: Answers,
    *,
    batch_size: int,
    bootstrap: int,
) -> KL:
    """KL estimate from the answers' log-probs under the checkpoint and the reference; both are cached with
    the answers (the reference's under its content hash), so a re-run computes only what is new. The
    reference against itself is 0 by definition: no forward pass."""
    if model is reference:
        return KL(mean=0.0, ci95=[0.0, 0.0], n=len(prompts), per_token=0.0)
    ref_key = f"ref_logp:{ref_fp[:16]}"
    entries = [ans.cache.get(p) for p in prompts]
    todo = [i for i, e in enumerate(entries) if "logp" not in e or ref_key not in e]
    if todo:
        texts = [ans.texts[i] for i in todo]
        sub = [prompts[i] for i in todo]
        logp, counts = sequence_logprobs(model(), tokenizer, sub, texts, batch_size=batch_size)
        ref, _ = sequence_logprobs(reference(), tokenizer, sub, texts, batch_size=batch_size)
        fields = [
            {"logp": a, ref_key: b, "scored_tokens": c} for a, b, c in zip(logp, ref, counts, strict=True)
        ]
        ans.cache.update_many(sub, fields)
        entries = [ans.cache.get(p) for p in prompts]
    logp = [e["logp"] for e in entries]
    ref = [e[ref_key] for e in entries]
    counts = [e["scored_tokens"] for e in entries]
    per_response = [a - b for a, b in zip(logp, ref, strict=True)]
    m = mean_ci(per_response, n=bootstrap)
    return KL(m.mean, m.ci95, m.n, per_token=sum(per_response) / max(1, sum(counts)))


def preference_logprobs(
    model, tokenizer, pairs: list[dict], *, batch_size: int
) -> tuple[list[float], list[float]]:
    prompts = [p["prompt"] for p in pairs]
    chosen, _ = sequence_logprobs(
        model, tokenizer, prompts, [p["chosen"] for p in pairs], batch_size=batch_size
    )
    rejected, _ = sequence_logprobs(
        model, tokenizer, prompts, [p["rejected"] for p in pairs], batch_size=batch_size
    )
    return chosen, rejected


def human_agreement(policy: tuple, reference: tuple, *, beta: float, bootstrap: int) -> HumanAgreement:
    """policy/reference: (log-probs of chosen, of rejected) per pair. A tie counts one half."""
    (pc, pr), (rc, rr) = policy, reference

    def agree(a: float, b: float) -> float:
        return 0.5 if a == b else float(a > b)

    implicit = [agree(beta * (c - c0), beta * (r - r0)) for c, r, c0, r0 in zip(pc, pr, rc, rr, strict=True)]
    plain = [agree(c, r) for c, r in zip(pc, pr, strict=True)]
    return HumanAgreement(implicit_reward=rate_ci(implicit, n=bootstrap), logprob=rate_ci(plain, n=bootstrap))


def summarize(
    names: list[str],
    rewards: dict[str, list[float]],
    chars: dict[str, list[int]],
    baseline: str,
    *,
    bootstrap: int,
    tie_eps: float,
    seed: int,
) -> RewardSummary:
    """Reward means, the win-rate matrix, Bradley-Terry ratings (anchored on the baseline) and, per checkpoint,
    raw and length-controlled win rates over the baseline."""
    scores = [rewards[n] for n in names]
    fit = ratings(
        battles_from_scores(scores, tie_eps),
        len(names),
        bootstrap=bootstrap,
        seed=seed,
        anchor=names.index(baseline),
    )
    board = [Rating(n, fit["rating"][k], fit["ci95"][k], fit["p_best"][k]) for k, n in enumerate(names)]
    board.sort(key=lambda r: -r.rating)
    vs_baseline = {
        n: lc_win_rate_ci(
            rewards[n],
            rewards[baseline],
            chars[n],
            chars[baseline],
            tie_eps=tie_eps,
            n=min(bootstrap, 300),
            seed=seed,
        )
        for n in names
        if n != baseline
    }
    return RewardSummary(
        reward={n: mean_ci(rewards[n], n=bootstrap, seed=seed) for n in names},
        vs_baseline=vs_baseline,
        win_rates=pairwise_wins(scores, tie_eps=tie_eps, n=bootstrap, seed=seed),
        bradley_terry=Leaderboard(board, battles=fit["battles"], anchor=baseline),
    )
