"""Prompts: one normalizer, one encoder, one prompt source — used by generate, PPO, GRPO/RLOO, the drift
probes and checkpoint comparison.

A prompt is a string or a message list ending with a user turn. `encode_prompt` turns it into the token ids
a policy continues from: the tokenizer's chat template with the generation prompt (a string becomes one
user turn), or the plain text for tokenizers without a template. `PromptSource` is the config section that
names where prompts come from; `load_prompts` reads, validates and measures them, rejecting (with the row
id and the reason) empty, malformed and over-long prompts, so rows in = used + rejected + not used (limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config import bounded, documented
from rlhf.data import check_messages, load_rows, validate_rows
from rlhf.errors import DataError


@dataclass
class PromptSource:
    prompts: str = documented(
        "demo:prompts", help="demo:<name> | .jsonl/.json/.parquet | dataset dir | run dir | hub id"
    )
    split: str = "train"
    limit: int | None = bounded(None, ge=1, help="first N valid prompts")
    max_prompt_length: int = bounded(
        256, ge=1, help="tokens after the chat template; longer prompts are rejected, reported"
    )


@dataclass
class PromptSet:
    """Validated prompts, in source order: ids, the prompts themselves, their token ids (one tokenizer)."""

    ids: list[str]
    prompts: list
    encoded: list[list[list[int]]]  # [tokenizer][prompt] -> token ids
    accounting: dict = field(default_factory=dict)  # rows in = used + rejected + not used (limit)

    @property
    def token_ids(self) -> list[list[int]]:
        """The token ids under the first tokenizer."""
        return self.encoded[0]

    def __len__(self) -> int:
        return len(self.prompts)


def normalize_prompt(row: dict) -> tuple[dict | None, str | None]:
    """A row with a `prompt` -> ({"prompt": ...}, None) or (None, reason). Pure."""
    prompt = row.get("prompt")
    if prompt is None:
        return None, "missing columns: need 'prompt'"
    if isinstance(prompt, str):
        return ({"prompt": prompt}, None) if prompt.strip() else (None, "empty prompt: 'prompt' is empty")
    reason = check_messages(prompt, last_role="user")
    return (None, reason) if reason else ({"prompt": prompt}, None)


def as_messages(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def encode_prompt(tokenizer, prompt) -> list[int]:
    """Token ids a policy continues from: chat template + generation prompt, or the plain text."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            as_messages(prompt), add_generation_prompt=True, tokenize=True, return_dict=False
        )
    text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    return tokenizer(text)["input_ids"]


def load_prompts(
    source: PromptSource, tokenizers: list, *, section: str = "", encode=encode_prompt
) -> PromptSet:
    """Read, validate and encode prompts with each tokenizer (a prompt is rejected when it is too long for
    any of them). `section` is where the PromptSource sits in the stage config (e.g. 'data'), for messages;
    `encode(tokenizer, prompt)` is how a policy will see the prompt (default: the chat template with the
    generation prompt)."""
    prefix = f"{section}." if section else ""
    what = f"{prefix}prompts"
    rows = load_rows(source.prompts, what=what, split=source.split)
    limit = source.max_prompt_length
    encoded: dict[int, list[list[int]]] = {}

    def check(row: dict) -> tuple[dict | None, str | None]:
        out, reason = normalize_prompt(row)
        if out is None:
            return None, reason
        ids = [encode(tok, out["prompt"]) for tok in tokenizers]
        n = max(len(x) for x in ids)
        if n > limit:
            return None, f"too long: {n} prompt tokens > {prefix}max_prompt_length {limit}"
        encoded[id(out)] = ids
        return out, None

    kept, acct = validate_rows(rows, check, what=what)
    summary = acct.summary()
    ids = acct.kept_ids
    unused = max(0, len(kept) - source.limit) if source.limit is not None else 0
    if source.limit is not None:
        kept, ids = kept[: source.limit], ids[: source.limit]
    summary.update(rows_not_used_limit=unused, rows_used=len(kept))
    if not kept:
        raise DataError(f"{what}: no prompt of '{source.prompts}' is usable.")
    return PromptSet(
        ids=ids,
        prompts=[r["prompt"] for r in kept],
        encoded=[[encoded[id(r)][t] for r in kept] for t in range(len(tokenizers))],
        accounting=summary,
    )
