"""RewardScorer: text in, scalar reward out, batched — used by `rlhf score`, the QA report, PPO,
GRPO/RLOO, the loop's selection and checkpoint comparison.

The scorer formats (prompt, response) with the *reward model's own* tokenizer, so the policy and the RM
may use different tokenizers: a tokenizer with a chat template gets the conversation through it; one
without (e.g. the MiniLM encoder) gets plain "User: ... / Assistant: ..." turns. Long inputs are cut
from the left, keeping the end of the conversation — the response being judged. The formatting, the
max length and the normalization statistics (mean/std of rewards over a reference set) are saved beside
the model in `rlhf_reward.json`, so scores are reproducible wherever the RM is loaded.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlhf.models import fast_fp32_matmuls, resolve_model_path

META_FILE = "rlhf_reward.json"
ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def as_messages(prompt, response) -> list[dict]:
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    resp = response if isinstance(response, str) else response[-1]["content"]
    return [*msgs, {"role": "assistant", "content": resp}]


def format_pair(tokenizer, prompt, response) -> str:
    msgs = as_messages(prompt, response)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False)
    return "\n\n".join(f"{ROLE_NAMES.get(m['role'], m['role'])}: {m['content']}" for m in msgs)


def encode_pair(tokenizer, prompt, response, max_length: int) -> tuple[list[int], bool]:
    """Token ids cut from the left to max_length (special tokens kept), and whether anything was cut."""
    text = format_pair(tokenizer, prompt, response)
    add_special = not getattr(tokenizer, "chat_template", None)
    full = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    if len(full) <= max_length:
        return full, False
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        ids = tokenizer(text, add_special_tokens=add_special, truncation=True, max_length=max_length)[
            "input_ids"
        ]
    finally:
        tokenizer.truncation_side = side
    return ids, True


def response_fits(tokenizer, response, max_length: int) -> bool:
    """Whether the response alone (with the assistant label) fits: if not, the RM cannot see all of it."""
    text = response if isinstance(response, str) else response[-1]["content"]
    return len(tokenizer(text, add_special_tokens=True)["input_ids"]) + 4 <= max_length


def read_reward_meta(model_dir: str | Path) -> dict:
    """The reward model's rlhf_reward.json (formatting, max length, normalization), or {} without one."""
    meta_path = Path(model_dir) / META_FILE
    return json.loads(meta_path.read_text()) if meta_path.is_file() else {}


class RewardScorer:
    """Scores (prompt, response) pairs with a trained reward model. A reward model trained with
    `ensemble: N` holds N-1 more members under model/members/; `score` is then the members' mean and
    `score_members` gives each member's scores (their spread is the ensemble's disagreement).
    `meta` stands in for the directory's rlhf_reward.json: the reward stage scores its held-out pairs before
    it writes that file, once, with their normalization statistics."""

    def __init__(
        self, model_dir: str, *, batch_size: int = 16, device: str | None = None, meta: dict | None = None
    ):
        path = resolve_model_path(model_dir)
        self.meta = read_reward_meta(path) if meta is None else meta
        self.max_length = int(self.meta.get("max_length", 512))
        self.norm = self.meta.get("norm")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.members = [self._load(path)] + [
            self._load(Path(path) / rel) for rel in self.meta.get("ensemble", [])
        ]
        self.model = self.members[0]
        self.batch_size = batch_size

    def _load(self, path):
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval()
        model.config.pad_token_id = self.tokenizer.pad_token_id
        return model.to(self.device)

    def score(self, prompts: list, responses: list, *, normalize: bool = False) -> list[float]:
        per_member = self.score_members(prompts, responses)
        out = [sum(vals) / len(vals) for vals in zip(*per_member, strict=True)] if per_member[0] else []
        if normalize:
            if not self.norm:
                raise ValueError(f"this reward model has no normalization statistics in {META_FILE}")
            out = [(v - self.norm["mean"]) / (self.norm["std"] or 1.0) for v in out]
        return out

    def score_with_spread(self, prompts: list, responses: list) -> tuple[list[float], list[float]]:
        """The members' mean and their standard deviation per pair (0 for a single model); raw scores."""
        per_member = self.score_members(prompts, responses)
        cols = list(zip(*per_member, strict=True))
        return [statistics.fmean(c) for c in cols], [statistics.pstdev(c) for c in cols]

    def score_members(self, prompts: list, responses: list) -> list[list[float]]:
        """[member][pair] raw scores; one member unless the model is an ensemble."""
        ids = [
            encode_pair(self.tokenizer, p, r, self.max_length)[0]
            for p, r in zip(prompts, responses, strict=True)
        ]
        return [self._score_ids(model, ids) for model in self.members]

    def _score_ids(self, model, ids: list[list[int]]) -> list[float]:
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [0.0] * len(ids)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in idx)
            x = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in idx], device=self.device)
            mask = torch.tensor(
                [[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in idx], device=self.device
            )
            with torch.inference_mode(), fast_fp32_matmuls():  # fp32-class accuracy (rlhf.models)
                logits = model(input_ids=x, attention_mask=mask).logits[:, 0].float().cpu().tolist()
            for i, v in zip(idx, logits, strict=True):
                out[i] = v
        return out
