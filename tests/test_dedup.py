"""Each de-duplication step finds its planted duplicates — and leaves distinct rows alone."""

import random

import numpy as np

from rlhf.clean import dedup

BASE = [
    "How do I boil an egg so that the yolk stays soft and the white is firm all the way through?",
    "Explain the difference between weather and climate to a ten year old in a few sentences.",
    "What should I pack for a three day hiking trip in the mountains in early spring?",
    "Write a short polite email asking my landlord to repair the broken heating in my flat.",
    "Why does bread go stale faster in the fridge than on the kitchen counter at room temperature?",
]


def test_exact_finds_case_and_whitespace_variants_only():
    texts = [BASE[0], BASE[0].upper(), "  " + BASE[0].replace(" ", "   ") + "\n", BASE[1], BASE[0] + "!"]
    assert dedup.exact_clusters(texts) == [[0, 1, 2]]


def test_minhash_finds_light_edits_not_other_texts():
    edited = BASE[1].replace("ten year old", "10 year old")  # one word changed of ~17
    texts = [*BASE, edited, BASE[3].replace("polite", "friendly")]
    clusters = dedup.minhash_clusters(texts, threshold=0.6, ngram=3)
    assert sorted(map(sorted, clusters)) == [[1, 5], [3, 6]]


def test_semantic_finds_close_embeddings():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 32))
    near = base[[0, 3]] + 0.01 * rng.normal(size=(2, 32))  # paraphrase-like: almost the same direction
    emb = np.vstack([base, near, 3.0 * base[1:2]])  # a scaled copy is the same direction too
    clusters = dedup.semantic_clusters(emb, threshold=0.99)
    assert sorted(map(sorted, clusters)) == [[0, 5], [1, 7], [3, 6]]


def test_keep_rules():
    texts = ["a", "abc", "ab"]
    assert dedup.keep_one([0, 1, 2], "first", texts) == 0
    assert dedup.keep_one([0, 1, 2], "longest", texts) == 1
    assert dedup.keep_one([0, 1, 2], "score", texts, [0.1, 0.2, 0.9]) == 2


def test_minhash_on_many_rows_with_planted_near_duplicates():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(3000)]
    docs = [" ".join(rng.choice(vocab) for _ in range(40)) for _ in range(400)]
    planted = []
    for i in range(0, 400, 10):
        w = docs[i].split()
        w[rng.randrange(len(w))] = "edited"
        docs.append(" ".join(w))
        planted.append((i, len(docs) - 1))
    found = {tuple(sorted(c)) for c in dedup.minhash_clusters(docs, threshold=0.6)}
    assert all(p in found for p in planted)
    assert len(found) == len(planted)
