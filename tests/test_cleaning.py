"""The pure text checks of `rlhf clean`, against hand-computed values."""

import pytest

from rlhf.clean import text as c


def test_normalize_and_exact_key():
    assert c.normalize("  Ｈｅｌｌｏ\u00a0  WORLD\n\tagain ") == "hello world again"  # NFKC, casefold, spaces
    assert c.exact_key("Hello  world") == c.exact_key("hello world") != c.exact_key("hello, world")
    assert c.normalize("Straße") == "strasse"


def test_shingles():
    assert c.shingles("The cat sat on the mat", 3) == {
        "the cat sat",
        "cat sat on",
        "sat on the",
        "on the mat",
    }
    assert c.shingles("one two", 3) == {"one two"}
    assert c.shingles("", 3) == set()


def test_repetition_ratios_by_hand():
    r = c.repetition("buy now\nbuy now\nbuy now\nreal text here")
    assert r["dup_line_frac"] == pytest.approx(2 / 4)  # 2 of the 4 lines repeat an earlier one
    assert r["dup_line_char_frac"] == pytest.approx(14 / 35)  # 2 x "buy now" (7) of 3 x 7 + 14 chars
    # words: buy now buy now buy now real text here -> "buy now" x3 covers 3 x 6 of 30 word characters
    assert r["top_2gram_char_frac"] == pytest.approx(18 / 30)
    clean = c.repetition("every word here is different from all the others")
    assert clean["dup_line_frac"] == 0
    assert clean["top_2gram_char_frac"] == 0
    assert clean["dup_5_10gram_char_frac"] == 0
    loop = c.repetition(" ".join(["a b c d e"] * 3))
    assert loop["dup_5_10gram_char_frac"] == pytest.approx(1.0)


def test_junk_ratio():
    assert c.junk_ratio("Hello, world!") == 0.0
    assert c.junk_ratio("ab\x00\x01") == pytest.approx(0.5)
    assert c.junk_ratio("") == 0.0


def test_pii_patterns_and_redaction():
    text = (
        "Mail ann.lee+x@example.co.uk or call +1 415-555-0132, server 192.168.0.12, card 4111 1111 1111 1111."
    )
    kinds = [k for k, _, _ in c.find_pii(text)]
    assert kinds == ["email", "phone", "ip", "card"]
    red, counts = c.redact_pii(text)
    assert red == "Mail [EMAIL] or call [PHONE], server [IP], card [CARD]."
    assert counts == {"email": 1, "phone": 1, "ip": 1, "card": 1}
    assert c.find_pii("order 4111 1111 1111 1112 of version 1.2.3") == []  # fails Luhn; not an IP; too short
    assert c.luhn("4111111111111111")
    assert not c.luhn("4111111111111112")
    assert c.find_pii("in 2023 we had 12 cats") == []


def test_decontamination_overlap():
    eval_grams = c.shingles("what is the capital of france", 3)
    assert c.overlap("What is the capital of France?", eval_grams, 3) == 1.0
    assert c.overlap("the capital of spain is madrid", eval_grams, 3) == pytest.approx(
        1 / 4
    )  # 'the capital of'
    assert c.overlap("", eval_grams, 3) == 0.0


def test_contradictory_pairs():
    rows = [
        ("r1", "Q?", "yes", "no"),
        ("r2", "q? ", "no", "yes"),  # same prompt and answers, opposite label
        ("r3", "Q?", "Yes", "No"),
        ("r4", "other", "a", "b"),
        ("r5", "other", "a", "b"),  # a plain duplicate: not a contradiction
    ]
    out = c.contradictions(rows)
    assert out == {"r1": {"ids": ["r1", "r2", "r3"], "for": 2, "against": 1, "majority": "first"}}
