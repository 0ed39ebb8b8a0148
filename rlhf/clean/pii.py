"""Personal data (PII) for `rlhf clean`, found by Presidio's analyzer (`presidio-analyzer`) with pattern
recognizers and their validators, offline:

- e-mail: Presidio's pattern, the domain checked against the public-suffix list that ships inside
  `tldextract` (never fetched: `suffix_list_urls=()`);
- phone: Google's libphonenumber (`phonenumbers`) through Presidio's `PhoneRecognizer` at leniency VALID
  for the regions in `REGIONS` — dates ("2023-01-15"), plain numbers ("100 000 000"), IP-like and version
  strings are not valid numbers — plus North-American layouts `(555) 123-4567`, `555-123-4567` and
  `555-1234` that libphonenumber calls *possible* (e.g. the fictional 555 exchange), because a reader
  takes them for phone numbers;
- IP: Presidio's IPv4/IPv6 patterns validated by `ipaddress`; only globally routable addresses count
  (10.12.14.3 or 192.168.0.1 identify no one outside a private network);
- card: Presidio's pattern with the Luhn check; IBAN: Presidio's pattern with the ISO 7064 check digits;
  US SSN: Presidio's pattern with its invalid-number rules (scores below `MIN_SCORE` — an unformatted
  nine-digit number — do not count).

Names are not detected: Presidio finds them with a spaCy NER pipeline, and spaCy's English pipelines are
published by their authors outside the package registries this project can use (the PyPI copies are
third-party re-uploads), so the analyzer runs with Presidio's no-op NLP engine.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

MIN_SCORE = 0.3
KINDS = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "IP_ADDRESS": "ip",
    "CREDIT_CARD": "card",
    "IBAN_CODE": "iban",
    "US_SSN": "ssn",
}
LABELS = {kind: f"[{kind.upper()}]" for kind in KINDS.values()}


@dataclass(frozen=True)
class Finding:
    """One piece of personal data: its kind (email, phone, ip, card, iban, ssn), where it is, how sure."""

    kind: str
    start: int
    end: int
    score: float


_DIGIT_OR_AT = re.compile(r"[\d@]")


def _analyzer():
    from rlhf.clean.pii_analyzer import analyzer  # lazy: Presidio takes ~6 s to import

    return analyzer()


def find_pii(text: str) -> list[Finding]:
    """Every piece of personal data in `text`, in order, overlaps resolved to the most certain finding."""
    if not _DIGIT_OR_AT.search(text):  # every recognizer needs a digit or an '@': skip the analyzer
        return []
    found = [
        Finding(KINDS[r.entity_type], r.start, r.end, round(r.score, 2))
        for r in _analyzer().analyze(text, language="en", entities=list(KINDS))
        if r.score >= MIN_SCORE
    ]
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: (-f.score, f.start, -(f.end - f.start))):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def redact_pii(text: str) -> tuple[str, list[Finding]]:
    """`text` with each finding replaced by its label ([EMAIL] [PHONE] [IP] [CARD] [IBAN] [SSN])."""
    findings = find_pii(text)
    out, pos = [], 0
    for f in findings:
        out += [text[pos : f.start], LABELS[f.kind]]
        pos = f.end
    out.append(text[pos:])
    return "".join(out), findings


def counts(findings) -> Counter:
    return Counter(f.kind for f in findings)
