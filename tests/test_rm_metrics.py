import math

import pytest

from rlhf.reward import metrics as m


def test_accuracy_counts_ties_as_half():
    assert m.accuracy([2.0, 1.0, 0.5, 3.0], [1.0, 2.0, 0.5, 0.0]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_accuracy_ci_brackets_the_accuracy_and_collapses_on_constant():
    chosen, rejected = [1.0] * 70 + [0.0] * 30, [0.5] * 100  # 70 of 100 pairs ordered right
    lo, hi = m.accuracy_ci(chosen, rejected, resamples=500, seed=1)
    assert lo < 0.7 < hi
    assert lo > 0.55
    assert hi < 0.85
    assert m.accuracy_ci(chosen, rejected, resamples=500, seed=1) == (lo, hi)  # seeded
    assert m.accuracy_ci([2.0] * 10, [1.0] * 10, resamples=100) == (1.0, 1.0)
    assert m.accuracy_ci([1.0, 1.0], [1.0, 1.0], resamples=100) == (0.5, 0.5)  # ties count one half
    with pytest.raises(ValueError, match="no pairs"):
        m.accuracy_ci([], [])


def test_calibration_by_hand():
    # one pair with diff ln(3): p(chosen) = 0.75 (label 1), p(rejected) = 0.25 (label 0)
    out = m.calibration([math.log(3)], [0.0], bins=4)
    assert out["bins"] == [
        {"bin": [0.25, 0.5], "mean_p": pytest.approx(0.25), "freq": 0.0, "count": 1},
        {"bin": [0.75, 1.0], "mean_p": pytest.approx(0.75), "freq": 1.0, "count": 1},
    ]
    assert out["ece"] == pytest.approx(0.25)  # each point is 0.25 off, half of the points each


def test_length_baseline_and_pearson():
    assert m.length_baseline([10, 5, 7], [3, 9, 7]) == pytest.approx((1 + 0 + 0.5) / 3)
    assert m.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert m.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert m.pearson([1, 1, 1], [1, 2, 3]) is None


def test_grouped_accuracy():
    out = m.grouped_accuracy(["ann", "bob", "ann", None], [1.0, 0.0, 0.0, 1.0])
    assert out == {"ann": {"pairs": 2, "accuracy": 0.5}, "bob": {"pairs": 1, "accuracy": 0.0}}


def test_human_ceiling_leave_one_out():
    votes = [
        ("i1", "a", "x"),
        ("i1", "b", "x"),
        ("i1", "c", "y"),  # a: others x,y tie -> skip; b same; c: others x,x -> disagree
        ("i2", "a", "x"),
        ("i2", "b", "x"),  # each agrees with the other
        ("i3", "a", "x"),
    ]  # single vote: ignored
    assert m.human_ceiling(votes) == {"votes_compared": 3, "agreement": pytest.approx(2 / 3)}
    assert m.human_ceiling([("i", "a", "x")]) is None


def test_ensemble_accuracy_by_hand():
    from rlhf.reward.metrics import ensemble_accuracy

    # 2 members x 3 pairs; margins: member 0 [1, -1, 2], member 1 [3, 1, -4]
    chosen = [[1.0, 0.0, 2.0], [3.0, 1.0, 0.0]]
    rejected = [[0.0, 1.0, 0.0], [0.0, 0.0, 4.0]]
    out = ensemble_accuracy(chosen, rejected)
    assert out["members"] == 2
    assert out["member_accuracy"] == [2 / 3, 2 / 3]
    # mean margins [2, 0, -1]: right, tie (half), wrong -> 0.5
    assert out["mean_accuracy"] == 0.5
    # spreads (population std of the two margins): 1, 1, 3 -> mean 5/3
    assert abs(out["mean_margin_spread"] - 5 / 3) < 1e-12
