"""The measurements behind `rlhf compare`, one function each (the stage wires them):

- (answers and the KL to the reference on them: `rlhf.compare.answers`)
- `preference_logprobs`: summed log-probs and token counts of the chosen and rejected answers of held-out
  human pairs under a model (`adapter_off_logprobs`: a LoRA checkpoint's base, the adapter switched off —
  no second copy of the model).
- `human_agreement`: the share of those pairs a checkpoint orders like the humans — by its implicit reward
  log pi(y|x) - log pi_ref(y|x) against its own reference (what DPO optimises; DPO's beta multiplies both
  answers' rewards alike, so it cannot change an ordering and is left out), by its summed sequence
  log-prob (which favours the shorter answer) and by its mean log-prob per token.
- `summarize`: reward-model means, win rates, Bradley-Terry ratings and length-controlled win rates, with
  intervals over prompts (several answers per prompt: flat scores with their prompt indices, `groups`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlhf.compare.bradley_terry import ratings
from rlhf.compare.metrics import (
    battles_from_scores,
    battles_vs_baseline,
    length_controlled,
    mean_ci,
    pairwise_wins,
    rate_ci,
)
from rlhf.compare.result import HumanAgreement, Leaderboard, Rating, RewardSummary
from rlhf.logprobs import pair_logprobs
from rlhf.models import fast_fp32_matmuls


@dataclass
class PairLogprobs:
    """Per held-out pair: the summed log-probs of the chosen and rejected answers, and their token counts."""

    chosen: list[float]
    rejected: list[float]
    chosen_tokens: list[int]
    rejected_tokens: list[int]


def preference_logprobs(model, tokenizer, pairs: list[dict], *, batch_size: int) -> PairLogprobs:
    """In fp32 (the model as loaded), its matmuls through `fast_fp32_matmuls` where bf16 is native: fp32
    accuracy — bf16 weights moved the demo's margins by up to 1.5 nats (docs/compare.md) — at bf16 speed."""
    with fast_fp32_matmuls():
        chosen, n_chosen, rejected, n_rejected = pair_logprobs(
            model,
            tokenizer,
            [p["prompt"] for p in pairs],
            [p["chosen"] for p in pairs],
            [p["rejected"] for p in pairs],
            batch_size=batch_size,
        )
    return PairLogprobs(chosen, rejected, n_chosen, n_rejected)


def adapter_off_logprobs(model, tokenizer, pairs: list[dict], *, batch_size: int) -> PairLogprobs:
    """`preference_logprobs` of a LoRA (peft) model's base: the same network with the adapter disabled."""
    with model.disable_adapter():
        return preference_logprobs(model, tokenizer, pairs, batch_size=batch_size)


def _agree(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 where the chosen answer's score a is above the rejected one's b, 0.5 on a tie, 0 below."""
    return np.where(a == b, 0.5, (a > b).astype(float))


def human_agreement(
    policy: PairLogprobs,
    reference: PairLogprobs | None,
    *,
    reference_name: str,
    reference_source: str,
    bootstrap: int,
    seed: int = 0,
) -> HumanAgreement:
    """The shares of pairs ordered like the humans (a tie counts one half), each with its CI over pairs.
    `reference`: the log-probs of this checkpoint's own reference (None: not comparable — another
    vocabulary — so no implicit reward)."""
    pc, pr = np.array(policy.chosen), np.array(policy.rejected)
    tc, tr = np.maximum(policy.chosen_tokens, 1), np.maximum(policy.rejected_tokens, 1)
    plain = _agree(pc, pr)
    out = HumanAgreement(
        implicit_reward=None,
        logprob=rate_ci(plain, n=bootstrap, seed=seed),
        logprob_per_token=rate_ci(_agree(pc / tc, pr / tr), n=bootstrap, seed=seed),
        reference=reference_name,
        reference_source=reference_source,
    )
    if reference is not None:
        rc, rr = np.array(reference.chosen), np.array(reference.rejected)
        out.implicit_reward = rate_ci(_agree(pc - rc, pr - rr), n=bootstrap, seed=seed)
        out.logprob_vs_reference = mean_ci(plain - _agree(rc, rr), n=bootstrap, seed=seed)
    return out


def summarize(
    names: list[str],
    rewards: dict[str, list[float]],
    chars: dict[str, list[int]],
    baseline: str,
    *,
    groups: dict[str, Sequence[int]] | None = None,
    bootstrap: int,
    tie_eps: float,
    seed: int,
    lc_resamples: int = 300,
) -> RewardSummary:
    """Reward means, the win-rate matrix, Bradley-Terry ratings (anchored on the baseline) and, per checkpoint,
    raw and length-controlled win rates over the baseline. `rewards[name]` (and `chars[name]`): one value per
    answer; `groups[name]`: the prompt index of each answer (None: one answer per prompt, in order). Every
    interval resamples prompts."""
    scores = [rewards[n] for n in names]
    prompt_of = [groups[n] for n in names] if groups else None
    battles, battle_prompts = battles_from_scores(scores, tie_eps, groups=prompt_of)
    fit = ratings(
        battles,
        len(names),
        bootstrap=bootstrap,
        seed=seed,
        anchor=names.index(baseline),
        groups=battle_prompts,
    )
    board = [Rating(n, fit["rating"][k], fit["ci95"][k], fit["p_best"][k]) for k, n in enumerate(names)]
    board.sort(key=lambda r: -r.rating)
    order, vs = battles_vs_baseline(
        scores, [chars[n] for n in names], names.index(baseline), groups=prompt_of, tie_eps=tie_eps
    )
    lc = length_controlled(vs, n=min(bootstrap, lc_resamples), seed=seed)
    return RewardSummary(
        reward={
            n: mean_ci(rewards[n], groups=groups[n] if groups else None, n=bootstrap, seed=seed)
            for n in names
        },
        vs_baseline={names[m]: v for m, v in zip(order, lc, strict=True)},
        win_rates=pairwise_wins(scores, groups=prompt_of, tie_eps=tie_eps, n=bootstrap, seed=seed),
        bradley_terry=Leaderboard(board, battles=fit["battles"], anchor=baseline),
    )
