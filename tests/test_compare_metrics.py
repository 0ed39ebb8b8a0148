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
    battles, prompts = cm.battles_from_scores([a, b], tie_eps=0.1)
    assert battles == [(0, 1, 1.0), (0, 1, 0.5), (0, 1, 0.0), (0, 1, 0.5)]
    assert prompts == [0, 1, 2, 3]


def test_several_samples_per_prompt_are_averaged_per_prompt():
    # two checkpoints, two prompts, two samples each; groups give each score's prompt
    a, ga = [3.0, 1.0, 0.0, 0.0], [0, 0, 1, 1]
    b, gb = [2.0, 2.0, 1.0, -1.0], [0, 0, 1, 1]
    # prompt 0: a's {3, 1} vs b's {2, 2}: 2 of 4 sample pairs won -> 0.5; prompt 1: {0, 0} vs {1, -1}: 0.5
    battles, prompts = cm.battles_from_scores([a, b], groups=[ga, gb])
    assert battles == [(0, 1, 0.5), (0, 1, 0.5)]
    assert prompts == [0, 1]
    res = cm.pairwise_wins([a, [5.0, 5.0, -5.0, -5.0]], groups=[ga, gb], n=50)
    assert res.rate[0][1] == pytest.approx(0.5)  # prompt 0 lost, prompt 1 won
    m = cm.mean_ci(a, groups=ga, n=50)
    assert m.mean == 1.0
    assert m.n == 2  # two prompts: the unit the interval resamples


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


def planted_battles(seed, prompts, theta, extra_length, phi=2.5):
    """Checkpoints 1.. against baseline 0: quality theta[m] (logits), answers extra_length[m] characters
    longer on average, per-prompt difficulty, and a judge that rewards length by phi. Returns the scores
    (+0.5 win / -0.5 loss against the baseline's 0), the lengths, and the planted LC win rates."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1, prompts)
    base_len = rng.integers(20, 200, prompts).astype(float)
    scores, lengths, truth = [np.zeros(prompts)], [base_len], []
    for t, extra in zip(theta, extra_length, strict=True):
        length = base_len + rng.normal(extra, 40, prompts)
        d = length - base_len
        p_win = 1 / (1 + np.exp(-(t + difficulty + phi * np.tanh(d / d.std()))))
        scores.append((rng.random(prompts) < p_win) - 0.5)
        lengths.append(length)
        truth.append(float(np.mean(1 / (1 + np.exp(-(t + difficulty))))))
    return scores, lengths, truth


def test_length_control_removes_a_planted_length_effect():
    # 1: longer answers, no better; 2: better, same length; 3: longer and better
    scores, lengths, truth = planted_battles(0, 800, theta=[0.0, 1.0, 1.0], extra_length=[60, 0, 60])
    order, battles = cm.battles_vs_baseline(scores, lengths, baseline=0)
    assert order == [1, 2, 3]
    res = cm.length_controlled(battles, n=20)
    assert res[0].win_rate > 0.7  # raw: looks much better...
    assert res[0].lc_win_rate == pytest.approx(truth[0], abs=0.05)  # ...length-controlled: no better
    assert res[1].lc_win_rate == pytest.approx(truth[1], abs=0.05)  # a real quality gap survives
    assert res[2].lc_win_rate == pytest.approx(truth[2], abs=0.05)
    assert res[2].win_rate - res[2].lc_win_rate > 0.1
    assert res[0].length_coef > 1.5
    for r in res:
        assert r.lc_win_rate_ci95[0] <= r.lc_win_rate <= r.lc_win_rate_ci95[1]
        assert r.win_rate_ci95[0] <= r.win_rate <= r.win_rate_ci95[1]


def test_length_control_of_equal_models_is_one_half():
    scores, lengths, _ = planted_battles(1, 400, theta=[0.0, 0.0], extra_length=[0, 0], phi=0.0)
    _, battles = cm.battles_vs_baseline(scores, lengths, baseline=0)
    for r in cm.length_controlled(battles, n=20):
        assert r.lc_win_rate == pytest.approx(0.5, abs=0.05)
        assert r.lc_win_rate_ci95[0] < 0.5 < r.lc_win_rate_ci95[1]
    # a judge's preference of exactly 0.5 everywhere (fractional outcomes): 0.5, whatever the lengths
    tied = cm.BaselineBattles(
        checkpoint=np.zeros(50, dtype=int),
        prompt=np.arange(50),
        outcome=np.full(50, 0.5),
        length_diff=np.random.default_rng(0).normal(0, 30, 50),
        weight=np.ones(50),
    )
    (r,) = cm.length_controlled(tied, n=10)
    assert r.win_rate == 0.5
    assert r.lc_win_rate == pytest.approx(0.5, abs=1e-6)


def test_bt_intervals_over_prompts_cover_correlated_battles():
    # 6 checkpoints of equal strength; on each prompt every checkpoint's answer has its own quality, so
    # the C(6, 2) battles of a prompt are correlated. Resampled battle by battle the 95 % intervals cover
    # the truth (1000 for all, anchored on the mean) in ~78 % of runs; resampled by prompt in >= 90 %.
    covered = total = 0
    for seed in range(200):
        quality = np.random.default_rng(seed).normal(size=(6, 30))  # (checkpoint, prompt)
        battles, prompts = cm.battles_from_scores(quality)
        res = bt.ratings(battles, 6, bootstrap=200, seed=seed, groups=prompts)
        covered += sum(lo <= 1000 <= hi for lo, hi in res["ci95"])
        total += 6
    assert covered / total >= 0.9, covered / total


def test_human_agreement_on_hand_built_pairs():
    from rlhf.compare import PairLogprobs

    # 4 pairs: log-probs of chosen / rejected under the policy and the reference, and token counts
    policy = PairLogprobs([-10.0, -12.0, -8.0, -5.0], [-11.0, -9.0, -8.0, -6.0], [10, 4, 2, 5], [5, 3, 4, 2])
    reference = PairLogprobs(
        [-12.0, -10.0, -9.0, -5.0], [-10.0, -10.0, -8.0, -4.0], [10, 4, 2, 5], [5, 3, 4, 2]
    )
    # implicit reward differences (chosen - rejected): (2 - -1)=+3, (-2 - 1)=-3, (1 - 0)=+1, (0 - -2)=+2
    # -> agree, disagree, agree, agree = 0.75; summed log-prob: -10>-11 yes, -12>-9 no, tie 0.5, -5>-6 yes
    # = 0.625; per token: -1.0>-2.2 yes, -3.0>-3.0 tie, -4.0<-2.0 no, -1.0>-3.0 yes = 0.625
    res = human_agreement(
        policy, reference, reference_name="sft", reference_source="configured", bootstrap=200
    )
    assert res.implicit_reward.rate == pytest.approx(0.75)
    assert res.logprob.rate == pytest.approx(0.625)
    assert res.logprob_per_token.rate == pytest.approx(0.625)
    assert res.implicit_reward.n == 4
    assert res.reference == "sft"
    # the reference's own log-prob agreement: -12<-10 no, -10=-10 tie, -9<-8 no, -5<-4 no = 0.125
    assert res.logprob_vs_reference.mean == pytest.approx(0.625 - 0.125)
    same = human_agreement(
        reference, reference, reference_name="base", reference_source="configured", bootstrap=50
    )
    assert same.implicit_reward.rate == 0.5  # the reference against itself: every pair a tie
    alone = human_agreement(policy, None, reference_name="x", reference_source="y", bootstrap=50)
    assert alone.implicit_reward is None  # another vocabulary: no implicit reward, the log-probs remain
    assert alone.logprob.rate == pytest.approx(0.625)
