"""Pure text checks behind `rlhf clean`: normalization, shingles (word n-grams, character n-grams for short
texts), junk ratio, n-gram decontamination and contradictory preference pairs. No I/O.

- `normalize`: Unicode NFKC, case-folded, whitespace collapsed — what "the same text" means for exact
  de-duplication and for exact decontamination matches.
- `shingles`: word n-grams; `char_shingles`: character n-grams of the words (punctuation dropped);
  `adaptive_shingles`: character n-grams below `short_words` words, where one changed word replaces most
  word n-grams (a 15-word text has 11 word 5-grams and one edit changes 5 of them), word n-grams above.
- `overlap`: the share of a text's word n-grams that occur in an evaluation set's n-grams.
- `contradictions`: the same prompt and the same two answers preferred both ways.
Personal data is found in `rlhf.clean.pii` (Presidio), repetition by datatrove's Gopher filter (`rows`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def exact_key(text: str) -> str:
    return hashlib.sha1(normalize(text).encode()).hexdigest()


def words(text: str) -> list[str]:
    return _WORD.findall(normalize(text))


def shingles(text: str, n: int) -> set[str]:
    """Word n-grams of the normalized text (the whole text when it has fewer than n words)."""
    w = words(text)
    if len(w) < n:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


def char_shingles(text: str, n: int) -> set[str]:
    """Character n-grams of the normalized words joined by single spaces (punctuation does not count)."""
    return char_grams(" ".join(words(text)), n)


def char_grams(s: str, n: int) -> set[str]:
    if len(s) < n:
        return {s} if s else set()
    return set(map("".join, zip(*(s[k:] for k in range(n)), strict=False)))  # the shorter tails end it


def adaptive_shingles(text: str, ngram: int, *, short_words: int = 50, char_ngram: int = 3) -> set[str]:
    """Character `char_ngram`-grams for texts of fewer than `short_words` words, word `ngram`-grams above."""
    w = words(text)
    if len(w) < short_words:
        return char_grams(" ".join(w), char_ngram)
    if len(w) < ngram:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i : i + ngram]) for i in range(len(w) - ngram + 1)}


def junk_ratio(text: str) -> float:
    """Share of characters that are neither letters, digits, whitespace nor common punctuation."""
    if not text:
        return 0.0
    ok = sum(ch.isalnum() or ch.isspace() or ch in ".,;:!?'\"()-–—/&%$€£@#*+=<>[]{}_`~|\\^" for ch in text)
    return 1 - ok / len(text)


def overlap(text: str, eval_ngrams: set[str], n: int) -> float:
    """Share of the text's word n-grams found in `eval_ngrams` (0 for a text with no n-gram)."""
    grams = shingles(text, n)
    return len(grams & eval_ngrams) / len(grams) if grams else 0.0


def contradictions(pairs: Iterable[tuple[str, str, str, str]]) -> dict[str, dict]:
    """pairs: (row id, prompt, chosen, rejected) as text. Returns, per group of rows with the same prompt and
    the same two answers, {"ids": [...], "for": n, "against": m, "majority": "first"|"second"|"tie"} for the
    groups preferred both ways ('for' counts the orientation of the group's first row)."""
    groups: dict[tuple, list] = defaultdict(list)
    for rid, prompt, chosen, rejected in pairs:
        a, b = normalize(chosen), normalize(rejected)
        key = (normalize(prompt), frozenset((a, b)))
        groups[key].append((rid, a))
    out = {}
    for members in groups.values():
        first = members[0][1]
        n_for = sum(1 for _, c in members if c == first)
        n_against = len(members) - n_for
        if n_for and n_against:
            majority = "first" if n_for > n_against else "second" if n_against > n_for else "tie"
            out[members[0][0]] = {
                "ids": [m[0] for m in members],
                "for": n_for,
                "against": n_against,
                "majority": majority,
            }
    return out
