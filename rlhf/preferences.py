"""Preference rows: TRL's prompt/chosen/rejected format, and import of Anthropic HH-RLHF transcripts.

Rows are normalized to TRL's explicit-prompt preference form (what DPO and reward training take):
  strings:         {"prompt": str, "chosen": str, "rejected": str}
  conversational:  {"prompt": [..., {"role": "user", ...}], "chosen": [{"role": "assistant", ...}],
                    "rejected": [{"role": "assistant", ...}]}
plus `margin` (a finite number) and `id` when the row has them. Accepted inputs:
  - explicit prompt rows, strings or message lists (plain strings are wrapped as a user turn and an
    assistant turn when `as_chat`, as data.normalize_sft_row does);
  - implicit-prompt conversational rows: no prompt, chosen/rejected are full conversations that share every
    turn but the final assistant one; the shared turns become the prompt;
  - HH-RLHF rows: no prompt, chosen/rejected are transcripts "\\n\\nHuman: ...\\n\\nAssistant: ...", split
    into messages and then treated like implicit-prompt conversations.
Implicit-prompt and HH rows are conversational by nature and stay so whatever `as_chat` says.

Every rejection is (row id, reason) with a short reason kind before the first ':' ("missing columns",
"bad transcript", "empty chosen", "identical responses", "bad margin", ...). Empty turns in a transcript are
parsed as empty messages, not errors: an empty final assistant turn rejects the row as "empty chosen" /
"empty rejected", an empty earlier turn as "empty content" (the turn is kept by the parser so that the
reason points at it). Consecutive turns of the same role are kept as they are, as data.py does for SFT.

Everything here is pure except `import_preferences` (reads the source), `write_jsonl` and
`save_preferences` (the jsonl + datasets dir that export and import write, and reward/DPO read).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets import Dataset

from rlhf.data import ROLES, Accounting, check_messages, load_rows, validate_rows
from rlhf.errors import DataError

HH_ROLES = {"Human": "user", "Assistant": "assistant"}
# A turn marker starts the text (after leading whitespace) or follows a blank line. "Human:" inside a turn
# (e.g. "Assistant: Human: ...", which HH has) is content, not a new turn.
_HH_MARKER = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):")
_MISSING = "missing columns: need 'chosen' and 'rejected' (and 'prompt' unless they are full conversations)"


# -- HH-RLHF transcripts ------------------------------------------------------------------------------------


def parse_hh_transcript(text: str) -> list[dict]:
    """Split an HH transcript: "\\n\\nHuman: q\\n\\nAssistant: a" -> [{"role": "user", "content": "q"},
    {"role": "assistant", "content": "a"}].

    Contents are stripped; empty turns are kept as empty messages (validation rejects them with a reason).
    Raises ValueError when the text is not a string, has no turn marker, or has text before the first one.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a transcript string, got {type(text).__name__}")
    markers = list(_HH_MARKER.finditer(text))
    if not markers:
        raise ValueError("no 'Human:' or 'Assistant:' turns found")
    head = text[: markers[0].start()]
    if head.strip():
        raise ValueError(f"text before the first turn marker: {_clip(head)!r}")
    msgs = []
    for i, m in enumerate(markers):
        end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
        msgs.append({"role": HH_ROLES[m.group(1)], "content": text[m.end() : end].strip()})
    return msgs


def hh_to_preference(row: dict) -> tuple[dict | None, str | None]:
    """HH row {"chosen": transcript, "rejected": transcript} -> (conversational TRL row, None) or (None, reason).

    The turns both transcripts share are the prompt (it must end with a user turn); after it each side must
    have exactly one assistant turn, its response. Transcripts that differ earlier are "bad transcript".
    """
    sides = {}
    for column in ("chosen", "rejected"):
        if column not in row or row[column] is None:
            return None, "missing columns: need 'chosen' and 'rejected' transcripts"
        try:
            sides[column] = parse_hh_transcript(row[column])
        except ValueError as e:
            return None, f"bad transcript: {e} (in '{column}')"
    return _split_conversations(sides["chosen"], sides["rejected"])


def _clip(s: str, n: int = 60) -> str:
    s = s.strip()
    return s if len(s) <= n else s[:n] + "..."


# -- normalizing --------------------------------------------------------------------------------------------


def normalize_preference_row(row: dict, *, as_chat: bool = True) -> tuple[dict | None, str | None]:
    """One preference row (TRL or HH format) -> ({prompt, chosen, rejected[, margin][, id]}, None) or
    (None, reason). Pure."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if chosen is None or rejected is None:
        return None, _MISSING
    margin, reason = _check_margin(row)
    if reason:
        return None, reason
    prompt = row.get("prompt")
    if prompt is not None:
        out, reason = _explicit(prompt, chosen, rejected, as_chat=as_chat)
    elif isinstance(chosen, str) and isinstance(rejected, str):
        if not (_looks_like_hh(chosen) or _looks_like_hh(rejected)):
            return None, _MISSING
        out, reason = hh_to_preference(row)
    elif isinstance(chosen, list) and isinstance(rejected, list):
        out, reason = _implicit(chosen, rejected)
    else:
        return None, (
            "mixed formats: without 'prompt', chosen and rejected must both be HH transcripts or both "
            f"full conversations (got {type(chosen).__name__} and {type(rejected).__name__})"
        )
    if out is None:
        return None, reason
    if margin is not None:
        out["margin"] = margin
    if row.get("id") not in (None, ""):
        out["id"] = row["id"]
    return out, None


def _looks_like_hh(text: str) -> bool:
    return "\n\nHuman:" in text or text.lstrip().startswith("Human:")


def _check_margin(row: dict) -> tuple[float | int | None, str | None]:
    margin = row.get("margin")
    if margin is None:
        return None, None
    if isinstance(margin, bool) or not isinstance(margin, int | float):
        return (
            None,
            f"bad margin: expected a finite number, got {type(margin).__name__} {_clip(repr(margin))}",
        )
    if not math.isfinite(margin):
        return None, f"bad margin: expected a finite number, got {margin}"
    return margin, None


def _explicit(prompt: Any, chosen: Any, rejected: Any, *, as_chat: bool) -> tuple[dict | None, str | None]:
    reason = _check_prompt(prompt)
    for value, column in ((chosen, "chosen"), (rejected, "rejected")):
        reason = reason or _check_response(value, column)
    if reason:
        return None, reason
    kinds = {isinstance(v, str) for v in (prompt, chosen, rejected)}
    if len(kinds) > 1:
        return None, "mixed formats: prompt, chosen and rejected must all be strings or all message lists"
    reason = _check_different(chosen, rejected)
    if reason:
        return None, reason
    if isinstance(prompt, str) and as_chat:
        prompt = [{"role": "user", "content": prompt}]
        chosen = [{"role": "assistant", "content": chosen}]
        rejected = [{"role": "assistant", "content": rejected}]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, None


def _implicit(chosen: list, rejected: list) -> tuple[dict | None, str | None]:
    for value, column in ((chosen, "chosen"), (rejected, "rejected")):
        reason = _check_shape(value)
        if reason:
            return None, f"{reason} (in '{column}')"
    return _split_conversations(chosen, rejected)


def _split_conversations(chosen: list[dict], rejected: list[dict]) -> tuple[dict | None, str | None]:
    """Two full conversations -> prompt = their shared turns, responses = the one assistant turn after it."""
    n = 0
    while n < min(len(chosen), len(rejected)) and _same_turn(chosen[n], rejected[n]):
        n += 1
    if n == len(chosen) == len(rejected):
        return None, "identical responses: the chosen and rejected conversations are the same"
    for side, column in ((chosen, "chosen"), (rejected, "rejected")):
        rest = side[n:]
        if len(rest) != 1 or rest[0]["role"] != "assistant":
            where = f"turn {n} ({chosen[n]['role'] if n < len(chosen) else rejected[n]['role']})"
            return None, (
                "bad transcript: chosen and rejected must differ only in their final assistant turn, but they "
                f"first differ at {where} and '{column}' has {_describe(rest)} after the shared turns"
            )
    prompt = chosen[:n]
    if not prompt:
        return None, "bad transcript: no shared turns before the final assistant turn (no prompt)"
    if prompt[-1]["role"] != "user":
        return (
            None,
            f"bad transcript: the shared turns (the prompt) end with a {prompt[-1]['role']} turn, not user",
        )
    reason = _check_prompt(prompt)
    for value, column in ((chosen[n:], "chosen"), (rejected[n:], "rejected")):
        reason = reason or _check_response(value, column)
    if reason:
        return None, reason
    return {"prompt": prompt, "chosen": chosen[n:], "rejected": rejected[n:]}, None


def _describe(turns: list[dict]) -> str:
    if not turns:
        return "no turn"
    return f"{len(turns)} turn{'s' if len(turns) > 1 else ''} ({', '.join(t['role'] for t in turns)})"


def _same_turn(a: dict, b: dict) -> bool:
    return a["role"] == b["role"] and a["content"].strip() == b["content"].strip()


def _check_shape(msgs: Any) -> str | None:
    """Like data.check_messages but lets empty contents through (they are reported after splitting)."""
    if not isinstance(msgs, list) or not msgs:
        return "bad messages: expected a non-empty list of {role, content}"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or not isinstance(m.get("content"), str):
            return f"bad messages: turn {i} is not a {{role, content}} object"
        if m["role"] not in ROLES:
            return f"bad messages: turn {i} has role {m['role']!r} (expected one of {', '.join(ROLES)})"
    return None


def _check_prompt(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return None if prompt.strip() else "empty prompt: 'prompt' is empty"
    if isinstance(prompt, list):
        reason = check_messages(prompt, last_role="user")
        return f"{reason} (in 'prompt')" if reason else None
    return f"bad prompt: expected a string or a message list, got {type(prompt).__name__}"


def _check_response(value: Any, column: str) -> str | None:
    if isinstance(value, str):
        return None if value.strip() else f"empty {column}: '{column}' is empty"
    if not isinstance(value, list):
        return f"bad {column}: expected a string or a message list, got {type(value).__name__}"
    reason = _check_shape(value)
    if reason:
        return f"{reason} (in '{column}')"
    if len(value) != 1 or value[0]["role"] != "assistant":
        return f"bad {column}: expected one assistant message, got {_describe(value)}"
    if not value[0]["content"].strip():
        return f"empty {column}: the assistant turn in '{column}' is empty"
    return None


def _check_different(chosen: str | list, rejected: str | list) -> str | None:
    if isinstance(chosen, str):
        same = chosen.strip() == rejected.strip()
    else:
        same = _same_turn(chosen[0], rejected[0])
    return (
        "identical responses: 'chosen' and 'rejected' are the same after stripping whitespace"
        if same
        else None
    )


# -- lengths and import -------------------------------------------------------------------------------------


def preference_token_length(tokenizer, row: dict) -> int:
    """Tokens in the prompt plus the longer of the two responses (chat template for conversational rows)."""
    prompt = row["prompt"]
    if isinstance(prompt, list):
        return max(
            len(tokenizer.apply_chat_template(prompt + row[c], tokenize=True, return_dict=False))
            for c in ("chosen", "rejected")
        )
    return max(len(tokenizer(prompt + row[c])["input_ids"]) for c in ("chosen", "rejected"))


def import_preferences(
    source: str,
    *,
    what: str = "import",
    max_length: int | None = None,
    tokenizer=None,
    as_chat: bool = True,
    split: str = "train",
) -> tuple[list[dict], Accounting]:
    """Read `source` (see data.load_rows) and normalize every row; rows over `max_length` tokens are rejected
    as "too long" (needs `tokenizer`). Raises DataError when nothing usable is left."""
    if max_length is not None and tokenizer is None:
        raise ValueError("import_preferences: max_length needs a tokenizer to count tokens")
    rows = load_rows(source, what=what, split=split)
    return validate_rows(
        rows,
        lambda r: normalize_preference_row(r, as_chat=as_chat),
        what=what,
        length=(lambda r: preference_token_length(tokenizer, r)) if tokenizer is not None else None,
        max_length=max_length,
    )


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    """Write rows as JSON lines (UTF-8, one object a line); creates the parent directory."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return p


def to_one_format(rows: list[dict]) -> list[dict]:
    """A dataset needs one type per column: if any prompt is a conversation, make every row conversational."""
    if not any(isinstance(r["prompt"], list) for r in rows):
        return rows
    out = []
    for r in rows:
        if isinstance(r["prompt"], list):
            out.append(r)
            continue
        out.append(
            {
                **r,
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
        )
    return out


def save_preferences(rows: list[dict], out_dir: Path, *, push_to_hub: str | None = None) -> dict:
    """Write rows as preferences.jsonl and as a datasets dataset (dataset/); returns the output paths."""
    rows = to_one_format(rows)
    jsonl = write_jsonl(rows, out_dir / "preferences.jsonl")
    ds = Dataset.from_list(rows)
    ds.save_to_disk(str(out_dir / "dataset"))
    outputs = {"preferences": jsonl, "dataset": out_dir / "dataset"}
    if push_to_hub:
        try:
            ds.push_to_hub(push_to_hub)
        except Exception as e:  # noqa: BLE001 - offline / auth: say so, keep the local outputs
            raise DataError(
                f"push_to_hub '{push_to_hub}' failed ({type(e).__name__}: {e}); the local copies "
                f"are in {out_dir}"
            ) from None
    return outputs
