"""Pure maths of checkpoint comparison, against hand-computed values and planted effects."""

import math

import numpy as np
import pytest

from rlhf.compare import bradley_terry as bt
from rlhf.compare import human_agreement
from rlhf.compare import metrics as cm


def simulate(strengths, battles, seed, tie_rate=0.0):
    rng = np.random.default_rng(seed)
    n = len(strengths)
    out = []
    for _ in range(battles):
        i, j = rng.choice(n, 2, replace=False)
        p = 1 / (1 + math.exp(-(strengths[i] - strengths[j])))
        if rng.random() < tie_rate:
            out.append((int(i), int(j), 0.5))
        else:
            out.append((int(i), int(j), float(rng.random() < p)))
    return out


def test_bt_two_models_by_hand():
    # 3 wins of A over B and 1 of B over A: the MLE gives P(A beats B) = 3/4, b_A - b_B = ln 3
    w = bt.win_matrix([(0, 1, 1.0)] * 3 + [(0, 1, 0.0)], 2)
    assert w.tolist() == [[0.0, 3.0], [1.0, 0.0]]
    b = bt.fit_strengths(w, l2=0.0)
    assert b[0] - b[1] == pytest.approx(math.log(3), abs=1e-6)
    r = bt.elo(b)
    assert r[0] - r[1] == pytest.approx(400 * math.log10(3), abs=1e-3)
    assert r.mean() == pytest.approx(1000)
    assert bt.expected_score(r[0], r[1]) == pytest.approx(0.75, abs=1e-6)
    # a tie is half a win each way: 1 win + 2 ties -> 2 : 1 -> ln 2
    b = bt.fit_strengths(bt.win_matrix([(0, 1, 1.0), (0, 1, 0.5), (0, 1, 0.5)], 2), l2=0.0)
    assert b[0] - b[1] == pytest.approx(math.log(2), abs=1e-6)


def test_bt_recovers_planted_strengths():
    true = np.array([0.0, 0.5, 1.0, -0.7])
    fit = bt.fit_strengths(bt.win_matrix(simulate(true, 6000, seed=0), 4))
    np.testing.assert_allclose(fit - fit[0], true - true[0], atol=0.12)
    assert list(np.argsort(fit)) == [3, 0, 1, 2]


def test_bt_never_winning_stays_finite_and_anchor_sets_the_origin():
    r = bt.ratings([(0, 1, 1.0)] * 20, 2, bootstrap=50, anchor=1)
    assert r["rating"][1] == pytest.approx(1000)
    assert math.isfinite(r["rating"][0])
    assert r["rating"][0] > 1500
    assert r["p_best"] == [1.0, 0.0]


def test_bt_ci_covers_the_truth_at_about_the_stated_rate():
    true = np.array([0.0, 0.4, -0.4])
    covered, total = 0, 0
    for seed in range(20):
        res = bt.ratings(simulate(true, 600, seed), 3, bootstrap=150, seed=seed, anchor=0)
        for k in (1, 2):
            lo, hi = res["ci95"][k]
            covered += lo <= 1000 + bt.ELO * (true[k] - true[0]) <= hi
            total += 1
    assert covered / total >= 0.85, covered / total  # nominal 0.95; 40 intervals


def test_win_rates_and_ties_by_hand():
    a, b, c = [3.0, 1.0, 2.0, 5.0], [1.0, 1.0, 4.0, 5.05], [0.0, 0.0, 0.0, 9.0]
    assert cm.outcomes(a, b).tolist() == [1.0, 0.5, 0.0, 0.0]
    assert cm.outcomes(a, b, tie_eps=0.1).tolist() == [1.0, 0.5, 0.0, 0.5]
    res = cm.pairwise_wins([a, b, c], n=200)
    rate = np.array(res.rate)
    assert rate[0, 1] == pytest.approx(1.5 / 4)
    assert rate[1, 0] == pytest.approx(2.5 / 4)
    assert rate[0, 2] == pytest.approx(0.75)
    assert np.diag(rate).tolist() == [0.5, 0.5, 0.5]
    lo, hi = np.array(res.ci95_low), np.array(res.ci95_high)
    assert (lo <= rate + 1e-9).all()
    assert (rate <= hi + 1e-9).all()
    assert lo[1, 0] == pytest.approx(1 - hi[0, 1])
    assert cm.battles_from_scores([a, b], tie_eps=0.1) == [(0, 1, 1.0), (0, 1, 0.5), (0, 1, 0.0), (0, 1, 0.5)]


def test_mean_and_rate_with_ci():
    m = cm.mean_ci([1.0, 2.0, 3.0, 4.0], n=500)
    assert m.mean == 2.5
    assert m.n == 4
    assert 1.0 <= m.ci95[0] < 2.5 < m.ci95[1] <= 4.0
    r = cm.rate_ci([1, 1, 0, 0.5], n=500)
    assert r.rate == pytest.approx(0.625)
    assert r.ci95[0] <= 0.625 <= r.ci95[1]
    assert cm.overlapping([0.1, 0.5], [0.4, 0.9])
    assert not cm.overlapping([0.1, 0.3], [0.4, 0.9])


def test_length_control_removes_a_planted_length_effect():
    rng = np.random.default_rng(0)
    n = 2000
    base_len = rng.integers(20, 200, n).astype(float)
    model_len = base_len + rng.normal(60, 60, n)  # the model writes longer answers...
    d = np.tanh((model_len - base_len) / (model_len - base_len).std())
    p_win = 1 / (1 + np.exp(-(0.0 + 2.5 * d)))  # ...and wins only because of length (quality term 0)
    wins = (rng.random(n) < p_win).astype(float)
    res = cm.length_controlled_win_rate(wins, np.full(n, 0.5), model_len, base_len)
    assert res.win_rate > 0.7  # raw: looks much better
    assert res.lc_win_rate == pytest.approx(0.5, abs=0.05)  # length-controlled: no better
    assert res.length_coef == pytest.approx(2.5, abs=0.4)
    # a real quality gap survives the control
    p_win = 1 / (1 + np.exp(-(1.0 + 2.5 * d)))
    wins = (rng.random(n) < p_win).astype(float)
    res = cm.lc_win_rate_ci(wins, np.full(n, 0.5), model_len, base_len, n=50)
    assert res.lc_win_rate == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.05)
    assert res.lc_win_rate_ci95[0] <= res.lc_win_rate <= res.lc_win_rate_ci95[1]
    assert res.win_rate_ci95[0] <= res.win_rate <= res.win_rate_ci95[1]


def test_human_agreement_on_hand_built_pairs():
    # 4 pairs: log-probs of chosen / rejected under the policy and the reference
    policy = ([-10.0, -12.0, -8.0, -5.0], [-11.0, -9.0, -8.0, -6.0])
    reference = ([-12.0, -10.0, -9.0, -5.0], [-10.0, -10.0, -8.0, -4.0])
    # implicit reward differences (chosen - rejected) / beta: (2 - -1)=+3, (-2 - 1)=-3, (1 - 0)=+1, (0 - -2)=+2
    # -> agree, disagree, agree, agree = 0.75; plain log-prob: -10>-11 yes, -12>-9 no, tie 0.5, -5>-6 yes = 0.625
    res = human_agreement(policy, reference, beta=0.1, bootstrap=200)
    assert res.implicit_reward.rate == pytest.approx(0.75)
    assert res.logprob.rate == pytest.approx(0.625)
    assert res.implicit_reward.n == 4
    same = human_agreement(reference, reference, beta=0.1, bootstrap=50)
    assert same.implicit_reward.rate == 0.5  # the reference against itself: every pair a tie
