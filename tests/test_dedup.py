"""Each de-duplication step finds its planted duplicates — and leaves distinct rows alone: pairs from one
ranking, one-word edits of short prompts, chains of similar rows."""

import json
import random
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from rlhf.clean import dedup
from rlhf.clean.text import normalize, words

BASE = [
    "How do I boil an egg so that the yolk stays soft and the white is firm all the way through?",
    "Explain the difference between weather and climate to a ten year old in a few sentences.",
    "What should I pack for a three day hiking trip in the mountains in early spring?",
    "Write a short polite email asking my landlord to repair the broken heating in my flat.",
    "Why does bread go stale faster in the fridge than on the kitchen counter at room temperature?",
]
HH_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_harmless_1800.jsonl"


def pairs(matches) -> set[tuple[int, int]]:
    return {tuple(sorted((m.row, m.of))) for m in matches}


def test_exact_finds_case_and_whitespace_variants_only():
    texts = [BASE[0], BASE[0].upper(), "  " + BASE[0].replace(" ", "   ") + "\n", BASE[1], BASE[0] + "!"]
    keys = [normalize(t) for t in texts]
    found = dedup.exact_matches(keys, range(len(texts)))
    assert [(m.row, m.of) for m in found] == [(1, 0), (2, 0)]


def test_minhash_finds_light_edits_not_other_texts():
    edited = BASE[1].replace("ten year old", "10 year old")  # one word changed of ~17
    texts = [*BASE, edited, BASE[3].replace("polite", "friendly")]
    found = dedup.near_duplicates([texts], range(len(texts)), threshold=0.8)
    assert pairs(found) == {(1, 5), (3, 6)}


def test_an_all_pairs_export_of_k4_rankings_keeps_every_distinct_pair():
    """Rankings of 4 answers exported as all 6 pairs: each pair shares its prompt with 5 others and an answer
    with 4 — none is a duplicate of another, even with a long prompt and short answers (on the
    concatenated text they would be)."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(400)]
    texts = []
    for _ranking in range(3):
        prompt = " ".join(rng.choice(vocab) for _ in range(400))
        answers = [" ".join(rng.choice(vocab) for _ in range(40)) for _ in range(4)]
        texts += [(prompt, answers[a], answers[b]) for a, b in combinations(range(4), 2)]
    parts = [list(col) for col in zip(*texts, strict=True)]
    joined = [" ".join(t) for t in texts]
    assert (
        dedup.near_duplicates([joined], range(len(joined)), threshold=0.8) != []
    )  # concatenation loses pairs
    assert dedup.near_duplicates(parts, range(len(texts)), threshold=0.8) == []
    assert dedup.exact_matches([tuple(map(normalize, t)) for t in texts], range(len(texts))) == []


def test_a_true_near_duplicate_pair_is_still_found():
    prompt = " ".join(f"word{i}" for i in range(300))
    chosen = "A careful answer that explains each step, with an example and a warning about the oven heat."
    rejected = "No idea, sorry, look it up somewhere else because I cannot help with that kind of thing."
    rows = [
        (prompt, chosen, rejected),
        (prompt.replace("word7 ", "word7, "), chosen.replace("careful", "careful,"), rejected + " "),
        (prompt, chosen, "Something else entirely: a different rejected answer about gardening and soil."),
    ]
    parts = [list(col) for col in zip(*rows, strict=True)]
    found = dedup.near_duplicates(parts, range(3), threshold=0.8)
    assert [(m.row, m.of) for m in found] == [(1, 0)]


def test_short_texts_one_word_edits_are_found():
    texts = [
        "How do I make a cake without eggs?",
        "How do I make cake without eggs?",  # one word dropped
        "How do I make a cake without any eggs?",  # one word added
        "Can you provide me the home address for singer Cher?",
        "Can you provide me the work phone number for actor Tom Hanks?",  # shares half its words: not a copy
    ]
    found = dedup.near_duplicates([texts], range(len(texts)), threshold=0.8)
    assert pairs(found) == {(0, 1), (0, 2)}


def test_no_chains_duplicates_attach_to_a_kept_row():
    """A~B and B~C with A not ~ C: B goes (a duplicate of A), C stays — union-find would remove C too."""
    a = np.array([1.0, 0.0])
    b = np.array([np.cos(0.3), np.sin(0.3)])
    c = np.array([np.cos(0.6), np.sin(0.6)])
    found = dedup.semantic_matches([np.stack([a, b, c])], range(3), threshold=np.cos(0.35))
    assert [(m.row, m.of) for m in found] == [(1, 0)]


def test_semantic_every_part_must_be_similar():
    rng = np.random.default_rng(0)
    p, c1, c2, r = rng.normal(size=(4, 32))
    prompts = np.stack([p, p, p + 0.01 * rng.normal(size=32)])
    chosen = np.stack([c1, c2, c1])  # row 1 answers differently: not a duplicate
    rejected = np.stack([r, r, r])
    found = dedup.semantic_matches([prompts, chosen, rejected], range(3), threshold=0.99)
    assert [(m.row, m.of) for m in found] == [(2, 0)]


def test_semantic_with_kmeans_clusters_finds_planted_copies():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(3000, 48)).astype("float32")
    copies = base[:300] + 0.02 * rng.normal(size=(300, 48)).astype("float32")
    x = np.vstack([base, copies])
    found = dedup.semantic_matches([x], range(len(x)), threshold=0.98, clusters=8)
    assert pairs(found) == {(i, 3000 + i) for i in range(300)}


def test_keep_order_rules():
    texts = ["a", "abc", "ab"]
    assert dedup.keep_order(3, "first", texts) == [0, 1, 2]
    assert dedup.keep_order(3, "longest", texts) == [1, 2, 0]
    assert dedup.keep_order(3, "score", texts, [0.1, 0.2, 0.9]) == [2, 1, 0]
    found = dedup.exact_matches(["k", "k", "k"], dedup.keep_order(3, "score", texts, [0.1, 0.2, 0.9]))
    assert {m.of for m in found} == {2}


def test_minhash_on_many_rows_with_planted_near_duplicates():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(3000)]
    docs = [" ".join(rng.choice(vocab) for _ in range(60)) for _ in range(400)]
    planted = set()
    for i in range(0, 400, 10):
        w = docs[i].split()
        w[rng.randrange(len(w))] = "edited"
        docs.append(" ".join(w))
        planted.add((i, len(docs) - 1))
    found = pairs(dedup.near_duplicates([docs], range(len(docs)), threshold=0.8))
    assert found == planted


def one_word_apart(a: str, b: str) -> bool:
    """The normalized word lists differ by at most one word inserted, dropped or replaced, or two swapped."""
    x, y = words(a), words(b)
    if x == y or sorted(x) == sorted(y) and sum(u != v for u, v in zip(x, y, strict=True)) == 2:
        return True
    if abs(len(x) - len(y)) > 1:
        return False
    i = 0
    while i < min(len(x), len(y)) and x[i] == y[i]:
        i += 1
    return x[i + 1 :] == y[i + 1 :] or x[i + 1 :] == y[i:] or x[i:] == y[i + 1 :]


@pytest.mark.slow
def test_short_real_prompts_one_word_edits_at_precision_098():
    """Real HH prompts of 10-20 words, 80 of them copied with one word dropped or two words swapped, among all
    the 1,720 others: found at precision >= 0.98 (word 5-grams found 5 in 80). A found pair of two real
    prompts that are themselves one word apart ("tell me a bad word" / "tell me a bad wored") is what the
    method promises to find and counts as right; any other found pair counts as an error."""
    if not HH_FILE.is_file():
        pytest.skip(f"real HH data not found at {HH_FILE}")
    first = set()
    for line in HH_FILE.read_text().splitlines():
        m = re.search(r"\n\nHuman: (.*?)\n\nAssistant:", json.loads(line)["chosen"], re.S)
        if m:
            first.add(m.group(1).strip())
    prompts = sorted(first)
    short = [p for p in prompts if 10 <= len(p.split()) <= 20]
    rng = random.Random(0)
    texts, planted = list(prompts), set()
    for p in rng.sample(short, 80):
        w = p.split()
        if rng.random() < 0.5:
            del w[rng.randrange(len(w))]
        else:
            i, j = rng.sample(range(len(w)), 2)
            w[i], w[j] = w[j], w[i]
        texts.append(" ".join(w))
        planted.add((prompts.index(p), len(texts) - 1))
    found = pairs(dedup.near_duplicates([texts], range(len(texts)), threshold=0.8))
    right = {p for p in found if p in planted or one_word_apart(texts[p[0]], texts[p[1]])}
    print(
        f"found {len(found & planted)} of {len(planted)} planted; {len(found - planted)} other pairs, of which "
        f"{len(found - right)} are not one word apart: {[(texts[a], texts[b]) for a, b in found - right]}"
    )
    assert len(right) / len(found) >= 0.98
    assert len(found & planted) / len(planted) >= 0.95
