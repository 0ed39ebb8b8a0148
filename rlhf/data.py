"""Loading and validating rows, whatever their kind (SFT rows, prompts, preference pairs go through here).

Sources: `demo:<name>` (data shipped in rlhf/demo/), a .jsonl/.json/.parquet file, a directory written by
`datasets.save_to_disk`, or a Hugging Face dataset id. Every row gets an id (its `id` column, else
"line N" / "row N") so that each rejection names the row and the reason. Nothing is dropped silently:
rows in = rows kept + rows rejected, and the stage writes that accounting into its manifest.

SFT rows are normalized to TRL's prompt/completion form, so the loss falls on the completion only:
  {"messages": [..., {"role": "assistant", ...}]} -> prompt = all turns but the last, completion = the last
  {"prompt": str | messages, "completion": str | messages}
Plain-string prompt/completion rows are wrapped as a user turn and an assistant turn when `as_chat` (the
tokenizer's chat template then formats them, as it would at inference).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import DatasetDict, load_dataset, load_from_disk

from rlhf.errors import DataError
from rlhf.row_files import Rejection, Rows, make_rows, read_file
from rlhf.runs import declared_output

__all__ = ["Rejection", "Rows", "load_rows", "validate_rows"]  # Rows / Rejection live in rlhf.row_files

# outputs of a run directory that hold rows, in the order they are looked for
ROW_OUTPUTS = ("preferences", "rows", "prompts")

DEMO_DIR = Path(__file__).parent / "demo"
ROLES = ("system", "user", "assistant", "tool")
_FILE_KINDS = (".jsonl", ".json", ".parquet")


@dataclass
class Accounting:
    rows_in: int
    rows_kept: int
    rejected: list[Rejection]
    kept_ids: list[str] = field(default_factory=list)  # the ids of the kept rows, in order
    blank_lines: int = 0  # not rows: skipped, counted here
    renamed_ids: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        out = {
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_rejected": len(self.rejected),
            "rejected_by_reason": dict(Counter(_reason_kind(r.reason) for r in self.rejected)),
            "rejected_examples": [vars(r) for r in self.rejected[:50]],
            "blank_lines": self.blank_lines,
        }
        if self.renamed_ids:
            out["ids_repeated"] = len(self.renamed_ids)
            out["ids_renamed_examples"] = self.renamed_ids[:50]
        return out


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0]


# -- loading ------------------------------------------------------------------------------------------------


def demo_path(name: str) -> Path:
    p = DEMO_DIR / f"{name}.jsonl"
    if not p.is_file():
        names = sorted(f.stem for f in DEMO_DIR.glob("*.jsonl"))
        raise DataError(
            f"unknown demo data 'demo:{name}'. Available: {', '.join('demo:' + n for n in names)}."
        )
    return p


def source_path(source: str) -> Path | None:
    """The local file or directory behind a data source (for hashing and reading), None for hub ids. A run
    directory stands for the rows it declares (e.g. an export's preferences)."""
    if source.startswith("demo:"):
        return demo_path(source[5:])
    p = Path(source).expanduser()
    declared = declared_output(p, *ROW_OUTPUTS)
    if declared is not None:
        return declared
    return p if p.exists() else None


def load_rows(source: str, *, what: str, split: str = "train") -> Rows:
    """Read all rows of `source`; `what` names the config key for error messages (e.g. 'data.train')."""
    if source.startswith("demo:"):
        return read_file(demo_path(source[5:]), source, what)
    p = Path(source).expanduser()
    p = declared_output(p, *ROW_OUTPUTS) or p
    if p.is_file():
        if p.suffix.lower() not in _FILE_KINDS:
            raise DataError(
                f"{what}: '{source}' has an unsupported format '{p.suffix or '(no extension)'}'. "
                "Use .jsonl, .json or .parquet, a directory from datasets.save_to_disk, or a hub dataset id."
            )
        return read_file(p, source, what)
    if p.is_dir():
        return _read_saved_dataset(p, source, what, split)
    if source.startswith((".", "/", "~")) or p.suffix.lower() in _FILE_KINDS or source.count("/") > 1:
        raise DataError(
            f"{what}: file '{source}' not found (looked at {p.resolve()}). Pass an existing .jsonl/.json/"
            ".parquet file, a saved dataset directory, or a hub dataset id."
        )
    return _read_hub_dataset(source, what, split)


def _pick_split(ds: Any, source: str, what: str, split: str):
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise DataError(
                f"{what}: '{source}' has no split '{split}'; it has {', '.join(ds)}. Set data.split."
            )
        return ds[split]
    return ds


def _read_saved_dataset(p: Path, source: str, what: str, split: str) -> Rows:
    try:
        ds = _pick_split(load_from_disk(str(p)), source, what, split)
    except FileNotFoundError:
        raise DataError(
            f"{what}: directory '{source}' is not a dataset saved with datasets.save_to_disk. Pass such a "
            "directory, or a .jsonl/.json/.parquet file."
        ) from None
    rows = ds.to_list()
    return make_rows(source, rows, [f"row {i}" for i in range(len(rows))], p)


def _read_hub_dataset(source: str, what: str, split: str) -> Rows:
    try:
        ds = _pick_split(load_dataset(source, split=split), source, what, split)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - offline, missing, private: all mean "cannot read this id"
        raise DataError(
            f"{what}: '{source}' is not a local file or directory, and loading it as a Hugging Face dataset "
            f"failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). With no network, pass a "
            "local .jsonl/.json/.parquet file or a saved dataset directory."
        ) from None
    rows = ds.to_list()
    return make_rows(source, rows, [f"row {i}" for i in range(len(rows))])


def holdout_split(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held out): a seeded random `fraction` of the rows (at least one) held out, order kept."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, round(len(rows) * fraction))])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


# -- validation ---------------------------------------------------------------------------------------------


def check_messages(msgs: Any, *, last_role: str | None) -> str | None:
    """Reason a message list is unusable, or None when it is fine."""
    if not isinstance(msgs, list) or not msgs:
        return "bad messages: expected a non-empty list of {role, content}"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return f"bad messages: turn {i} is not a {{role, content}} object"
        if m["role"] not in ROLES:
            return f"bad messages: turn {i} has role {m['role']!r} (expected one of {', '.join(ROLES)})"
        if not isinstance(m["content"], str) or not m["content"].strip():
            return f"empty content: turn {i} ({m['role']}) is empty"
    if last_role and msgs[-1]["role"] != last_role:
        return f"bad messages: the last turn must be {last_role}, got {msgs[-1]['role']}"
    return None


def _check_text_or_messages(value: Any, column: str, last_role: str) -> str | None:
    if isinstance(value, str):
        return None if value.strip() else f"empty {column}: '{column}' is empty"
    if isinstance(value, list):
        reason = check_messages(value, last_role=last_role)
        return f"{reason} (in '{column}')" if reason else None
    return f"bad {column}: expected a string or a message list, got {type(value).__name__}"


def normalize_sft_row(row: dict, *, as_chat: bool) -> tuple[dict | None, str | None]:
    """One SFT row -> ({prompt, completion}, None) or (None, reason). Pure."""
    if row.get("messages") is not None:
        msgs = row["messages"]
        reason = check_messages(msgs, last_role="assistant")
        if reason:
            return None, reason
        if not any(m["role"] == "user" for m in msgs[:-1]):
            return None, "bad messages: no user turn before the final assistant turn"
        return {"prompt": msgs[:-1], "completion": msgs[-1:]}, None
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        for value, column, last in ((prompt, "prompt", "user"), (completion, "completion", "assistant")):
            reason = _check_text_or_messages(value, column, last)
            if reason:
                return None, reason
        if isinstance(prompt, str) != isinstance(completion, str):
            return None, "mixed formats: prompt and completion must both be strings or both message lists"
        if isinstance(prompt, str) and as_chat:
            prompt = [{"role": "user", "content": prompt}]
            completion = [{"role": "assistant", "content": completion}]
        return {"prompt": prompt, "completion": completion}, None
    return None, "missing columns: need 'messages', or 'prompt' and 'completion'"


def validate_rows(
    rows: Rows,
    normalize: Callable[[dict], tuple[dict | None, str | None]],
    *,
    what: str,
    length: Callable[[dict], int] | None = None,
    max_length: int | None = None,
) -> tuple[list[dict], Accounting]:
    """Normalize every row, reject bad or over-long ones with reasons. Raises if nothing usable is left."""
    kept: list[dict] = []
    kept_ids: list[str] = []
    rejected = list(rows.unreadable)
    for rid, row in zip(rows.ids, rows.rows, strict=True):
        out, reason = normalize(row)
        if out is not None and length is not None and max_length is not None:
            n = length(out)
            if n > max_length:
                out, reason = None, f"too long: {n} tokens > max_length {max_length}"
        if out is None:
            rejected.append(Rejection(rid, reason or "invalid"))
        else:
            kept.append(out)
            kept_ids.append(rid)
    acct = Accounting(
        rows_in=rows.count,
        rows_kept=len(kept),
        rejected=rejected,
        kept_ids=kept_ids,
        blank_lines=rows.blank_lines,
        renamed_ids=rows.renamed_ids,
    )
    if rows.count == 0:
        raise DataError(f"{what}: '{rows.source}' holds no rows.")
    if not kept:
        _raise_nothing_left(rows, acct, what)
    return kept, acct


def _raise_nothing_left(rows: Rows, acct: Accounting, what: str) -> None:
    kinds = Counter(_reason_kind(r.reason) for r in acct.rejected)
    first = acct.rejected[0]
    cols = sorted({k for r in rows.rows for k in r})
    hint = f" Columns found: {', '.join(cols) or '(none)'}." if "missing columns" in kinds else ""
    raise DataError(
        f"{what}: all {acct.rows_in} rows of '{rows.source}' were rejected "
        f"({', '.join(f'{k}: {v}' for k, v in kinds.items())}); first: {first.id}: {first.reason}.{hint}"
    )
