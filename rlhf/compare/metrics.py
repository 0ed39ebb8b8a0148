"""The numbers `rlhf compare` reports, as pure functions of scores and lengths (numpy, no I/O, no models).
Every interval is a percentile bootstrap over prompts (`rlhf.stats.bootstrap`, seeded).

- `mean_ci`: a mean with its 95 % CI.
- `pairwise_wins`: per prompt, +1 / 0.5 / 0 for A over B by a score (a tie within `tie_eps`), and the
  win-rate matrix with CIs (one bootstrap over prompts for every pair).
- `length_controlled_win_rate`: AlpacaEval-2-LC style. Regress the outcome (win 1, tie 0.5, loss 0) of a
  model against the baseline on the length difference: logit P(win) = theta + phi * tanh(dlen / scale);
  the LC win rate is sigmoid(theta), the prediction with the length term set to zero — what the win rate
  would be between answers of equal length. `scale` is the standard deviation of the length differences.
- `rate_ci`: the share of True with its CI (human agreement, judge choices).
- `battles_from_scores`: every pair of checkpoints on every prompt as a Bradley-Terry battle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from rlhf.compare.result import LengthControlled, MeanCI, RateCI, VsBaseline, WinRates
from rlhf.stats import bootstrap


def _mean_and_ci(values: Sequence[float], n: int, seed: int) -> tuple[float, list[float], int]:
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, [math.nan, math.nan], 0
    ci = bootstrap(lambda idx: x[idx].mean(), len(x), resamples=n, seed=seed)
    return ci.estimate, [ci.low, ci.high], len(x)


def mean_ci(values: Sequence[float], *, n: int = 1000, seed: int = 0) -> MeanCI:
    """The mean with its 95 % CI (`n` resamples); NaN for no values."""
    return MeanCI(*_mean_and_ci(values, n, seed))


def rate_ci(flags: Sequence[float], *, n: int = 1000, seed: int = 0) -> RateCI:
    """Share of 1s (0.5 counts half) with its CI."""
    return RateCI(*_mean_and_ci(flags, n, seed))


def outcomes(a: Sequence[float], b: Sequence[float], tie_eps: float = 0.0) -> np.ndarray:
    """Per prompt: 1 when a > b, 0 when a < b, 0.5 when |a - b| <= tie_eps."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return np.where(np.abs(d) <= tie_eps, 0.5, (d > 0).astype(float))


def pairwise_wins(
    scores: Sequence[Sequence[float]], *, tie_eps: float = 0.0, n: int = 1000, seed: int = 0
) -> WinRates:
    """scores[m][p]: model m's score on prompt p (all models on the same prompts). The win-rate matrix (row
    beats column; the diagonal is 0.5) and its 95 % CIs, bootstrapped over prompts."""
    s = np.asarray(scores, dtype=float)
    m = s.shape[0]
    rate, lo, hi = np.full((m, m), 0.5), np.full((m, m), 0.5), np.full((m, m), 0.5)
    pairs = list(combinations(range(m), 2))
    if pairs and s.shape[1]:
        o = np.stack([outcomes(s[i], s[j], tie_eps) for i, j in pairs])  # (pair, prompt)
        ci = bootstrap(lambda idx: o[:, idx].mean(1), o.shape[1], resamples=n, seed=seed)
        for k, (i, j) in enumerate(pairs):
            rate[i, j], lo[i, j], hi[i, j] = ci.estimate[k], ci.low[k], ci.high[k]
            rate[j, i], lo[j, i], hi[j, i] = 1 - rate[i, j], 1 - hi[i, j], 1 - lo[i, j]
    return WinRates(rate.tolist(), lo.tolist(), hi.tolist())


def battles_from_scores(
    scores: Sequence[Sequence[float]], tie_eps: float = 0.0
) -> list[tuple[int, int, float]]:
    s = np.asarray(scores, dtype=float)
    out = []
    for i, j in combinations(range(s.shape[0]), 2):
        out += [(i, j, float(o)) for o in outcomes(s[i], s[j], tie_eps)]
    return out


def _logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-4, iters: int = 50) -> tuple[float, float]:
    """Two-parameter logistic regression (intercept, slope) with fractional targets, by Newton's method."""
    X = np.stack([np.ones_like(x), x], 1)
    w = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (y - p) - 2 * l2 * w
        hess = -(X.T * (p * (1 - p))) @ X - 2 * l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def length_controlled_win_rate(
    model_scores: Sequence[float],
    base_scores: Sequence[float],
    model_lengths: Sequence[float],
    base_lengths: Sequence[float],
    *,
    tie_eps: float = 0.0,
    scale: float | None = None,
) -> LengthControlled:
    """Raw and length-controlled win rates of a model against the baseline (see the module doc)."""
    y = outcomes(model_scores, base_scores, tie_eps)
    d = np.asarray(model_lengths, dtype=float) - np.asarray(base_lengths, dtype=float)
    scale = scale if scale is not None else float(d.std()) or 1.0
    theta, phi = _logistic_fit(np.tanh(d / scale), y)
    return LengthControlled(float(y.mean()), 1.0 / (1.0 + math.exp(-theta)), phi)


def lc_win_rate_ci(
    model_scores, base_scores, model_lengths, base_lengths, *, tie_eps=0.0, n: int = 300, seed: int = 0
) -> VsBaseline:
    """`length_controlled_win_rate` with 95 % CIs (bootstrap over prompts) for both rates."""
    arrays = [np.asarray(v, dtype=float) for v in (model_scores, base_scores, model_lengths, base_lengths)]

    def both_rates(idx: np.ndarray) -> np.ndarray:
        r = length_controlled_win_rate(*(a[idx] for a in arrays), tie_eps=tie_eps)
        return np.array([r.win_rate, r.lc_win_rate])

    point = length_controlled_win_rate(*arrays, tie_eps=tie_eps)
    ci = bootstrap(both_rates, len(arrays[0]), resamples=n, seed=seed)
    return VsBaseline(
        point.win_rate,
        point.lc_win_rate,
        point.length_coef,
        win_rate_ci95=[float(ci.low[0]), float(ci.high[0])],
        lc_win_rate_ci95=[float(ci.low[1]), float(ci.high[1])],
    )


def overlapping(ci_a: Sequence[float], ci_b: Sequence[float]) -> bool:
    return ci_a[0] <= ci_b[1] and ci_b[0] <= ci_a[1]
