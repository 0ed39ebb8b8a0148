"""Reading row files (.jsonl / .json / .parquet) into `Rows`, byte-safe: one bad line never spoils a file.

- JSON lines end at "\\n" only, so a U+2028 or U+0085 inside a string is text; a line that is not UTF-8, not
  JSON or not an object is rejected by its line number with the reason; blank lines are skipped and counted.
- In a .json array, bytes that are not UTF-8 spoil only the rows that hold them.
- Every row gets an id: its own `id` (normalized to a string, in the row too, so one column has one type) or
  its position; a repeated id is made unique ("x" -> "x#2") and the renaming reported, never merged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from rlhf.errors import DataError


@dataclass
class Rejection:
    id: str
    reason: str


@dataclass
class Rows:
    """Rows read from a source, with the ids used in reports and the rows that could not even be read."""

    source: str
    rows: list[dict]
    ids: list[str]
    path: Path | None = None
    unreadable: list[Rejection] = field(default_factory=list)
    blank_lines: int = 0  # skipped, and counted in the accounting
    renamed_ids: list[dict] = field(default_factory=list)  # repeated ids made unique: {id, renamed, row}

    @property
    def count(self) -> int:
        return len(self.rows) + len(self.unreadable)


def read_file(p: Path, source: str, what: str) -> Rows:
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        try:
            rows = pq.read_table(p).to_pylist()
        except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
            raise DataError(f"{what}: '{source}' is not a readable parquet file ({e}).") from None
        return make_rows(source, rows, [f"row {i}" for i in range(len(rows))], p)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"{what}: cannot read '{source}' ({e.strerror}).") from None
    if suffix == ".json" and raw.lstrip().startswith(b"["):
        return _read_json_array(raw, p, source, what)
    return _read_jsonl(raw, p, source)


def _read_jsonl(raw: bytes, p: Path, source: str) -> Rows:
    """JSON lines end at "\n" only (a U+2028 or U+0085 inside a string is text, not a line end); a line that
    is not UTF-8 or not a JSON object is rejected by its number, every other line is read."""
    lines = raw.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the final newline (or trailing blanks) ends the last line
    rows, ids, bad, blank = [], [], [], 0
    for n, data in enumerate(lines, start=1):
        if not data.strip():
            blank += 1
            continue
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append(
                Rejection(f"line {n}", f"invalid UTF-8: byte 0x{data[e.start]:02x} at column {e.start + 1}")
            )
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(Rejection(f"line {n}", f"invalid JSON: {e.msg} at column {e.colno}"))
            continue
        except RecursionError:
            bad.append(Rejection(f"line {n}", "invalid JSON: nested too deeply"))
            continue
        if not isinstance(r, dict):
            bad.append(Rejection(f"line {n}", f"not an object: got {type(r).__name__}"))
            continue
        if _has_undecodable(r):
            bad.append(Rejection(f"line {n}", "invalid text: an escaped unpaired surrogate (\\udXXX)"))
            continue
        rows.append(r)
        ids.append(f"line {n}")
    return make_rows(source, rows, ids, p, bad, blank)


def _read_json_array(raw: bytes, p: Path, source: str, what: str) -> Rows:
    """A .json array; bytes that are not UTF-8 spoil only the rows that hold them."""
    text = raw.decode("utf-8", errors="surrogateescape")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise DataError(
            f"{what}: '{source}' is not valid JSON ({e}). Fix the file or write it as JSON lines."
        ) from None
    if not isinstance(data, list):
        raise DataError(f"{what}: '{source}' holds a JSON {type(data).__name__}, not a list of rows.")
    rows, ids, bad = [], [], []
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            bad.append(Rejection(f"row {i}", f"not an object: got {type(r).__name__}"))
        elif _has_undecodable(r):
            bad.append(
                Rejection(f"row {i}", "invalid UTF-8: bytes that are not UTF-8 (or an unpaired surrogate)")
            )
        else:
            rows.append(r)
            ids.append(f"row {i}")
    return make_rows(source, rows, ids, p, bad)


def _has_undecodable(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_undecodable(k) or _has_undecodable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_undecodable(v) for v in value)
    return False


def make_rows(
    source: str, rows: list[dict], fallback_ids: list[str], path=None, bad=None, blank: int = 0
) -> Rows:
    """Rows with their report ids: a row's own `id` (normalized to a string, in the row too, so one column
    has one type) or its position. An id seen before is made unique ("x" -> "x#2") and the renaming said in
    the accounting: no row is dropped or merged because it shares an id."""
    ids, seen, renamed = [], {}, []
    for row, fallback in zip(rows, fallback_ids, strict=True):
        own = row.get("id")
        rid = fallback if own is None or (isinstance(own, str) and not own.strip()) else _id_text(own)
        if rid in seen:
            seen[rid] += 1
            new = f"{rid}#{seen[rid]}"
            while new in seen:
                seen[rid] += 1
                new = f"{rid}#{seen[rid]}"
            renamed.append({"id": rid, "renamed": new, "row": fallback})
            rid = new
        seen.setdefault(rid, 1)
        if own is not None and rid != fallback:
            row["id"] = rid
        ids.append(rid)
    return Rows(source, rows, ids, path, list(bad or []), blank_lines=blank, renamed_ids=renamed)


def _id_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)[:200]
