"""`rlhf.stats.bootstrap`, the one bootstrap behind every interval: hand-computed cases, seeding, vector
statistics, and resampling groups (clusters) instead of units."""

import numpy as np
import pytest

from rlhf.stats import bootstrap


def mean_of(x):
    x = np.asarray(x, dtype=float)
    return lambda idx: x[idx].mean()


def test_constant_data_gives_a_zero_width_interval():
    ci = bootstrap(mean_of([3.0] * 10), 10, resamples=200)
    assert ci.estimate == 3.0
    assert ci.interval == (3.0, 3.0)
    assert ci.distribution.shape == (200,)
    assert (ci.distribution == 3.0).all()


def test_the_interval_of_a_known_mean_covers_it_with_the_textbook_width():
    x = np.arange(100.0)  # mean 49.5, population sd 28.866 -> standard error 2.887
    ci = bootstrap(mean_of(x), 100, resamples=2000, seed=3)
    assert ci.estimate == 49.5
    assert ci.low < 49.5 < ci.high
    assert isinstance(ci.low, float)
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * 2.887, rel=0.15)
    narrower = bootstrap(mean_of(x), 100, resamples=2000, seed=3, level=0.5)  # +-0.674 se
    assert narrower.high - narrower.low == pytest.approx(2 * 0.674 * 2.887, rel=0.2)
    assert ci.low < narrower.low < narrower.high < ci.high


def test_percentiles_of_the_returned_distribution():
    ci = bootstrap(mean_of([0.0, 1.0, 1.0, 0.0, 1.0]), 5, resamples=400, seed=1)
    assert ci.distribution.shape == (400,)
    lo, hi = np.percentile(ci.distribution, [2.5, 97.5])
    assert (ci.low, ci.high) == pytest.approx((lo, hi))
    assert set(np.round(ci.distribution * 5)) <= set(range(6))  # means of 5 draws of 0/1


def test_seeded_repeatability():
    x = np.random.default_rng(0).normal(size=30)
    a = bootstrap(mean_of(x), 30, resamples=300, seed=7)
    b = bootstrap(mean_of(x), 30, resamples=300, seed=7)
    c = bootstrap(mean_of(x), 30, resamples=300, seed=8)
    np.testing.assert_array_equal(a.distribution, b.distribution)
    assert a.interval == b.interval
    assert not np.array_equal(a.distribution, c.distribution)


def test_a_vector_statistic_gives_intervals_per_component_and_a_distribution_for_p_best():
    scores = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.0, 0.0, 0.0, 0.0, 0.0, 9.0]])  # (model, unit)

    def means(idx):
        return scores[:, idx].mean(1)

    ci = bootstrap(means, 6, resamples=500, seed=0)
    np.testing.assert_allclose(ci.estimate, [3.5, 1.5])
    assert ci.low.shape == ci.high.shape == (2,)
    assert ci.distribution.shape == (500, 2)
    assert (ci.low <= ci.estimate).all()
    assert (ci.estimate <= ci.high).all()
    assert ci.low[1] == 0.0  # a resample without the 9 happens (P = (5/6)^6 = 0.33)
    p_best = np.bincount(ci.distribution.argmax(1), minlength=2) / 500
    assert p_best.sum() == pytest.approx(1.0)
    assert p_best[0] > 0.5


def test_the_statistic_receives_unit_indices_with_repeats():
    seen = []

    def record(idx):
        seen.append(idx.copy())
        return float(len(idx))

    bootstrap(record, 4, resamples=50)
    assert seen[0].tolist() == [0, 1, 2, 3]  # the point estimate, on every unit once
    assert all(s.dtype.kind == "i" and len(s) == 4 and set(s) <= {0, 1, 2, 3} for s in seen[1:])
    assert any(len(set(s)) < 4 for s in seen[1:])


def test_one_unit_leaves_nothing_to_resample_and_no_units_is_an_error():
    ci = bootstrap(mean_of([2.5]), 1, resamples=20)
    assert ci.interval == (2.5, 2.5)
    assert ci.distribution.tolist() == [2.5] * 20
    with pytest.raises(ValueError, match="no units"):
        bootstrap(mean_of([]), 0)


def test_groups_resample_whole_groups():
    # each group holds two copies of its value: resampling the 4 groups is resampling the 4 group values
    values = np.array([1.0, 4.0, 2.0, 8.0])
    units = np.repeat(values, 2)
    groups = ["a", "a", "b", "b", "c", "c", "d", "d"]
    grouped = bootstrap(mean_of(units), 8, resamples=300, seed=5, groups=groups)
    by_value = bootstrap(mean_of(values), 4, resamples=300, seed=5)
    np.testing.assert_allclose(grouped.distribution, by_value.distribution)
    assert grouped.estimate == pytest.approx(3.75)

    seen = []

    def record(idx):
        seen.append(sorted(idx.tolist()))
        return 0.0

    bootstrap(record, 6, resamples=30, groups=[0, 1, 0, 2, 1, 2])  # labels need not be contiguous
    members = {0: [0, 2], 1: [1, 4], 2: [3, 5]}
    for s in seen[1:]:
        assert len(s) == 6
        for m in members.values():
            assert s.count(m[0]) == s.count(m[1])  # a group comes whole, or not at all

    one = bootstrap(mean_of([1.0, 3.0]), 2, resamples=10, groups=["x", "x"])
    assert one.interval == (2.0, 2.0)
    with pytest.raises(ValueError, match="labels for"):
        bootstrap(mean_of([1.0, 3.0]), 2, groups=["x"])


def test_resampling_clusters_covers_where_resampling_correlated_units_does_not():
    # 30 clusters of 10 units sharing a cluster effect (sd 1) plus unit noise (sd 0.3); the true mean is 0.
    # Treating the 300 units as independent understates the error (about 0.06 vs 0.18).
    groups = np.repeat(np.arange(30), 10)
    covered = {"units": 0, "clusters": 0}
    runs = 40
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        x = rng.normal(0, 1, 30)[groups] + rng.normal(0, 0.3, 300)
        units = bootstrap(mean_of(x), 300, resamples=200, seed=seed)
        clusters = bootstrap(mean_of(x), 300, resamples=200, seed=seed, groups=groups.tolist())
        covered["units"] += units.low <= 0 <= units.high
        covered["clusters"] += clusters.low <= 0 <= clusters.high
    assert covered["clusters"] / runs >= 0.85, covered
    assert covered["units"] / runs <= 0.7, covered
