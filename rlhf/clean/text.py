"""Pure text checks behind `rlhf clean`: normalization, shingles, Gopher-style repetition ratios, junk
ratio, personal data (PII) patterns, n-gram decontamination and contradictory preference pairs. No I/O.

- `normalize`: Unicode NFKC, case-folded, whitespace collapsed — what "the same text" means for exact
  de-duplication.
- `repetition`: as in Gopher (Rae et al. 2021): the share of lines that are duplicates, the share of
  characters in duplicated lines, the share of characters covered by the most frequent 2-, 3-, 4-gram,
  and by duplicated 5..10-grams.
- `find_pii` / `redact_pii`: e-mail addresses, phone numbers, IPv4 addresses, and card-like numbers
  (13-19 digits that pass the Luhn check), replaced by `[EMAIL]`, `[PHONE]`, `[IP]`, `[CARD]`.
- `overlap`: the share of a text's word n-grams that occur in an evaluation set's n-grams.
- `contradictions`: the same prompt and the same two answers preferred both ways.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){2,4}(?![\w])"
)
IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
PII_LABELS = {"email": "[EMAIL]", "card": "[CARD]", "ip": "[IP]", "phone": "[PHONE]"}


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


def repetition(text: str) -> dict[str, float]:
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    line_counts = Counter(lines)
    dup_lines = sum(c for c in line_counts.values() if c > 1) - sum(1 for c in line_counts.values() if c > 1)
    dup_line_chars = sum(len(ln) * (c - 1) for ln, c in line_counts.items() if c > 1)
    total_chars = sum(len(ln) for ln in lines) or 1
    w = words(text)
    out = {
        "dup_line_frac": dup_lines / len(lines) if lines else 0.0,
        "dup_line_char_frac": dup_line_chars / total_chars,
    }
    chars = sum(len(x) for x in w) or 1
    for n in (2, 3, 4):
        grams = Counter(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
        top = grams.most_common(1)
        out[f"top_{n}gram_char_frac"] = (
            (sum(map(len, top[0][0])) * top[0][1] / chars) if top and top[0][1] > 1 else 0.0
        )
    covered = [False] * len(w)
    for n in range(5, 11):
        grams = Counter(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
        for i in range(len(w) - n + 1):
            if grams[tuple(w[i : i + n])] > 1:
                for k in range(i, i + n):
                    covered[k] = True
    out["dup_5_10gram_char_frac"] = sum(len(x) for x, c in zip(w, covered, strict=True) if c) / chars
    return out


def junk_ratio(text: str) -> float:
    """Share of characters that are neither letters, digits, whitespace nor common punctuation."""
    if not text:
        return 0.0
    ok = sum(ch.isalnum() or ch.isspace() or ch in ".,;:!?'\"()-–—/&%$€£@#*+=<>[]{}_`~|\\^" for ch in text)
    return 1 - ok / len(text)


def luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        k = int(d) * (2 if i % 2 else 1)
        total += k - 9 if k > 9 else k
    return total % 10 == 0


def find_pii(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every PII match, earlier kinds first where they overlap (email > card > ip > phone)."""
    found: list[tuple[str, int, int]] = []
    taken: list[tuple[int, int]] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e in taken)

    for kind, rx in (("email", EMAIL), ("card", CARD), ("ip", IPV4), ("phone", PHONE)):
        for m in rx.finditer(text):
            if kind == "card" and not luhn(re.sub(r"\D", "", m.group(0))):
                continue
            if kind == "phone" and not 7 <= len(re.sub(r"\D", "", m.group(0))) <= 15:  # E.164: at most 15
                continue
            if free(m.start(), m.end()):
                found.append((kind, m.start(), m.end()))
                taken.append((m.start(), m.end()))
    return sorted(found, key=lambda f: f[1])


def redact_pii(text: str) -> tuple[str, Counter]:
    out, pos, counts = [], 0, Counter()
    for kind, a, b in find_pii(text):
        out += [text[pos:a], PII_LABELS[kind]]
        pos = b
        counts[kind] += 1
    out.append(text[pos:])
    return "".join(out), counts


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
