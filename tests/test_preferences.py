import json
from collections import Counter
from pathlib import Path

import pytest
from support.data import write_jsonl

from rlhf.errors import DataError
from rlhf.preferences import (
    hh_to_preference,
    import_preferences,
    normalize_preference_row,
    parse_hh_transcript,
    preference_token_length,
)
from rlhf.preferences import write_jsonl as write_pref_jsonl

HH_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_harmless_1800.jsonl"


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def hh(*turns):
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


# -- HH transcripts -----------------------------------------------------------------------------------------


def test_parse_hh_transcript_strips_and_keeps_inline_markers():
    text = "\n\nHuman:  hi there \n\nAssistant: Human: quoted, not a turn\n\nHuman: bye\n\nAssistant: "
    assert parse_hh_transcript(text) == [
        u("hi there"),
        a("Human: quoted, not a turn"),
        u("bye"),
        a(""),
    ]
    assert parse_hh_transcript("Human: q\n\nAssistant: r") == [u("q"), a("r")]


@pytest.mark.parametrize(
    "text,match",
    [
        ("just some text", "no 'Human:' or 'Assistant:' turns"),
        ("", "no 'Human:' or 'Assistant:' turns"),
        ("preamble\n\nHuman: q\n\nAssistant: r", "text before the first turn marker"),
        (None, "expected a transcript string, got NoneType"),
    ],
)
def test_parse_hh_transcript_malformed(text, match):
    with pytest.raises(ValueError, match=match):
        parse_hh_transcript(text)


def test_multi_turn_hh_splits_on_shared_prefix():
    row = {
        "chosen": hh(
            "How do I bake bread?", "Flour, water, yeast.", "How long to knead?", "About 10 minutes."
        ),
        "rejected": hh("How do I bake bread?", "Flour, water, yeast.", "How long to knead?", "No idea."),
    }
    out, reason = hh_to_preference(row)
    assert reason is None
    assert out == {
        "prompt": [u("How do I bake bread?"), a("Flour, water, yeast."), u("How long to knead?")],
        "chosen": [a("About 10 minutes.")],
        "rejected": [a("No idea.")],
    }
    assert normalize_preference_row({**row, "id": "hh-1"}) == ({**out, "id": "hh-1"}, None)


@pytest.mark.parametrize(
    "chosen,rejected,reason",
    [
        (
            hh("q", "r1", "follow-up A", "final"),
            hh("q", "r1", "follow-up B", "final"),
            "bad transcript: chosen and rejected must differ only in their final assistant turn, but they "
            "first differ at turn 2 (user) and 'chosen' has 2 turns (user, assistant) after the shared turns",
        ),
        (
            hh("q", "r1"),
            hh("q", "r1", "more", "r2"),
            "bad transcript: chosen and rejected must differ only in their final assistant turn, but they "
            "first differ at turn 2 (user) and 'chosen' has no turn after the shared turns",
        ),
        (
            hh("q", "same answer"),
            hh("q", "  same answer "),
            "identical responses: the chosen and rejected conversations are the same",
        ),
        (hh("q", "r"), hh("q", ""), "empty rejected: the assistant turn in 'rejected' is empty"),
        (hh("q", ""), hh("q", "r"), "empty chosen: the assistant turn in 'chosen' is empty"),
        (
            hh("", "r1", "q", "x"),
            hh("", "r1", "q", "y"),
            "empty content: turn 0 (user) is empty (in 'prompt')",
        ),
        (
            "\n\nHuman: q\n\nAssistant: a\n\nAssistant: b",
            "\n\nHuman: q\n\nAssistant: a\n\nAssistant: c",
            "bad transcript: the shared turns (the prompt) end with a assistant turn, not user",
        ),
        ("oops\n\nHuman: q\n\nAssistant: x", hh("q", "y"), None),
    ],
)
def test_hh_rejections(chosen, rejected, reason):
    out, got = hh_to_preference({"chosen": chosen, "rejected": rejected})
    assert out is None
    if reason is None:
        assert got.startswith("bad transcript: text before the first turn marker")
        assert "(in 'chosen')" in got
    else:
        assert got == reason
    assert normalize_preference_row({"chosen": chosen, "rejected": rejected}) == (None, got)


# -- TRL rows -----------------------------------------------------------------------------------------------


def test_string_rows_wrapped_in_chat_or_kept_raw():
    row = {"prompt": "q", "chosen": "good", "rejected": "bad"}
    assert normalize_preference_row(row) == (
        {"prompt": [u("q")], "chosen": [a("good")], "rejected": [a("bad")]},
        None,
    )
    assert normalize_preference_row(row, as_chat=False) == (row, None)


def test_conversational_rows_kept():
    row = {
        "prompt": [{"role": "system", "content": "be brief"}, u("hi"), a("hello"), u("name a colour")],
        "chosen": [a("blue")],
        "rejected": [a("I cannot")],
    }
    assert normalize_preference_row(row) == (row, None)
    assert normalize_preference_row(row, as_chat=False) == (row, None)


def test_implicit_prompt_conversations_split():
    row = {
        "chosen": [u("hi"), a("hello"), u("colour?"), a("blue")],
        "rejected": [u("hi"), a("hello"), u("colour?"), a("no")],
    }
    out, reason = normalize_preference_row(row)
    assert reason is None
    assert out == {
        "prompt": [u("hi"), a("hello"), u("colour?")],
        "chosen": [a("blue")],
        "rejected": [a("no")],
    }
    bad = {"chosen": [u("hi"), a("x")], "rejected": [u("ho"), a("y")]}
    assert normalize_preference_row(bad)[1].startswith("bad transcript: ")
    assert "turn 0 (user)" in (normalize_preference_row(bad)[1])


def test_margin_kept_and_checked():
    row = {"id": 7, "prompt": "q", "chosen": "good", "rejected": "bad", "margin": 2.5}
    out, reason = normalize_preference_row(row, as_chat=False)
    assert reason is None
    assert out == row
    assert normalize_preference_row({**row, "margin": None}, as_chat=False)[0] == {
        k: v for k, v in row.items() if k != "margin"
    }
    for bad, text in (
        ("high", "str 'high'"),
        (True, "bool True"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
    ):
        out, reason = normalize_preference_row({**row, "margin": bad})
        assert out is None
        assert reason == f"bad margin: expected a finite number, got {text}"


MISSING = "missing columns: need 'chosen' and 'rejected' (and 'prompt' unless they are full conversations)"


@pytest.mark.parametrize(
    "row,reason",
    [
        ({"prompt": "q", "chosen": "a"}, MISSING),
        ({"text": "x"}, MISSING),
        ({"chosen": "good", "rejected": "bad"}, MISSING),
        (
            {"prompt": "q", "chosen": " same", "rejected": "same  "},
            "identical responses: 'chosen' and 'rejected' are the same after stripping whitespace",
        ),
        ({"prompt": "q", "chosen": "a", "rejected": "   "}, "empty rejected: 'rejected' is empty"),
        ({"prompt": " ", "chosen": "a", "rejected": "b"}, "empty prompt: 'prompt' is empty"),
        (
            {"prompt": [u("q")], "chosen": [a("x")], "rejected": [a(" ")]},
            "empty rejected: the assistant turn in 'rejected' is empty",
        ),
        (
            {"prompt": [u("q"), a("r")], "chosen": [a("x")], "rejected": [a("y")]},
            "bad messages: the last turn must be user, got assistant (in 'prompt')",
        ),
        (
            {"prompt": [u("q")], "chosen": [a("x"), a("z")], "rejected": [a("y")]},
            "bad chosen: expected one assistant message, got 2 turns (assistant, assistant)",
        ),
        (
            {"prompt": [u("q")], "chosen": [u("x")], "rejected": [a("y")]},
            "bad chosen: expected one assistant message, got 1 turn (user)",
        ),
        (
            {"prompt": "q", "chosen": [a("x")], "rejected": [a("y")]},
            "mixed formats: prompt, chosen and rejected must all be strings or all message lists",
        ),
        (
            {"chosen": [u("q"), a("x")], "rejected": "\n\nHuman: q\n\nAssistant: y"},
            "mixed formats: without 'prompt', chosen and rejected must both be HH transcripts or both full "
            "conversations (got list and str)",
        ),
        (
            {"prompt": 3, "chosen": "a", "rejected": "b"},
            "bad prompt: expected a string or a message list, got int",
        ),
        (
            {"chosen": [u("q"), {"role": "bot", "content": "x"}], "rejected": [u("q"), a("y")]},
            "bad messages: turn 1 has role 'bot' (expected one of system, user, assistant, tool) (in 'chosen')",
        ),
    ],
)
def test_row_rejection_reasons(row, reason):
    assert normalize_preference_row(row) == (None, reason)


# -- lengths, import ----------------------------------------------------------------------------------------


class CountingTokenizer:
    """One token per word; the chat template adds two tokens per message."""

    def __call__(self, text):
        return {"input_ids": text.split()}

    def apply_chat_template(self, messages, *, tokenize, return_dict):
        assert tokenize
        assert not return_dict
        return [0] * sum(2 + len(m["content"].split()) for m in messages)


def test_preference_token_length_uses_longer_response():
    tok = CountingTokenizer()
    chat = {"prompt": [u("one two")], "chosen": [a("x")], "rejected": [a("x y z")]}
    assert preference_token_length(tok, chat) == (2 + 2) + (2 + 3)
    assert preference_token_length(tok, {"prompt": "one two ", "chosen": "x y", "rejected": "x"}) == 4


def test_preference_token_length_with_real_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = {"prompt": [u("the cat")], "chosen": [a("yes")], "rejected": [a("no no no")]}
    longer = tok.apply_chat_template([u("the cat"), a("no no no")], tokenize=True, return_dict=False)
    assert preference_token_length(tok, row) == len(longer) > 0


def test_import_accounts_for_every_row(tmp_path):
    src = write_jsonl(
        tmp_path / "prefs.jsonl",
        [
            {"id": "ok-hh", "chosen": hh("the cat", "yes"), "rejected": hh("the cat", "no")},
            {"id": "ok-trl", "prompt": "the dog", "chosen": "sat", "rejected": "ran", "margin": 1},
            {"id": "same", "prompt": "q", "chosen": "x", "rejected": "x"},
            {"id": "long", "prompt": "a " * 40, "chosen": "b", "rejected": "c"},
            "not json",
        ],
    )
    kept, acct = import_preferences(src, what="data.train", max_length=30, tokenizer=CountingTokenizer())
    assert [r["id"] for r in kept] == ["ok-hh", "ok-trl"]
    assert kept[1]["margin"] == 1
    assert kept[1]["prompt"] == [u("the dog")]
    assert acct.rows_in == 5
    assert acct.rows_kept == 2
    assert {r.id: r.reason.split(":")[0] for r in acct.rejected} == {
        "line 5": "invalid JSON",
        "same": "identical responses",
        "long": "too long",
    }
    kept_raw, _ = import_preferences(src, as_chat=False)
    assert kept_raw[1]["prompt"] == "the dog"
    assert len(kept_raw) == 3  # no length check without max_length
    with pytest.raises(ValueError, match="needs a tokenizer"):
        import_preferences(src, max_length=10)
    with pytest.raises(DataError, match="all 1 rows"):
        import_preferences(write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q"}]))


def test_write_jsonl_round_trips(tmp_path):
    rows = [{"prompt": [u("héllo")], "chosen": [a("x")], "rejected": [a("y")], "margin": 0.5}]
    p = write_pref_jsonl(rows, tmp_path / "sub" / "out.jsonl")
    assert [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()] == rows


# -- the real HH file ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_import_real_hh_harmless_file():
    if not HH_FILE.is_file():
        pytest.skip(f"real HH data not found at {HH_FILE} (the shared data folder is not mounted here)")
    kept, acct = import_preferences(str(HH_FILE), what="hh_harmless")
    assert acct.rows_in == 1800
    assert acct.rows_kept == len(kept)
    assert acct.rows_kept + len(acct.rejected) == 1800
    for r in acct.rejected:
        assert r.id and r.reason and ":" in r.reason, r
        print(f"rejected {r.id}: {r.reason}")
    print(
        "kept",
        acct.rows_kept,
        "rejected by reason",
        dict(Counter(r.reason.split(":")[0] for r in acct.rejected)),
    )
    assert acct.rows_kept > 1700
    for row in kept:
        assert row["prompt"][-1]["role"] == "user"
        assert row["chosen"][0]["content"].strip() != row["rejected"][0]["content"].strip()
