"""The pure text checks of `rlhf clean`, against hand-computed values."""

import pytest

from rlhf.clean import contamination, eval_texts_of, pii
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


def test_character_shingles_for_short_texts():
    assert c.char_shingles("Hi, Bob!", 3) == {"hi ", "i b", " bo", "bob"}  # punctuation does not count
    assert c.char_shingles("a", 3) == {"a"}
    long = " ".join(f"w{i}" for i in range(60))
    assert c.adaptive_shingles(long, 5) == c.shingles(long, 5)
    short = c.adaptive_shingles("How do I make a cake?", 5, short_words=50)
    assert short == c.char_shingles("How do I make a cake?", 3)


def test_gopher_repetition_per_n_thresholds():
    """datatrove's Gopher filter applies each n its own threshold: text whose repeated 10-grams cover 11 % of
    its characters (40 of 369) fails at n = 10 (0.10) — a single 5..10-gram threshold of 0.3 let it through."""
    from rlhf.clean.rows import RepetitionSettings, repetition_reason

    unique = " ".join(f"word{i}" for i in range(40))
    ten = " ".join(f"rep{i}" for i in range(10))
    text = f"{unique} {ten} {ten}"
    assert repetition_reason(text, RepetitionSettings()) == "duplicated_10_n_grams"
    loose = RepetitionSettings(dup_ngram_frac=[0.3, 0.3, 0.3, 0.3, 0.3, 0.3])
    assert repetition_reason(text, loose) is None
    assert repetition_reason("buy now " * 30, RepetitionSettings()) == "top_2_gram"
    assert repetition_reason("buy now " * 30, RepetitionSettings(min_words=100)) is None  # too short to judge
    assert repetition_reason(unique, RepetitionSettings()) is None


def test_junk_ratio():
    assert c.junk_ratio("Hello, world!") == 0.0
    assert c.junk_ratio("ab\x00\x01") == pytest.approx(0.5)
    assert c.junk_ratio("") == 0.0


def test_pii_found_by_presidio_and_redacted():
    text = "Mail ann.lee+x@example.co.uk or call +1 415-555-0132, server 8.8.8.8, card 4111 1111 1111 1111."
    assert [f.kind for f in pii.find_pii(text)] == ["email", "phone", "ip", "card"]
    red, found = pii.redact_pii(text)
    assert red == "Mail [EMAIL] or call [PHONE], server [IP], card [CARD]."
    assert pii.counts(found) == {"email": 1, "phone": 1, "ip": 1, "card": 1}
    assert pii.redact_pii("iban DE89370400440532013000")[0] == "iban [IBAN]"


@pytest.mark.parametrize(
    "text",
    [
        "We met on 2023-01-15 in Paris.",
        "About 100 000 000 people live there.",
        "Version 10.12.14.3 of the firmware",  # and a private address identifies no one either
        "http://example.com/2019/03/12/story",
        "order 4111 1111 1111 1112 of version 1.2.3",  # fails Luhn
        "in 2023 we had 12 cats and 1999-2003 was long",
        "server 192.168.0.12 is down",
    ],
)
def test_dates_and_numbers_are_not_pii(text):
    assert pii.find_pii(text) == []


@pytest.mark.parametrize(
    "text", ["(555) 123-4567", "call 555-1234 tonight", "+44 20 7946 0958", "07911 123456"]
)
def test_phone_numbers_are_pii(text):
    assert [f.kind for f in pii.find_pii(text)] == ["phone"]


def test_decontamination_overlap():
    eval_grams = c.shingles("what is the capital of france", 3)
    assert c.overlap("What is the capital of France?", eval_grams, 3) == 1.0
    assert c.overlap("the capital of spain is madrid", eval_grams, 3) == pytest.approx(
        1 / 4
    )  # 'the capital of'
    assert c.overlap("", eval_grams, 3) == 0.0


def test_contamination_reads_prompts_and_answers_and_matches_short_texts_exactly():
    evals = eval_texts_of(
        [
            {"prompt": "Name the capital of France.", "chosen": "Paris is the capital.", "rejected": "Rome."},
            {
                "messages": [
                    {"role": "user", "content": "Count to three"},
                    {"role": "assistant", "content": "1 2 3"},
                ]
            },
        ]
    )
    assert evals == [
        "Name the capital of France.",
        "Paris is the capital.",
        "Rome.",
        "Count to three",
        "1 2 3",
    ]
    long_eval = "please write a short poem about the sea at night with stars and a small boat"
    rows = [
        {
            "id": "a",
            "prompt": "name the capital of france",
            "chosen": "x y z",
            "rejected": "q",
        },  # short: exact
        {
            "id": "b",
            "prompt": "Tell me a joke.",
            "chosen": "Paris is the capital!",
            "rejected": "No.",
        },  # answer
        {
            "id": "c",
            "prompt": "Name the capital of Spain.",
            "chosen": "Madrid.",
            "rejected": "Rome.",
        },  # 1 word
        {
            "id": "d",
            "prompt": long_eval.replace("boat", "ship") + " please",
            "chosen": "ok",
            "rejected": "no",
        },
        "Count to three",
    ]
    report = contamination(rows, [*evals, long_eval], ngram=8, threshold=0.5)
    assert report.contaminated == [0, 1, 3, 4]
    assert [(h.id, h.part, h.match) for h in report.hits] == [
        ("a", "prompt", "exact"),
        ("b", "chosen", "exact"),
        ("d", "prompt", "ngram"),
        (None, "text", "exact"),
    ]
    assert report.summary()["rows_contaminated"] == 4


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
