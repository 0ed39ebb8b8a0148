import random
from itertools import permutations

import pytest

from rlhf.store.agreement import (
    agreement_with_majority,
    gold_accuracy,
    krippendorff_alpha,
    majority,
    throughput,
)

# ---------------------------------------------------------------------------------------------------------
# Krippendorff's alpha
# ---------------------------------------------------------------------------------------------------------

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 coders x 12 units,
# None = missing. Unit 12 has a single value and is not pairable; unit 11 has only two.
_ = None
KRIPP_ROWS = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, _, _, _],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _, 3],
    "C": [_, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _],
}
KRIPP_UNITS = {u + 1: {coder: row[u] for coder, row in KRIPP_ROWS.items()} for u in range(12)}

# Hand computation of the coincidence matrix o_ck (each unit adds 1/(m_u - 1) per ordered pair of values):
#          k=1    2     3     4    5  |  n_c
#   c=1    7     4/3   1/3   1/3   0  |   9
#   c=2    4/3   10    4/3   1/3   0  |  13
#   c=3    1/3   4/3   8     1/3   0  |  10
#   c=4    1/3   1/3   1/3   4     0  |   5
#   c=5    0     0     0     0     3  |   3        n = 40 pairable values
# nominal:  observed = sum_{c!=k} o_ck = 8;  expected = n^2 - sum n_c^2 = 1600 - 384 = 1216
#           alpha = 1 - 39 * 8 / 1216 = 113/152 = 0.74342   (published: 0.743)
# interval: observed = sum o_ck (c-k)^2 = 52/3;  expected = sum n_c n_k (c-k)^2 = 4480
#           alpha = 1 - 39 * (52/3) / 4480 = 951/1120 = 0.84911   (published: 0.849)
# ordinal:  checked against the independent midrank implementation below; 0.81539 (published: 0.815)
# All three published figures agree with the independent computations.


def _brute_force_alpha(units, level):
    """Independent reference: alpha = 1 - D_o / D_e straight from pairs of values (no coincidence matrix).

    D_o = 1/n * sum_u 1/(m_u - 1) * sum_{i != j in u} δ²(v_i, v_j)
    D_e = 1/(n (n - 1)) * sum_{i != j over all pairable values} δ²(v_i, v_j)
    For ordinal data, δ_ck = sum_{g=c..k} n_g - (n_c + n_k)/2 equals the difference of the midranks of c
    and k in the pooled pairable values, so ordinal is computed as interval on midranks.
    """
    pairable = [[v for v in unit.values() if v is not None] for unit in units.values()]
    pairable = [values for values in pairable if len(values) >= 2]
    pooled = sorted(v for values in pairable for v in values)
    n = len(pooled)
    if level == "nominal":

        def d2(a, b):
            return float(a != b)

    elif level == "interval":

        def d2(a, b):
            return (a - b) ** 2

    else:
        midrank = {v: (pooled.index(v) + 1 + n - pooled[::-1].index(v)) / 2 for v in pooled}

        def d2(a, b):
            return (midrank[a] - midrank[b]) ** 2

    d_o = sum(sum(d2(a, b) for a, b in permutations(vs, 2)) / (len(vs) - 1) for vs in pairable) / n
    d_e = sum(d2(a, b) for a, b in permutations(pooled, 2)) / (n * (n - 1))
    return 1 - d_o / d_e


@pytest.mark.parametrize(
    "level, published, exact",
    [("nominal", 0.743, 113 / 152), ("ordinal", 0.815, None), ("interval", 0.849, 951 / 1120)],
)
def test_krippendorff_published_example(level, published, exact):
    alpha = krippendorff_alpha(KRIPP_UNITS, level)
    assert alpha == pytest.approx(published, abs=5e-4)
    assert alpha == pytest.approx(_brute_force_alpha(KRIPP_UNITS, level))
    if exact is not None:
        assert alpha == pytest.approx(exact)


# Tiny 2-coder example, 4 units: (1,1) (1,2) (2,5) (5,5)  ->  values 1,1,1,2,2,5,5,5
#   n = 8, n_1 = 3, n_2 = 2, n_5 = 3
#   o_11 = 2, o_12 = o_21 = 1, o_25 = o_52 = 1, o_55 = 2   (m_u = 2, so each ordered pair adds 1)
# nominal:  observed = 4; expected = 64 - (9 + 4 + 9) = 42;             alpha = 1 - 7*4/42 = 1/3
# ordinal:  δ_12 = (3+2) - (3+2)/2 = 2.5, δ_25 = (2+3) - 2.5 = 2.5, δ_15 = (3+2+3) - 3 = 5
#           observed = 4 * 6.25 = 25; expected = 2*(6*6.25 + 9*25 + 6*6.25) = 600
#           alpha = 1 - 7*25/600 = 17/24
# interval: observed = 2*1 + 2*9 = 20; expected = 2*(6*1 + 9*16 + 6*9) = 408
#           alpha = 1 - 7*20/408 = 67/102
TINY = {"u1": {"a": 1, "b": 1}, "u2": {"a": 1, "b": 2}, "u3": {"a": 2, "b": 5}, "u4": {"a": 5, "b": 5}}


@pytest.mark.parametrize(
    "level, expected", [("nominal", 1 / 3), ("ordinal", 17 / 24), ("interval", 67 / 102)]
)
def test_krippendorff_tiny_hand_computed(level, expected):
    assert krippendorff_alpha(TINY, level) == pytest.approx(expected)


def test_krippendorff_ordinal_only_uses_order():
    # Same data with the values replaced by order-preserving labels: ordinal (and nominal) unchanged.
    relabel = {1: "low", 2: "mid", 5: "top"}  # "low" < "mid" < "top"
    units = {u: {c: relabel[v] for c, v in votes.items()} for u, votes in TINY.items()}
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(17 / 24)
    assert krippendorff_alpha(units, "nominal") == pytest.approx(1 / 3)


def test_krippendorff_perfect_agreement_is_one():
    units = {"u1": {"a": 1, "b": 1, "c": 1}, "u2": {"a": 3, "b": 3}, "u3": {"b": 2, "c": 2}}
    for level in ("nominal", "ordinal", "interval"):
        assert krippendorff_alpha(units, level) == pytest.approx(1.0)


def test_krippendorff_systematic_disagreement_is_negative():
    # (1,2) (2,1): n = 4, n_1 = n_2 = 2, observed = 4, expected = 16 - 8 = 8 -> 1 - 3*4/8 = -0.5
    units = {"u1": {"a": 1, "b": 2}, "u2": {"a": 2, "b": 1}}
    assert krippendorff_alpha(units) == pytest.approx(-0.5)


def test_krippendorff_undefined_returns_none():
    assert krippendorff_alpha({}) is None
    assert krippendorff_alpha({"u1": {"a": 1}, "u2": {"b": 2}}) is None  # nothing pairable
    assert krippendorff_alpha({"u1": {"a": 1, "b": None}}) is None  # missing value does not pair
    same = {"u1": {"a": "x", "b": "x"}, "u2": {"a": "x", "b": "x", "c": "x"}}
    for level in ("nominal", "ordinal"):
        assert krippendorff_alpha(same, level) is None  # expected disagreement 0
    assert krippendorff_alpha({"u1": {"a": 4.0, "b": 4.0}}, "interval") is None


def test_krippendorff_single_coder_units_ignored():
    # Extra units with one value (or one value plus a missing one) would shift n_c if they were counted.
    units = dict(TINY) | {"u5": {"a": 9}, "u6": {"b": 1}, "u7": {"a": 2, "b": None}, "u8": {}}
    assert krippendorff_alpha(units, "nominal") == pytest.approx(1 / 3)
    assert krippendorff_alpha(units, "interval") == pytest.approx(67 / 102)


def test_krippendorff_nominal_strings_and_nan_missing():
    units = {"u1": {"a": "yes", "b": "yes"}, "u2": {"a": "yes", "b": "no"}, "u3": {"a": "no", "b": "no"}}
    # n = 6, n_yes = n_no = 3, observed = 2, expected = 36 - 18 = 18 -> 1 - 5*2/18 = 4/9
    assert krippendorff_alpha(units) == pytest.approx(4 / 9)
    with_nan = {"u1": {"a": 1.0, "b": float("nan"), "c": 1.0}, "u2": {"a": 2.0, "b": 1.0}}
    assert krippendorff_alpha(with_nan, "interval") == pytest.approx(
        _brute_force_alpha({"u1": {"a": 1.0, "c": 1.0}, "u2": {"a": 2.0, "b": 1.0}}, "interval")
    )


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorff_matches_brute_force_on_random_data(level):
    rng = random.Random(1234)
    for _trial in range(30):
        units = {
            u: {c: rng.choice([1, 2, 3, 4, None]) for c in range(rng.randint(1, 5))}
            for u in range(rng.randint(2, 8))
        }
        try:
            reference = _brute_force_alpha(units, level)
        except ZeroDivisionError:  # nothing pairable, or no expected disagreement
            reference = None
        alpha = krippendorff_alpha(units, level)
        assert alpha is None if reference is None else alpha == pytest.approx(reference)


def test_krippendorff_rejects_unknown_level():
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(TINY, "ratio")


# ---------------------------------------------------------------------------------------------------------
# majority / agreement with majority
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], None),
        (["a"], "a"),
        (["a", "b", "a"], "a"),
        (["a", "b"], None),  # tie for the top
        ([1, 1, 2, 2, 3], None),
        (["a", "a", "b", "c"], "a"),  # tie below the top does not matter
        ((2, 2, 2), 2),
    ],
)
def test_majority(values, expected):
    assert majority(values) == expected


def test_agreement_with_majority_leave_one_out():
    units = {
        # A, B, C: others' majority 1 -> agree; D: others [1,1,1] -> 1, disagrees
        "u1": {"A": 1, "B": 1, "C": 1, "D": 2},
        # A: others [2,2] -> disagree; B: others [1,2] tie -> skipped; C likewise
        "u2": {"A": 1, "B": 2, "C": 2},
        # only A answered -> no others, skipped
        "u3": {"A": 3},
        # B: others [1] -> agree; D: others [1] -> agree
        "u4": {"B": 1, "D": 1},
        # C's value is missing; D: no others -> skipped
        "u5": {"C": None, "D": 2},
        # E never meets another assessor
        "u6": {"E": 1},
    }
    assert agreement_with_majority(units) == {
        "A": {"compared": 2, "agree": 1, "rate": 0.5},
        "B": {"compared": 2, "agree": 2, "rate": 1.0},
        "C": {"compared": 1, "agree": 1, "rate": 1.0},
        "D": {"compared": 2, "agree": 1, "rate": 0.5},
        "E": {"compared": 0, "agree": 0, "rate": None},
    }


def test_agreement_with_majority_own_vote_does_not_count():
    # Counting one's own vote would make this a 1-1 tie (nothing compared) for both; leave-one-out
    # compares each with the other's value, and both disagree.
    assert agreement_with_majority({"u": {"A": "x", "B": "y"}}) == {
        "A": {"compared": 1, "agree": 0, "rate": 0.0},
        "B": {"compared": 1, "agree": 0, "rate": 0.0},
    }
    assert agreement_with_majority({}) == {}


# ---------------------------------------------------------------------------------------------------------
# gold accuracy
# ---------------------------------------------------------------------------------------------------------


def test_gold_accuracy():
    gold = {"g1": "x", "g2": "z"}
    answers = [
        ("A", "g1", "x"),  # correct
        ("A", "g2", "y"),  # wrong
        ("A", "n1", "z"),  # not gold: ignored
        ("B", "g1", "y"),  # wrong
        ("B", "g1", "x"),  # repeated gold item counts again: correct
        ("C", "n1", "x"),  # C never sees gold
    ]
    assert gold_accuracy(iter(answers), gold) == {
        "A": {"gold_seen": 2, "correct": 1, "accuracy": 0.5},
        "B": {"gold_seen": 2, "correct": 1, "accuracy": 0.5},
        "C": {"gold_seen": 0, "correct": 0, "accuracy": None},
    }
    assert gold_accuracy([], gold) == {}
    assert gold_accuracy([("A", "g1", "x")], {}) == {"A": {"gold_seen": 0, "correct": 0, "accuracy": None}}


# ---------------------------------------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------------------------------------


def test_throughput_skips_idle_gaps():
    events = [("A", 1000), ("A", 0), ("B", 50), ("A", 120), ("A", 1030), ("A", 60), ("C", 0), ("C", 600)]
    stats = throughput(events)
    # A sorted: 0, 60, 120, 1000, 1030 -> gaps 60, 60, 880 (break, > 600), 30 -> 150 s active
    assert stats["A"] == {
        "annotations": 5,
        "active_seconds": 150.0,
        "per_hour": pytest.approx(5 / (150 / 3600)),
    }
    assert stats["A"]["per_hour"] == pytest.approx(120.0)
    # B: a single annotation has no measurable active time
    assert stats["B"] == {"annotations": 1, "active_seconds": 0.0, "per_hour": None}
    # C: a gap of exactly idle_gap_s still counts -> 2 per 600 s = 12/h
    assert stats["C"] == {"annotations": 2, "active_seconds": 600.0, "per_hour": pytest.approx(12.0)}


def test_throughput_custom_gap_and_edge_cases():
    events = [("A", t) for t in (0, 60, 120, 1000, 1030)]
    # only the 30 s gap is <= 50 s -> 5 annotations / (30/3600 h) = 600/h
    assert throughput(events, idle_gap_s=50)["A"] == {
        "annotations": 5,
        "active_seconds": 30.0,
        "per_hour": pytest.approx(600.0),
    }
    assert throughput([("D", 10.0), ("D", 10.0)])["D"]["per_hour"] is None  # same-second duplicates
    assert throughput([]) == {}
    with pytest.raises(ValueError, match="idle_gap_s"):
        throughput(events, idle_gap_s=-1)
