"""Active selection: hand-computed informativeness, and a planted uncertain subset that the selectors find
clearly more often than random choice (seeded)."""

import random

import pytest

from rlhf.loop.selection import disagreement, item_margins, regroup, select, standardized, uncertainty


def test_hand_computed_values():
    # two members, two candidates: margins 1-0=1 and 3-0=3 -> spread 1.0; mean margin 2
    scores = [[1.0, 0.0], [3.0, 0.0]]
    assert item_margins(scores) == [[1.0, 3.0]]
    assert disagreement(scores) == pytest.approx(1.0)
    # sigmoid(2) = 0.8808 -> 1 - |2p - 1| = 0.2384
    assert uncertainty(scores) == pytest.approx(0.238406, abs=1e-6)
    # members agree exactly: no disagreement; equal candidates: full uncertainty
    assert disagreement([[2.0, 1.0], [2.0, 1.0]]) == 0.0
    assert uncertainty([[1.0, 1.0], [5.0, 5.0]]) == pytest.approx(1.0)
    # three candidates -> three pairs
    assert len(item_margins([[0.0, 1.0, 2.0]])) == 3


def test_regroup_is_item_major():
    flat = [[1, 2, 3, 4], [5, 6, 7, 8]]  # 2 members x (2 items x 2 candidates)
    assert regroup(flat, 2) == [[[1, 2], [5, 6]], [[3, 4], [7, 8]]]


def planted(seed: int, n: int = 200, members: int = 4, hard: int = 30):
    """Items whose members agree (a clear, shared margin) plus `hard` planted ones where they disagree
    and the mean margin is near zero; everything carries noise."""
    rng = random.Random(seed)
    items, planted_ids = [], set(rng.sample(range(n), hard))
    for i in range(n):
        if i in planted_ids:
            centre, spread = rng.gauss(0, 0.2), 1.5
        else:
            centre, spread = rng.choice([-1, 1]) * rng.uniform(1.5, 3.0), 0.5
        items.append([[centre + rng.gauss(0, spread), 0.0] for _ in range(members)])
    return items, planted_ids


@pytest.mark.parametrize("method", ["disagreement", "uncertainty"])
def test_planted_subset_is_found_far_more_often_than_at_random(method):
    hits, random_hits = 0, 0
    for seed in range(5):
        items, hard = planted(seed)
        chosen, values = select(items, 30, method=method, seed=seed)
        assert len(chosen) == 30 == len(set(chosen))
        assert len(values) == len(items)
        hits += len(hard & set(chosen))
        rnd, _ = select(items, 30, method="random", seed=seed + 100)  # not the planting sequence
        random_hits += len(hard & set(rnd))
    # random expects 30 * 30/200 = 4.5 per draw (22.5 over 5); the selectors find most of the 150 planted
    assert hits >= 100, hits
    assert random_hits <= 45, random_hits
    assert hits >= 3 * random_hits


def test_selection_is_seeded_and_bounded():
    items, _ = planted(0, n=20, hard=5)
    assert select(items, 50, method="random", seed=1)[0] == select(items, 50, method="random", seed=1)[0]
    assert len(select(items, 50, method="disagreement")[0]) == 20


def test_a_member_on_a_wider_scale_does_not_pose_as_disagreement():
    """Scaling one member x10 (a different scale, the same opinions) leaves the choice unmoved; on raw scores
    it would pick the items where that member's margins are merely large."""
    rng = random.Random(0)
    items = []
    for i in range(30):
        base = [rng.gauss(0, 1) for _ in range(4)]
        flip = i % 5 == 0  # the planted disagreement: member 2 reverses the order on these items
        items.append([base, [x + rng.gauss(0, 0.05) for x in base], [-x if flip else x for x in base]])
    picked, _ = select(items, 6, method="disagreement", seed=1)
    scaled = [[m[0], [10 * x for x in m[1]], m[2]] for m in items]
    picked_scaled, _ = select(scaled, 6, method="disagreement", seed=1)
    assert picked_scaled == picked
    assert sorted(picked) == [0, 5, 10, 15, 20, 25]
    z = standardized(items)
    member = [x for item in z for x in item[1]]
    assert abs(sum(member) / len(member)) < 1e-9
