"""Fuzz: thousands of generated malformed preference and SFT rows (random types, missing keys, huge strings,
bad bytes, odd line ends, blank lines, repeated and numeric ids) through `rlhf import` and the SFT
validation. Exit 0 or 2, never a traceback; rows in = kept + rejected (+ blank lines); every rejection names
a row and a reason; every row built to be valid is kept, by id."""

import io
import json
import random
from contextlib import redirect_stderr, redirect_stdout

import pytest

from rlhf.cli import main
from rlhf.data import load_rows, normalize_sft_row, validate_rows

SEPARATORS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\r"]


def text(rng: random.Random, n: int | None = None) -> str:
    n = n if n is not None else rng.randint(1, 40)
    alphabet = "abc xyz ÄÖü 漢字 🙂" + "".join(SEPARATORS) + '"\\<>{}'
    s = "".join(rng.choice(alphabet) for _ in range(n))
    return "w" + s + "z"  # never blank after strip


def valid_preference(rng: random.Random, rid: str) -> dict:
    kind = rng.randrange(3)
    if kind == 0:
        row = {"prompt": text(rng), "chosen": text(rng), "rejected": text(rng) + "!"}
    elif kind == 1:
        row = {
            "prompt": [{"role": "user", "content": text(rng)}],
            "chosen": [{"role": "assistant", "content": text(rng)}],
            "rejected": [{"role": "assistant", "content": text(rng) + "?"}],
        }
    else:
        q = text(rng)
        row = {
            "chosen": f"\n\nHuman: {q}\n\nAssistant: yes {text(rng)}",
            "rejected": f"\n\nHuman: {q}\n\nAssistant: no",
        }
    if rng.random() < 0.05:
        row["chosen"] = row["chosen"] + "x" * 100_000 if isinstance(row["chosen"], str) else row["chosen"]
    row["id"] = rid
    return row


def malformed_preference(rng: random.Random) -> dict | list | str | int | None:
    junk = [None, 5, 3.5, True, [], {}, [1, 2], {"a": 1}, "", "   "]
    base = {"prompt": text(rng), "chosen": text(rng), "rejected": text(rng) + "."}
    choice = rng.randrange(7)
    if choice == 0:
        base.pop(rng.choice(["chosen", "rejected"]))
    elif choice == 1:
        base[rng.choice(["prompt", "chosen", "rejected"])] = rng.choice(junk)
    elif choice == 2:
        base["rejected"] = base["chosen"]
    elif choice == 3:
        base["margin"] = rng.choice(["big", float("nan"), [1], True])
    elif choice == 4:
        base["chosen"] = [{"role": "wizard", "content": "x"}]
    elif choice == 5:
        return rng.choice([[1, 2], "a string", 7, None])
    else:
        base = {"chosen": "no transcript markers", "rejected": "none here either"}
    if rng.random() < 0.5:
        base["id"] = rng.choice([rng.randint(0, 50), f"dup{rng.randint(0, 5)}", None, ""])
    return base


def write_fuzz_file(path, rng: random.Random, n: int) -> tuple[set[str], int]:
    """Write n lines of mixed rows; returns (ids of the rows built valid, blank lines written)."""
    valid_ids, blanks = set(), 0
    with open(path, "wb") as f:
        for i in range(n):
            r = rng.random()
            if r < 0.45:
                rid = f"v{i}"
                valid_ids.add(rid)
                line = json.dumps(valid_preference(rng, rid), ensure_ascii=False).encode()
            elif r < 0.8:
                line = json.dumps(malformed_preference(rng), ensure_ascii=False).encode()
            elif r < 0.87:
                good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}).encode()
                cut = rng.randrange(len(good))
                line = good[:cut] + bytes([rng.choice([0xFF, 0xC3, 0x80, 0xFE, 0xED])]) + good[cut:]
            elif r < 0.93:
                line = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}).encode()[
                    : rng.randint(1, 20)
                ]
            elif r < 0.97:
                line = rng.choice([b"", b"   ", b"\t"])
                blanks += 1
            else:
                line = rng.choice([b"[1, 2]", b'"just a string"', b"null", b"{}"])
            f.write(line + rng.choice([b"\n", b"\r\n"]))
    return valid_ids, blanks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_import_survives_malformed_rows(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "fuzz.jsonl"
    valid_ids, blanks = write_fuzz_file(path, rng, 1500)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["import", f"source={path}", f"run.output_root={tmp_path}/runs", "run.name=fuzz"])
    assert code in (0, 2), err.getvalue()
    assert "Traceback" not in err.getvalue()
    assert "internal error" not in err.getvalue()
    assert code == 0, err.getvalue()  # there are valid rows, so the import itself succeeds
    manifest = json.loads((tmp_path / "runs" / "fuzz" / "manifest.json").read_text())
    acct = manifest["accounting"]
    assert acct["rows_in"] == 1500 - blanks
    assert acct["blank_lines"] == blanks
    assert acct["rows_in"] == acct["rows_kept"] + acct["rows_rejected"]
    rejected = [
        json.loads(x) for x in (tmp_path / "runs" / "fuzz" / "rejected.jsonl").read_text().split("\n") if x
    ]
    assert len(rejected) == acct["rows_rejected"] > 0
    assert all(r["id"] and r["reason"] and ":" in r["reason"] for r in rejected)
    kept = [
        json.loads(x) for x in (tmp_path / "runs" / "fuzz" / "preferences.jsonl").read_text().split("\n") if x
    ]
    kept_ids = {str(r["id"]) for r in kept}
    assert valid_ids <= kept_ids, sorted(valid_ids - kept_ids)[:5]
    assert len(kept_ids) == len(kept)  # ids unique after normalization (repeats renamed)


@pytest.mark.parametrize("seed", [3, 4])
def test_sft_validation_survives_malformed_rows(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "sft.jsonl"
    valid_ids = set()
    with open(path, "wb") as f:
        for i in range(1500):
            if rng.random() < 0.5:
                rid = f"s{i}"
                valid_ids.add(rid)
                row = {
                    "id": rid,
                    "messages": [
                        {"role": "user", "content": text(rng)},
                        {"role": "assistant", "content": text(rng)},
                    ],
                }
                f.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
            else:
                bad = rng.choice(
                    [
                        {"messages": "not a list"},
                        {"messages": [{"role": "user", "content": "q"}]},
                        {"prompt": "q"},
                        {"prompt": 5, "completion": "a"},
                        {
                            "messages": [
                                {"role": "user", "content": ""},
                                {"role": "assistant", "content": "a"},
                            ]
                        },
                    ]
                )
                if rng.random() < 0.3:
                    bad["id"] = rng.choice([1, 2, "dup", None])
                line = json.dumps(bad).encode()
                if rng.random() < 0.2:
                    line = line[:5] + b"\xff" + line[5:]
                f.write(line + b"\n")
    rows = load_rows(str(path), what="data.train")
    kept, acct = validate_rows(rows, lambda r: normalize_sft_row(r, as_chat=True), what="data.train")
    assert acct.rows_in == 1500 == acct.rows_kept + len(acct.rejected)
    assert valid_ids <= set(acct.kept_ids)
    assert all(r.id and r.reason for r in acct.rejected)
    assert len(set(acct.kept_ids)) == len(acct.kept_ids)
