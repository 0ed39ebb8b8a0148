"""Hostile-but-fair inputs, one class per test: each ends in a clear `error:` line (exit 2) or in per-row
rejections with the row and the reason — never a traceback, never a silent wrong result."""

import io
import json
import os
import statistics
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest
from support.data import write_jsonl

from rlhf.cli import main
from rlhf.config import load_config
from rlhf.data import load_rows, normalize_sft_row, validate_rows
from rlhf.errors import ConfigError
from rlhf.store.service import Store, StoreError


def cli(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(argv))
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err and "internal error" not in err, err
    for n in needles:
        assert n in err, err


PAIR = {"prompt": "p", "chosen": "good", "rejected": "bad"}


# -- data files -----------------------------------------------------------------------------------------------


def test_bad_bytes_reject_only_their_lines(tmp_path):
    path = tmp_path / "prefs.jsonl"
    lines = [json.dumps({**PAIR, "id": f"r{i}"}).encode() for i in range(5)]
    lines[1] = lines[1][:10] + b"\xff\xfe" + lines[1][10:]
    lines[3] = b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}'  # latin-1, not UTF-8
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = cli("import", f"source={path}", f"run.output_root={tmp_path}/runs", "run.name=bad")
    assert code == 0, err
    run = tmp_path / "runs" / "bad"
    rejected = [json.loads(x) for x in (run / "rejected.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"].split(":")[0]) for r in rejected] == [
        ("line 2", "invalid UTF-8"),
        ("line 4", "invalid UTF-8"),
    ]
    assert "byte 0xff at column 11" in rejected[0]["reason"]
    kept = [json.loads(x)["id"] for x in (run / "preferences.jsonl").read_text().splitlines()]
    assert kept == ["r0", "r2", "r4"]


def test_bad_bytes_in_a_json_array_spoil_only_their_row(tmp_path):
    path = tmp_path / "prefs.json"
    good = json.dumps(
        [{**PAIR, "id": "a"}, {**PAIR, "id": "b", "chosen": "XX"}, {**PAIR, "id": "c"}]
    ).encode()
    path.write_bytes(good.replace(b"XX", b"\xc3\x28"))
    rows = load_rows(str(path), what="data.train")
    assert rows.ids == ["a", "c"]
    assert [r.id for r in rows.unreadable] == ["row 1"]
    assert rows.unreadable[0].reason.startswith("invalid UTF-8")


def test_unicode_line_separators_inside_strings_do_not_split_rows(tmp_path):
    rows = [
        {**PAIR, "id": f"r{i}", "chosen": f"one{sep}two"}
        for i, sep in enumerate(["\u2028", "\x85", "\u2029"])
    ]
    path = tmp_path / "sep.jsonl"
    path.write_bytes(b"\n".join(json.dumps(r, ensure_ascii=False).encode() for r in rows) + b"\r\n")
    loaded = load_rows(str(path), what="data.train")
    assert loaded.count == 3
    assert not loaded.unreadable
    assert [r["chosen"] for r in loaded.rows] == ["one\u2028two", "one\x85two", "one\u2029two"]


def test_ids_become_strings_repeats_are_renamed_and_blank_lines_counted(tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({**PAIR, "id": 7}),
                json.dumps({**PAIR, "id": "7"}),
                "",
                json.dumps({**PAIR, "id": "x"}),
                "   ",
                json.dumps({**PAIR, "id": "x"}),
                json.dumps({**PAIR}),
            ]
        )
        + "\n"
    )
    code, out, err = cli("import", f"source={path}", f"run.output_root={tmp_path}/runs", "run.name=ids")
    assert code == 0, err
    run = tmp_path / "runs" / "ids"
    kept = [json.loads(x) for x in (run / "preferences.jsonl").read_text().splitlines()]
    assert [r.get("id") for r in kept] == ["7", "7#2", "x", "x#2", None]
    acct = json.loads((run / "manifest.json").read_text())["accounting"]
    assert acct["rows_in"] == 5
    assert acct["blank_lines"] == 2
    assert acct["ids_repeated"] == 2
    assert acct["ids_renamed_examples"][0] == {"id": "7", "renamed": "7#2", "row": "line 2"}
    assert "2 blank lines skipped" in out
    assert "2 repeated ids renamed" in out


def test_sft_rows_with_mixed_id_types_train_data_builds(tmp_path):
    path = write_jsonl(
        tmp_path / "sft.jsonl",
        [
            {"id": 1, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            {
                "id": "1",
                "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}],
            },
        ],
    )
    kept, acct = validate_rows(
        load_rows(path, what="data.train"), lambda r: normalize_sft_row(r, as_chat=True), what="data.train"
    )
    assert acct.kept_ids == ["1", "1#2"]
    assert len(kept) == 2


def test_binary_config_file_is_a_clean_error(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_bytes(b"run:\n  name: \xff\xfe\x00bin\n")
    code, _, err = cli("sft", "--config", str(cfg))
    assert_clean_error(code, err, "not a UTF-8 text file", "x.yaml")


# -- config values --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, needle",
    [
        (
            "trainer.learning_rate=fast",
            "'trainer.learning_rate' must be a number (trl.SFTConfig), got 'fast'",
        ),
        ("trainer.num_train_epochs=many", "'trainer.num_train_epochs' must be a number"),
        (
            "trainer.per_device_train_batch_size=-3",
            "'trainer.per_device_train_batch_size' must be >= 1, got -3",
        ),
        ("trainer.save_strategy=sometimes", "must be one of no, steps, epoch, best"),
        ("trainer.bf16=maybe", "'trainer.bf16' must be true or false"),
    ],
)
def test_trainer_values_are_checked_at_config_load(override, needle):
    from rlhf.stages.sft import SFTStageConfig

    with pytest.raises(ConfigError) as e:
        load_config(SFTStageConfig, None, [override])
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "stage, override, needle",
    [
        ("label", "max_failed_logins=0", "'max_failed_logins' must be >= 1, got 0"),
        ("label", "lockout_s=-5", "'lockout_s' must be >= 1, got -5"),
        ("label", "port=70000", "'port' must be >= 1 and <= 65535"),
        ("label", "limits.rationale=0", "'limits.rationale' must be >= 1, got 0"),
        ("label", "login_failures_per_address=0", "'login_failures_per_address' must be >= 1, got 0"),
        ("label", "login_workers=17", "'login_workers' must be >= 1 and <= 16, got 17"),
        ("ppo", "ppo.gamma=1.5", "'ppo.gamma' must be >= 0 and <= 1, got 1.5"),
        ("ppo", "ppo.learning_rate=0", "'ppo.learning_rate' must be > 0"),
        ("generate", "project.overlap=0", "'project.overlap' must be >= 1"),
        ("generate", "sampling.top_p=2", "'sampling.top_p' must be > 0 and <= 1"),
        ("dpo", "model.lora.r=0", "'model.lora.r' must be >= 1"),
        ("reward", "report.bootstrap=0", "'report.bootstrap' must be >= 1"),
        ("dpo", "drift.num_prompts=0", "'drift.num_prompts' must be >= 1"),
    ],
)
def test_numeric_bounds_are_refused_at_load_with_the_range(stage, override, needle, tmp_path):
    code, _, err = cli(stage, override, f"run.output_root={tmp_path}")
    assert_clean_error(code, err, needle)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_score_batch_size_zero(tmp_path):
    code, _, err = cli("score", "--model", str(tmp_path), "--input", "x.jsonl", "--batch-size", "0")
    assert_clean_error(code, err, "--batch-size must be at least 1")


def test_generate_refuses_a_bad_task_before_loading_any_model(tmp_path, monkeypatch):
    import rlhf.stages.generate as gen

    monkeypatch.setattr(gen, "load_causal_lm", lambda *a, **k: pytest.fail("a model was loaded"))
    code, _, err = cli("generate", "project.task=essay", f"run.output_root={tmp_path}")
    assert_clean_error(
        code, err, "'project.task' must be one of pairwise, ranking, likert, binary; got 'essay'"
    )


# -- stores ---------------------------------------------------------------------------------------------------


def test_read_only_commands_never_create_a_store(tmp_path):
    typo = tmp_path / "typo.db"
    for argv in (
        ("export", f"store={typo}", f"run.output_root={tmp_path}/runs"),
        ("users", "list", "--store", str(typo)),
        ("stats", "demo", "--store", str(typo)),
        ("label", f"store={typo}"),
    ):
        code, _, err = cli(*argv)
        assert_clean_error(code, err, f"store '{typo}' does not exist", "rlhf generate")
        assert not typo.exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    code, _, err = cli("users", "list", "--store", str(empty))
    assert_clean_error(code, err, "is an empty file")
    assert empty.stat().st_size == 0


def test_commands_that_create_a_store_say_so(tmp_path):
    new = tmp_path / "sub" / "new.db"
    code, out, err = cli(
        "users", "add", "ann", "--store", str(new), "--password-stdin", stdin="password123\n"
    )
    assert code == 0
    assert "created a new store" in err
    assert new.exists()
    code, out, err = cli(
        "users", "add", "bob", "--store", str(new), "--password-stdin", stdin="password123\n"
    )
    assert code == 0
    assert "created" not in err


@pytest.mark.parametrize("kind", ["directory", "not-a-database", "unreachable-postgres"])
def test_store_errors_are_one_line_naming_the_store(tmp_path, kind):
    if kind == "directory":
        target, needle = str(tmp_path), "is a directory"
    elif kind == "not-a-database":
        target = str(tmp_path / "notes.txt")
        (tmp_path / "notes.txt").write_text("hello, not a database\n" * 10)
        needle = "not a SQLite database"
    else:
        target, needle = (
            "postgresql://nobody@127.0.0.1:9/nowhere",
            "check that the PostgreSQL server is running",
        )
    for argv in (("users", "list", "--store", target), ("stats", "demo", "--store", target)):
        code, _, err = cli(*argv)
        assert_clean_error(code, err, f"store '{target}'", needle)
        assert err.count("\n") == 1
    code, _, err = cli("users", "add", "ann", "--store", target, "--password-stdin", stdin="password123\n")
    assert_clean_error(code, err, f"store '{target}'")


def test_users_add_without_a_terminal_says_how_to_pass_the_password(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = cli("users", "add", "ann", "--store", str(tmp_path / "u.db"))
    assert_clean_error(code, err, "--password-stdin", "no terminal")


@pytest.mark.parametrize(
    "name", ["<b>eve</b>", "ann smith", "a\x07b", "x" * 65, "", "**bold**", "[l](javascript:x)"]
)
def test_usernames_are_printable_bounded_and_markup_free(tmp_path, name):
    with Store(str(tmp_path / "u.db")) as s, pytest.raises(StoreError, match="is not allowed"):
        s.add_user(name, "password123")


def test_unknown_users_take_as_long_as_wrong_passwords(tmp_path):
    with Store(str(tmp_path / "t.db")) as s:
        s.add_user("ann", "password123")

        def timed(user: str) -> float:
            t0 = time.perf_counter()
            assert s.authenticate(user, "wrong-password") is None
            return time.perf_counter() - t0

        known = statistics.median(timed("ann") for _ in range(5))
        unknown = statistics.median(timed("nobody") for _ in range(5))
    assert unknown > 0.5 * known, (unknown, known)  # both pay one scrypt hash (was ~2 ms vs ~30 ms)


# -- models ---------------------------------------------------------------------------------------------------


def test_score_refuses_a_model_that_is_not_a_reward_model(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", [PAIR])
    for model in (tiny_model_dir, "minilm-l6"):
        code, _, err = cli("score", "--model", model, "--input", data)
        assert_clean_error(code, err, "is not a reward model trained by rlhf", "rlhf reward")
    code, _, err = cli("score", "--model", str(tmp_path / "missing"), "--input", data)
    assert_clean_error(code, err, "--model", "rlhf reward")
    os.makedirs(tmp_path / "out")
    code, _, err = cli("score", "--model", tiny_model_dir, "--input", data, "--output", str(tmp_path / "out"))
    assert_clean_error(code, err, "is a directory")


def test_policy_stages_refuse_a_reward_model_without_rlhf_metadata(tmp_path, tiny_model_dir):
    for stage in ("ppo", "grpo"):
        code, _, err = cli(stage, f"reward.model={tiny_model_dir}", f"run.output_root={tmp_path}")
        assert_clean_error(code, err, "is not a reward model trained by rlhf", "rlhf reward")
    assert not any(tmp_path.iterdir())
