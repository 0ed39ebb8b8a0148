import json

import pytest
from support.data import make_rows, write_jsonl

from rlhf.data import Rows, load_rows, normalize_sft_row, validate_rows
from rlhf.errors import DataError


def norm(row, as_chat=True):
    return normalize_sft_row(row, as_chat=as_chat)


def test_messages_become_prompt_and_final_completion():
    msgs = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "goodbye"},
    ]
    out, reason = norm({"messages": msgs})
    assert reason is None
    assert out == {"prompt": msgs[:-1], "completion": msgs[-1:]}


def test_string_rows_wrapped_in_chat_or_kept_raw():
    out, _ = norm({"prompt": "q", "completion": "a"})
    assert out == {
        "prompt": [{"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "a"}],
    }
    out, _ = norm({"prompt": "q", "completion": "a"}, as_chat=False)
    assert out == {"prompt": "q", "completion": "a"}


@pytest.mark.parametrize(
    "row,reason",
    [
        ({"prompt": "q", "completion": "  "}, "empty completion: 'completion' is empty"),
        ({"prompt": "", "completion": "a"}, "empty prompt: 'prompt' is empty"),
        ({"text": "x"}, "missing columns: need 'messages', or 'prompt' and 'completion'"),
        ({"messages": []}, "bad messages: expected a non-empty list of {role, content}"),
        (
            {"messages": [{"role": "user", "content": "q"}]},
            "bad messages: the last turn must be assistant, got user",
        ),
        (
            {"messages": [{"role": "assistant", "content": "a"}]},
            "bad messages: no user turn before the final assistant turn",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]},
            "bad messages: turn 1 has role 'bot' (expected one of system, user, assistant, tool)",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
            "empty content: turn 1 (assistant) is empty",
        ),
        (
            {"prompt": "q", "completion": [{"role": "assistant", "content": "a"}]},
            "mixed formats: prompt and completion must both be strings or both message lists",
        ),
        ({"prompt": 3, "completion": "a"}, "bad prompt: expected a string or a message list, got int"),
    ],
)
def test_row_rejection_reasons(row, reason):
    out, got = norm(row)
    assert out is None
    assert got == reason


def test_validate_rows_accounts_for_every_row():
    rows = Rows(
        "mem",
        [
            {"prompt": "a b", "completion": "c"},
            {"prompt": "", "completion": "x"},
            {"prompt": "a " * 50, "completion": "c"},
        ],
        ["r0", "r1", "r2"],
    )
    kept, acct = validate_rows(rows, norm, what="data.train", length=lambda r: len(str(r)), max_length=150)
    assert len(kept) == 1
    assert acct.rows_in == 3
    assert acct.rows_kept == 1
    assert [(r.id, r.reason.split(":")[0]) for r in acct.rejected] == [
        ("r1", "empty prompt"),
        ("r2", "too long"),
    ]
    s = acct.summary()
    assert s["rows_in"] == s["rows_kept"] + s["rows_rejected"]
    assert s["rejected_by_reason"] == {"empty prompt": 1, "too long": 1}


def test_jsonl_bad_lines_are_reported_not_dropped(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [make_rows(1)[0], "{not json", "[1, 2]", {"messages": None, "id": "x7"}]
    )
    rows = load_rows(path, what="data.train")
    assert rows.count == 4
    assert len(rows.rows) == 2
    assert [r.id for r in rows.unreadable] == ["line 2", "line 3"]
    assert rows.unreadable[0].reason.startswith("invalid JSON")
    kept, acct = validate_rows(rows, norm, what="data.train")
    assert acct.rows_in == 4
    assert len(kept) == 1
    assert acct.rejected[-1].id == "x7"


def test_all_rejected_raises_with_columns(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}] * 3)
    with pytest.raises(DataError) as e:
        validate_rows(load_rows(path, what="data.train"), norm, what="data.train")
    msg = str(e.value)
    assert "all 3 rows" in msg
    assert "missing columns: 3" in msg
    assert "Columns found: answer, question." in msg


def test_missing_file_and_unsupported_format(tmp_path):
    with pytest.raises(DataError, match=r"data.train: file './nope.jsonl' not found"):
        load_rows("./nope.jsonl", what="data.train")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported format '.csv'. Use .jsonl, .json or .parquet"):
        load_rows(str(tmp_path / "d.csv"), what="data.train")
    with pytest.raises(
        DataError, match=r"unknown demo data 'demo:nope'. Available: demo:preferences, demo:prompts, demo:sft"
    ):
        load_rows("demo:nope", what="data.train")


def test_offline_hub_id_fails_clearly():
    with pytest.raises(
        DataError, match=r"'someone/some-dataset' is not a local file or directory, and loading it"
    ):
        load_rows("someone/some-dataset", what="data.train")


def test_json_parquet_and_saved_dataset(tmp_path):
    from datasets import Dataset

    rows = make_rows(5)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    assert len(load_rows(str(tmp_path / "d.json"), what="x").rows) == 5
    ds = Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    assert load_rows(str(tmp_path / "d.parquet"), what="x").ids == [f"r{i}" for i in range(5)]
    ds.save_to_disk(str(tmp_path / "saved"))
    assert len(load_rows(str(tmp_path / "saved"), what="x").rows) == 5


def test_demo_data_is_valid_and_big_enough():
    rows = load_rows("demo:sft", what="data.train")
    kept, acct = validate_rows(rows, norm, what="data.train")
    assert acct.rows_in >= 100
    assert not acct.rejected
    assert len(set(rows.ids)) == len(rows.ids)
    from rlhf.preferences import normalize_preference_row

    prefs = load_rows("demo:preferences", what="data.train")
    kept, acct = validate_rows(prefs, normalize_preference_row, what="data.train")
    assert acct.rows_in >= 100
    assert not acct.rejected
    prompts = load_rows("demo:prompts", what="data.prompts")
    assert len(prompts.rows) >= 40
    assert all(r["prompt"] for r in prompts.rows)
