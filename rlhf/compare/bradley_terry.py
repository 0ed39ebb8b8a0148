"""Bradley-Terry ratings from pairwise battles, on the Elo scale, with bootstrap confidence intervals — as
Chatbot Arena computes its leaderboard. Pure (numpy; the intervals from `rlhf.stats.bootstrap`), no I/O.

Model: P(i beats j) = sigmoid(b_i - b_j). A tie counts as half a win each way. The strengths maximise the
log-likelihood plus a weak ridge (`l2`, which keeps a model that never won finite and fixes the scale's
origin); Newton's method on the full Hessian converges in a few steps for the handful of checkpoints a
comparison holds. Ratings = 1000 + 400 * b / ln(10), shifted so that the `anchor` model (default: the mean)
sits at 1000: a 400-point gap means 10:1 odds.

Battles are (i, j, score) with score 1 when i won, 0 when j won, 0.5 for a tie (or any share in between:
the mean outcome of several samples on one prompt).

The intervals resample the independent unit. Human votes are independent: each is a unit. The reward-model
battles of one prompt are not — C(m, 2) battles share the same answers — so `groups` (the prompt of each
battle) makes the bootstrap resample whole prompts. Resampled one by one, correlated battles give intervals
that are too narrow: with 6 checkpoints of equal strength on 30 prompts, the 95 % intervals covered the
truth in 78 % of 200 simulations; resampling prompts, in >= 90 % (tests/test_compare_metrics.py).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

from rlhf import stats

ELO = 400.0 / math.log(10.0)


def win_matrix(battles: Sequence[tuple[int, int, float]], n: int) -> np.ndarray:
    """W[i, j] = weight of i beating j (ties split half and half)."""
    w = np.zeros((n, n))
    for i, j, s in battles:
        w[i, j] += s
        w[j, i] += 1.0 - s
    return w


def fit_strengths(w: np.ndarray, *, l2: float = 0.01, iters: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Bradley-Terry strengths (natural log-odds units) from a win matrix, by Newton's method."""
    n = w.shape[0]
    games = w + w.T
    b = np.zeros(n)
    for _ in range(iters):
        diff = b[:, None] - b[None, :]
        p = 1.0 / (1.0 + np.exp(-diff))
        grad = (w - games * p).sum(1) - 2 * l2 * b
        curv = games * p * (1 - p)
        hess = curv - np.diag(curv.sum(1)) - 2 * l2 * np.eye(n)
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]  # least squares: fine when l2 = 0 (the common
        # shift of all strengths is free; the min-norm step leaves it alone)
        b = b - step
        if np.abs(step).max() < tol:
            break
    return b


def elo(strengths: np.ndarray, anchor: int | None = None) -> np.ndarray:
    shift = strengths[anchor] if anchor is not None else strengths.mean()
    return 1000.0 + ELO * (strengths - shift)


def ratings(
    battles: Sequence[tuple[int, int, float]],
    n: int,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    anchor: int | None = None,
    l2: float = 0.01,
    groups: Sequence[Hashable] | None = None,
) -> dict:
    """{"rating": [n], "ci95": [[lo, hi]] * n, "p_best": [n], "battles": count} — CIs and the probability of
    being the best from `bootstrap` resamples (`rlhf.stats.bootstrap`) of the battles, or of their `groups`
    (one label per battle, e.g. its prompt) when given."""
    battles = list(battles)
    point = elo(fit_strengths(win_matrix(battles, n), l2=l2), anchor)
    if not battles or bootstrap <= 0:
        return {
            "rating": point.tolist(),
            "ci95": [[r, r] for r in point],
            "p_best": [1 / n] * n,
            "battles": 0,
        }
    arr = np.array(battles, dtype=float)
    i, j, score = arr[:, 0].astype(int), arr[:, 1].astype(int), arr[:, 2]

    def rated(idx: np.ndarray) -> np.ndarray:
        w = np.zeros((n, n))
        np.add.at(w, (i[idx], j[idx]), score[idx])
        np.add.at(w, (j[idx], i[idx]), 1.0 - score[idx])
        return elo(fit_strengths(w, l2=l2), anchor)

    ci = stats.bootstrap(rated, len(battles), resamples=bootstrap, seed=seed, groups=groups)
    best = np.bincount(ci.distribution.argmax(1), minlength=n) / bootstrap
    return {
        "rating": point.tolist(),
        "ci95": [[float(a), float(b)] for a, b in zip(ci.low, ci.high, strict=True)],
        "p_best": best.tolist(),
        "battles": len(battles),
    }


def expected_score(rating_a: float, rating_b: float) -> float:
    """P(a beats b) implied by two Elo-scale ratings."""
    return 1.0 / (1.0 + 10 ** ((rating_b - rating_a) / 400.0))
