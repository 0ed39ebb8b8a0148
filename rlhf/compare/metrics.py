"""The numbers `rlhf compare` reports, as pure functions of scores and lengths (numpy, scikit-learn; no I/O,
no models). Every interval is a percentile bootstrap (`rlhf.stats.bootstrap`, seeded) over the independent
unit: the **prompt**. A checkpoint may answer a prompt several times (`sampling.n`); its scores then come as
a flat list with a parallel list of prompt labels (`groups`; None: one answer per prompt, in prompt order).

- `mean_ci`, `rate_ci`: a mean, or a share of 1s (0.5 counts half), with its 95 % CI.
- `outcomes`: +1 / 0.5 / 0 for A over B by a score (a tie within `tie_eps`).
- `pairwise_wins`: the win-rate matrix with CIs; on a prompt, A's win over B is the mean outcome over every
  pair of their samples (one sample each: a single battle).
- `battles_from_scores`: one Bradley-Terry battle per pair of checkpoints per prompt (its score that mean
  outcome), with the prompt of each battle — the unit `bradley_terry.ratings` resamples.
- `battles_vs_baseline` + `length_controlled`: the length-controlled win rate as AlpacaEval 2 defines it.
  One GLM (scikit-learn's logistic regression) over every checkpoint's battles against the baseline:

      logit P(checkpoint m beats the baseline on prompt p) = theta_m + delta_p + phi_m * tanh(dlen / sd_m)

  theta_m: the checkpoint's quality; delta_p: the prompt's difficulty (an L2 prior of strength
  1 / `difficulty_c`, which pins its mean at 0 and keeps a prompt the baseline always loses finite); phi_m:
  how much the judge (reward model or LLM judge) rewards length, on the length difference in characters
  normalised by its standard deviation sd_m. The LC win rate is the model's mean prediction over the
  prompts with the length term at zero — the win rate between answers of equal length — and its CI a
  bootstrap over prompts (the GLM refitted on each resample). Outcomes may be fractional (a tie, or a
  judge's probability): each battle enters as a win with weight y and a loss with weight 1 - y.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from rlhf.compare.result import MeanCI, RateCI, VsBaseline, WinRates
from rlhf.stats import bootstrap

# Checkpoint and length columns are multiplied by this before the fit: the L2 penalty on their coefficients
# is then FREE**2 times weaker (a N(0, FREE**2 / C) prior in logits) — in effect unpenalised, while the prompt
# terms keep the N(0, C) prior that identifies them.
FREE = 10.0


def _mean_and_ci(values, groups, n: int, seed: int) -> tuple[float, list[float], int]:
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, [math.nan, math.nan], 0
    ci = bootstrap(lambda idx: x[idx].mean(), len(x), resamples=n, seed=seed, groups=groups)
    units = len(x) if groups is None else len(set(groups))
    return float(x.mean()), [float(ci.low), float(ci.high)], units


def mean_ci(
    values: Sequence[float], *, groups: Sequence[Hashable] | None = None, n: int = 1000, seed: int = 0
) -> MeanCI:
    """The mean with its 95 % CI (`n` resamples of the values, or of their `groups`); NaN for no values.
    `MeanCI.n` counts the resampled units."""
    return MeanCI(*_mean_and_ci(values, groups, n, seed))


def rate_ci(
    flags: Sequence[float], *, groups: Sequence[Hashable] | None = None, n: int = 1000, seed: int = 0
) -> RateCI:
    """Share of 1s (0.5 counts half) with its CI."""
    return RateCI(*_mean_and_ci(flags, groups, n, seed))


def outcomes(a, b, tie_eps: float = 0.0) -> np.ndarray:
    """Elementwise (numpy broadcasting): 1 when a > b, 0 when a < b, 0.5 when |a - b| <= tie_eps."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return np.where(np.abs(d) <= tie_eps, 0.5, (d > 0).astype(float))


def by_prompt(
    values: Sequence[Sequence[float]], groups: Sequence[Sequence[Hashable]] | None = None
) -> tuple[list[Hashable], list[list[np.ndarray]]]:
    """values[m]: checkpoint m's flat values, groups[m] their prompts (None: one value per prompt). Returns
    the prompts every checkpoint answered (in checkpoint 0's order) and, per checkpoint, per prompt, the
    array of its values there."""
    if groups is None:
        groups = [range(len(v)) for v in values]
    split = []
    for v, g in zip(values, groups, strict=True):
        per: dict[Hashable, list[float]] = {}
        for x, p in zip(v, g, strict=True):
            per.setdefault(p, []).append(float(x))
        split.append(per)
    prompts = [p for p in split[0] if all(p in s for s in split[1:])] if split else []
    return prompts, [[np.array(s[p]) for p in prompts] for s in split]


def prompt_outcome(a: np.ndarray, b: np.ndarray, tie_eps: float = 0.0) -> float:
    """A's win over B on one prompt: the mean outcome over every pair of their samples."""
    return float(outcomes(a[:, None], b[None, :], tie_eps).mean())


def _outcome_table(per: list[list[np.ndarray]], tie_eps: float) -> tuple[list[tuple[int, int]], np.ndarray]:
    pairs = list(combinations(range(len(per)), 2))
    table = np.array(
        [[prompt_outcome(a, b, tie_eps) for a, b in zip(per[i], per[j], strict=True)] for i, j in pairs]
    )
    return pairs, table.reshape(len(pairs), len(per[0]) if per else 0)


def pairwise_wins(
    scores: Sequence[Sequence[float]],
    *,
    groups: Sequence[Sequence[Hashable]] | None = None,
    tie_eps: float = 0.0,
    n: int = 1000,
    seed: int = 0,
) -> WinRates:
    """scores[m]: checkpoint m's scores (on the same prompts). The win-rate matrix (row beats column; the
    diagonal is 0.5) and its 95 % CIs, bootstrapped over prompts."""
    _, per = by_prompt(scores, groups)
    m = len(per)
    rate, lo, hi = np.full((m, m), 0.5), np.full((m, m), 0.5), np.full((m, m), 0.5)
    pairs, o = _outcome_table(per, tie_eps)  # (pair, prompt)
    if pairs and o.shape[1]:
        ci = bootstrap(lambda idx: o[:, idx].mean(1), o.shape[1], resamples=n, seed=seed)
        for k, (i, j) in enumerate(pairs):
            rate[i, j], lo[i, j], hi[i, j] = ci.estimate[k], ci.low[k], ci.high[k]
            rate[j, i], lo[j, i], hi[j, i] = 1 - rate[i, j], 1 - hi[i, j], 1 - lo[i, j]
    return WinRates(rate.tolist(), lo.tolist(), hi.tolist())


def battles_from_scores(
    scores: Sequence[Sequence[float]],
    tie_eps: float = 0.0,
    *,
    groups: Sequence[Sequence[Hashable]] | None = None,
) -> tuple[list[tuple[int, int, float]], list[Hashable]]:
    """Every pair of checkpoints on every prompt as one Bradley-Terry battle (i, j, mean outcome of i over
    j there), and the prompt of each battle: the C(m, 2) battles of a prompt are correlated, so a bootstrap
    resamples prompts, not battles."""
    prompts, per = by_prompt(scores, groups)
    pairs, o = _outcome_table(per, tie_eps)
    battles = [(i, j, float(x)) for k, (i, j) in enumerate(pairs) for x in o[k]]
    return battles, [p for _ in pairs for p in prompts]


# -- length-controlled win rate (AlpacaEval 2) ---------------------------------------------------------------


@dataclass(frozen=True)
class BaselineBattles:
    """Battles of checkpoints (0..k-1, the baseline not among them) against the baseline, one row each."""

    checkpoint: np.ndarray  # int
    prompt: np.ndarray  # the prompt's label
    outcome: np.ndarray  # 1 win, 0 loss, 0.5 tie — or a probability of winning (a judge's preference)
    length_diff: np.ndarray  # the checkpoint's answer length minus the baseline's
    weight: np.ndarray  # each (checkpoint, prompt) weighs 1 in all

    @property
    def checkpoints(self) -> int:
        return int(self.checkpoint.max()) + 1 if len(self.checkpoint) else 0


def battles_vs_baseline(
    scores: Sequence[Sequence[float]],
    lengths: Sequence[Sequence[float]],
    baseline: int,
    *,
    groups: Sequence[Sequence[Hashable]] | None = None,
    tie_eps: float = 0.0,
) -> tuple[list[int], BaselineBattles]:
    """Each checkpoint but `baseline` against it, on each prompt both answered: every pair of their samples
    is a battle (weight 1 / pairs). Returns the checkpoints' indices (row k of the battles is checkpoint
    `order[k]`) and the battles."""
    _, per = by_prompt(scores, groups)
    _, lens = by_prompt(lengths, groups)
    order = [m for m in range(len(per)) if m != baseline]
    cols: dict[str, list] = {k: [] for k in ("checkpoint", "prompt", "outcome", "length_diff", "weight")}
    for k, m in enumerate(order):
        for p, (s, b, ls, lb) in enumerate(zip(per[m], per[baseline], lens[m], lens[baseline], strict=True)):
            y = outcomes(s[:, None], b[None, :], tie_eps).ravel()
            cols["outcome"].append(y)
            cols["length_diff"].append((ls[:, None] - lb[None, :]).ravel())
            cols["weight"].append(np.full(len(y), 1.0 / len(y)))
            cols["checkpoint"].append(np.full(len(y), k))
            cols["prompt"].append(np.full(len(y), p))
    arrays = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    arrays["checkpoint"] = arrays["checkpoint"].astype(int)
    return order, BaselineBattles(**arrays)


def _length_scale(b: BaselineBattles) -> np.ndarray:
    """Per checkpoint: the standard deviation of its length differences (1 where they do not vary)."""
    sd = np.array([b.length_diff[b.checkpoint == k].std() for k in range(b.checkpoints)])
    return np.where(sd > 0, sd, 1.0)


def _glm(b: BaselineBattles, scale: np.ndarray, difficulty_c: float) -> np.ndarray:
    """Per checkpoint: [raw win rate, LC win rate, length coefficient phi]."""
    k, rows = b.checkpoints, len(b.outcome)
    _, p_idx = np.unique(b.prompt, return_inverse=True)
    x = np.tanh(b.length_diff / scale[b.checkpoint])
    design = sparse.csr_matrix(
        (
            np.concatenate([np.full(rows, FREE), FREE * x, np.ones(rows)]),
            (np.tile(np.arange(rows), 3), np.concatenate([b.checkpoint, k + b.checkpoint, 2 * k + p_idx])),
        ),
        shape=(rows, 2 * k + p_idx.max() + 1),
    )
    # Newton-Cholesky: 2k + one column per prompt, and exact Newton steps converge in a handful of
    # iterations — 300 bootstrap fits took 20 s with lbfgs and 1.2 s with it, to the same 4 decimals. When
    # its line search stalls (the start is already the optimum: equal models) sklearn finishes with lbfgs,
    # which is correct; its warning about that switch is not the user's business
    fit = LogisticRegression(
        C=difficulty_c, fit_intercept=False, solver="newton-cholesky", max_iter=2000, tol=1e-8
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Line search of Newton solver")
        fit.fit(
            sparse.vstack([design, design]),
            np.r_[np.ones(rows), np.zeros(rows)],
            sample_weight=np.r_[b.weight * b.outcome, b.weight * (1 - b.outcome)],
        )
    coef = fit.coef_[0]
    theta, phi, delta = FREE * coef[:k], FREE * coef[k : 2 * k], coef[2 * k :]
    at_equal_length = 1.0 / (1.0 + np.exp(-(theta[b.checkpoint] + delta[p_idx])))
    out = np.zeros((k, 3))
    for m in range(k):
        w = b.weight[b.checkpoint == m]
        out[m, 0] = (w * b.outcome[b.checkpoint == m]).sum() / w.sum()
        out[m, 1] = (w * at_equal_length[b.checkpoint == m]).sum() / w.sum()
        out[m, 2] = phi[m]
    return out


def length_controlled(
    b: BaselineBattles, *, n: int = 300, seed: int = 0, difficulty_c: float = 1.0
) -> list[VsBaseline]:
    """Raw and length-controlled win rates over the baseline, per checkpoint of the battles, with 95 % CIs
    from `n` bootstrap resamples of the prompts (see the module doc)."""
    if not len(b.outcome):
        return []
    scale = _length_scale(b)
    point = _glm(b, scale, difficulty_c)

    def rates(idx: np.ndarray) -> np.ndarray:
        sub = BaselineBattles(*(getattr(b, f)[idx] for f in BaselineBattles.__dataclass_fields__))
        return _glm(sub, scale, difficulty_c)[:, :2]

    ci = bootstrap(rates, len(b.outcome), resamples=n, seed=seed, groups=b.prompt.tolist())
    return [
        VsBaseline(
            float(point[m, 0]),
            float(point[m, 1]),
            float(point[m, 2]),
            win_rate_ci95=[float(ci.low[m, 0]), float(ci.high[m, 0])],
            lc_win_rate_ci95=[float(ci.low[m, 1]), float(ci.high[m, 1])],
        )
        for m in range(b.checkpoints)
    ]


def overlapping(ci_a: Sequence[float], ci_b: Sequence[float]) -> bool:
    return ci_a[0] <= ci_b[1] and ci_b[0] <= ci_a[1]
