"""Preference rows: TRL's prompt/chosen/rejected format, and import of Anthropic HH-RLHF transcripts; unpaired
rows (TRL's KTO format) and production feedback (a conversation and a rating) — see "Unpaired rows" below.

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

Unpaired rows, for KTO: {"prompt", "completion", "label"} — label true = desirable, false = undesirable;
strings, or a prompt message list and a one-assistant-message completion (`normalize_unpaired_row`).
`import_unpaired` also takes preference pairs (any format above) and makes each pair two rows, "<id>:chosen"
(desirable) and "<id>:rejected" (undesirable): every row is accounted for on its own.
Production feedback (`feedback_to_unpaired`): a row holding a conversation (`messages`, ending with the rated
assistant turn after a user turn) and a rating — thumbs text, 1-5 stars or a boolean — mapped by a table
{rating key: desirable | undesirable | drop} (`rating_key` writes ratings as the table's keys). A rating mapped to drop is *dropped by rule* (counted apart from
the rejections: rows in = rows kept + rows dropped by rule + rows rejected, `feedback_summary`).

Everything here is pure except the importers (read the source), `write_jsonl`, `save_preferences` and
`save_unpaired` (the jsonl + datasets dir that export and import write, and reward/DPO/KTO read).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets import Dataset

from rlhf.data import ROLES, Accounting, Rows, check_messages, load_rows, validate_rows
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


RESPONSE_COLUMNS = ("chosen", "rejected", "completion")


def to_one_format(rows: list[dict]) -> list[dict]:
    """A dataset needs one type per column: if any prompt is a conversation, make every row conversational
    (preference rows and unpaired rows alike)."""
    if not any(isinstance(r["prompt"], list) for r in rows):
        return rows
    out = []
    for r in rows:
        if isinstance(r["prompt"], list):
            out.append(r)
            continue
        wrapped = {c: [{"role": "assistant", "content": r[c]}] for c in RESPONSE_COLUMNS if c in r}
        out.append({**r, "prompt": [{"role": "user", "content": r["prompt"]}], **wrapped})
    return out


def save_preferences(rows: list[dict], out_dir: Path, *, push_to_hub: str | None = None) -> dict:
    """Write rows as preferences.jsonl and as a datasets dataset (dataset/); returns the output paths."""
    return _save_rows(rows, out_dir, "preferences", push_to_hub)


def save_unpaired(rows: list[dict], out_dir: Path, *, push_to_hub: str | None = None) -> dict:
    """Write unpaired (KTO) rows as unpaired.jsonl — declared as the run's `rows`, which every stage that
    reads rows from a run directory finds — and as a datasets dataset (dataset/); returns the output paths."""
    return _save_rows(rows, out_dir, "rows", push_to_hub, file="unpaired.jsonl")


def _save_rows(rows: list[dict], out_dir: Path, name: str, push_to_hub: str | None, file: str = "") -> dict:
    rows = to_one_format(rows)
    jsonl = write_jsonl(rows, out_dir / (file or f"{name}.jsonl"))
    ds = Dataset.from_list(rows)
    ds.save_to_disk(str(out_dir / "dataset"))
    outputs = {name: jsonl, "dataset": out_dir / "dataset"}
    if push_to_hub:
        try:
            ds.push_to_hub(push_to_hub)
        except Exception as e:  # noqa: BLE001 - offline / auth: say so, keep the local outputs
            raise DataError(
                f"push_to_hub '{push_to_hub}' failed ({type(e).__name__}: {e}); the local copies "
                f"are in {out_dir}"
            ) from None
    return outputs


# -- unpaired rows (KTO) and production feedback ------------------------------------------------------------

FEEDBACK_VERDICTS = ("desirable", "undesirable", "drop")
DROPPED = "dropped by rule"  # the reason kind of a row whose rating maps to drop: not a rejection
_MISSING_UNPAIRED = (
    "missing columns: need 'prompt', 'completion' and 'label' (true: desirable, false: undesirable)"
)


def normalize_unpaired_row(row: dict, *, as_chat: bool = True) -> tuple[dict | None, str | None]:
    """One unpaired row -> ({prompt, completion, label[, id]}, None) or (None, reason). Pure."""
    prompt, completion = row.get("prompt"), row.get("completion")
    if prompt is None or completion is None or "label" not in row:
        return None, _MISSING_UNPAIRED
    label = row["label"]
    if not isinstance(label, bool):
        return None, (
            f"bad label: expected true (desirable) or false (undesirable), got {type(label).__name__} "
            f"{_clip(repr(label))}"
        )
    reason = _check_prompt(prompt) or _check_response(completion, "completion")
    if reason:
        return None, reason
    if isinstance(prompt, str) != isinstance(completion, str):
        return None, "mixed formats: prompt and completion must both be strings or both message lists"
    if isinstance(prompt, str) and as_chat:
        prompt = [{"role": "user", "content": prompt}]
        completion = [{"role": "assistant", "content": completion}]
    out = {"prompt": prompt, "completion": completion, "label": label}
    if row.get("id") not in (None, ""):
        out["id"] = row["id"]
    return out, None


def unpaired_from_pair(row: dict, side: str, *, as_chat: bool = True) -> tuple[dict | None, str | None]:
    """One side of a preference pair (any format `normalize_preference_row` takes) as an unpaired row: the
    chosen response desirable, the rejected one undesirable. Pure."""
    pair, reason = normalize_preference_row(row, as_chat=as_chat)
    if pair is None:
        return None, reason
    return {"prompt": pair["prompt"], "completion": pair[side], "label": side == "chosen"}, None


def unpaired_token_length(tokenizer, row: dict) -> int:
    """Tokens in the prompt plus the completion: the chat template for conversational rows; for strings the
    text and the EOS token TRL's KTOTrainer appends."""
    if isinstance(row["prompt"], list):
        msgs = row["prompt"] + row["completion"]
        return len(tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=False))
    return len(tokenizer(row["prompt"] + row["completion"])["input_ids"]) + 1


def is_paired(rows: list[dict]) -> bool:
    """Whether rows are preference pairs (chosen and rejected columns) rather than unpaired rows."""
    cols = {k for r in rows[:200] for k in r}
    return {"chosen", "rejected"} <= cols and "completion" not in cols


def import_unpaired(
    source: str,
    *,
    what: str = "import",
    max_length: int | None = None,
    tokenizer=None,
    as_chat: bool = True,
    split: str = "train",
) -> tuple[list[dict], Accounting]:
    """Read `source` as unpaired rows; preference pairs become two rows each ("<id>:chosen" desirable,
    "<id>:rejected" undesirable — a bad pair is rejected as both). Rows over `max_length` tokens are
    rejected as "too long" (needs `tokenizer`). Raises DataError when nothing usable is left."""
    if max_length is not None and tokenizer is None:
        raise ValueError("import_unpaired: max_length needs a tokenizer to count tokens")
    rows = load_rows(source, what=what, split=split)
    if is_paired(rows.rows):
        rows = _pair_sides(rows)
        normalize = lambda r: unpaired_from_pair(r["pair"], r["side"], as_chat=as_chat)  # noqa: E731
    else:
        normalize = lambda r: normalize_unpaired_row(r, as_chat=as_chat)  # noqa: E731
    return validate_rows(
        rows,
        normalize,
        what=what,
        length=(lambda r: unpaired_token_length(tokenizer, r)) if tokenizer is not None else None,
        max_length=max_length,
    )


def _pair_sides(rows: Rows) -> Rows:
    sides = [
        (rid, row, side)
        for rid, row in zip(rows.ids, rows.rows, strict=True)
        for side in ("chosen", "rejected")
    ]
    return Rows(
        source=rows.source,
        rows=[{"pair": row, "side": side} for _, row, side in sides],
        ids=[f"{rid}:{side}" for rid, _, side in sides],
        path=rows.path,
        unreadable=rows.unreadable,
        blank_lines=rows.blank_lines,
        renamed_ids=rows.renamed_ids,
    )


def rating_key(value: Any) -> str | None:
    """A rating as the feedback map's keys are written: true / false, whole numbers without a decimal point
    (5.0 -> "5"), text stripped and lower-cased ("Thumbs_Up " -> "thumbs_up"); None when it is none of these."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, str) and value.strip():
        return value.strip().lower()
    return None


def feedback_to_unpaired(
    row: dict, mapping: dict[str, str], *, messages: str = "messages", rating: str = "rating"
) -> tuple[dict | None, str | None]:
    """A production-feedback row -> an unpaired row ({prompt, completion, label, rating[, id]}, None), or
    (None, reason): "dropped by rule: ..." when its rating maps to drop, else the rejection's reason.
    `mapping`: {rating_key: desirable | undesirable | drop}. Pure."""
    if row.get(messages) is None or rating not in row:
        return None, f"missing columns: need '{messages}' (the conversation) and '{rating}' (the rating)"
    if row[rating] is None:
        return None, f"missing rating: '{rating}' is empty"
    key = rating_key(row[rating])
    if key is None:
        return None, (
            f"bad rating: expected thumbs text, a number or true/false, got {type(row[rating]).__name__} "
            f"{_clip(repr(row[rating]))}"
        )
    if key not in mapping:
        known = ", ".join(sorted(mapping))
        return None, (
            f"unmapped rating: {_clip(repr(row[rating]))} is in none of feedback.desirable / undesirable / drop "
            f"(they hold: {known})"
        )
    if mapping[key] == "drop":
        return None, f"{DROPPED}: rating {key} maps to drop"
    msgs = row[messages]
    reason = check_messages(msgs, last_role="assistant")
    if reason:
        return None, f"{reason} (in '{messages}')"
    if len(msgs) < 2 or msgs[-2]["role"] != "user":
        return None, f"bad messages: the rated assistant turn must follow a user turn (in '{messages}')"
    out = {"prompt": msgs[:-1], "completion": msgs[-1:], "label": mapping[key] == "desirable", "rating": key}
    if row.get("id") not in (None, ""):
        out["id"] = row["id"]
    return out, None


def import_feedback(
    source: str,
    mapping: dict[str, str],
    *,
    what: str = "source",
    messages: str = "messages",
    rating: str = "rating",
    max_length: int | None = None,
    tokenizer=None,
    split: str = "train",
) -> tuple[list[dict], Accounting]:
    """Read production feedback and map each rating (see `feedback_to_unpaired`); rows over `max_length`
    tokens are rejected as "too long". The accounting's rejections include the rows dropped by rule
    (`feedback_summary` tells them apart). Raises DataError when nothing usable is left."""
    rows = load_rows(source, what=what, split=split)
    return validate_rows(
        rows,
        lambda r: feedback_to_unpaired(r, mapping, messages=messages, rating=rating),
        what=what,
        length=(lambda r: unpaired_token_length(tokenizer, r)) if tokenizer is not None else None,
        max_length=max_length,
    )


def feedback_summary(acct: Accounting) -> tuple[dict, list, list]:
    """(summary, rows dropped by rule, rows rejected): rows in = rows kept + dropped by rule + rejected."""
    dropped = [r for r in acct.rejected if r.reason.startswith(DROPPED)]
    rejected = [r for r in acct.rejected if not r.reason.startswith(DROPPED)]
    summary = {
        **Accounting(acct.rows_in, acct.rows_kept, rejected, blank_lines=acct.blank_lines).summary(),
        "rows_dropped_by_rule": len(dropped),
        "dropped_by_rule": dict(Counter(r.reason[len(DROPPED) + 2 :] for r in dropped)),
    }
    if acct.renamed_ids:
        summary["ids_repeated"] = len(acct.renamed_ids)
    return summary, dropped, rejected
