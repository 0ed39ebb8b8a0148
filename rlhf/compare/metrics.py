"""The numbers `rlhf compare` reports, as pure functions of scores and lengths (numpy, no I/O, no models).

- `mean_ci`: a mean with a percentile-bootstrap 95 % CI.
- `pairwise_wins`: per prompt, +1 / 0.5 / 0 for A over B by a score (a tie within `tie_eps`), and the
  win-rate matrix with bootstrap CIs over prompts.
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


def bootstrap(values: Sequence[float], stat=np.mean, *, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap 95 % interval of `stat` over `values` (resampled with replacement)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    stats = np.array([stat(x[rng.integers(0, len(x), len(x))]) for _ in range(n)])
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def mean_ci(values: Sequence[float], *, n: int = 1000, seed: int = 0) -> dict:
    x = np.asarray(values, dtype=float)
    return {
        "mean": float(x.mean()) if len(x) else math.nan,
        "ci95": list(bootstrap(x, n=n, seed=seed)),
        "n": len(x),
    }


def rate_ci(flags: Sequence[float], *, n: int = 1000, seed: int = 0) -> dict:
    """Share of 1s (0.5 counts half) with its CI."""
    x = np.asarray(flags, dtype=float)
    return {
        "rate": float(x.mean()) if len(x) else math.nan,
        "ci95": list(bootstrap(x, n=n, seed=seed)),
        "n": len(x),
    }


def outcomes(a: Sequence[float], b: Sequence[float], tie_eps: float = 0.0) -> np.ndarray:
    """Per prompt: 1 when a > b, 0 when a < b, 0.5 when |a - b| <= tie_eps."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return np.where(np.abs(d) <= tie_eps, 0.5, (d > 0).astype(float))


def pairwise_wins(
    scores: Sequence[Sequence[float]], *, tie_eps: float = 0.0, n: int = 1000, seed: int = 0
) -> dict:
    """scores[m][p]: model m's score on prompt p (all models on the same prompts). Returns the win-rate
    matrix (row beats column; the diagonal is 0.5) and its 95 % CIs, bootstrapped over prompts."""
    s = np.asarray(scores, dtype=float)
    m = s.shape[0]
    rate = np.full((m, m), 0.5)
    lo, hi = np.full((m, m), 0.5), np.full((m, m), 0.5)
    for i, j in combinations(range(m), 2):
        o = outcomes(s[i], s[j], tie_eps)
        rate[i, j], rate[j, i] = o.mean(), 1 - o.mean()
        lo[i, j], hi[i, j] = bootstrap(o, n=n, seed=seed)
        lo[j, i], hi[j, i] = 1 - hi[i, j], 1 - lo[i, j]
    return {"rate": rate.tolist(), "ci95_low": lo.tolist(), "ci95_high": hi.tolist()}


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
) -> dict:
    """{"win_rate", "lc_win_rate", "length_coef"} of a model against the baseline (see the module doc)."""
    y = outcomes(model_scores, base_scores, tie_eps)
    d = np.asarray(model_lengths, dtype=float) - np.asarray(base_lengths, dtype=float)
    scale = scale if scale is not None else float(d.std()) or 1.0
    theta, phi = _logistic_fit(np.tanh(d / scale), y)
    return {"win_rate": float(y.mean()), "lc_win_rate": 1.0 / (1.0 + math.exp(-theta)), "length_coef": phi}


def lc_win_rate_ci(
    model_scores, base_scores, model_lengths, base_lengths, *, tie_eps=0.0, n: int = 300, seed: int = 0
) -> dict:
    """`length_controlled_win_rate` with 95 % CIs (bootstrap over prompts) for both rates."""
    point = length_controlled_win_rate(
        model_scores, base_scores, model_lengths, base_lengths, tie_eps=tie_eps
    )
    arrays = [np.asarray(v, dtype=float) for v in (model_scores, base_scores, model_lengths, base_lengths)]
    rng = np.random.default_rng(seed)
    k = len(arrays[0])
    raw, lc = [], []
    for _ in range(n):
        idx = rng.integers(0, k, k)
        r = length_controlled_win_rate(*(a[idx] for a in arrays), tie_eps=tie_eps)
        raw.append(r["win_rate"])
        lc.append(r["lc_win_rate"])
    point["win_rate_ci95"] = [float(x) for x in np.percentile(raw, [2.5, 97.5])]
    point["lc_win_rate_ci95"] = [float(x) for x in np.percentile(lc, [2.5, 97.5])]
    return point


def overlapping(ci_a: Sequence[float], ci_b: Sequence[float]) -> bool:
    return ci_a[0] <= ci_b[1] and ci_b[0] <= ci_a[1]
