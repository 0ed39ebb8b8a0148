"""Generation: one sampling settings type, one batched sampling loop, one end-of-sequence rule, and the
log-probs of sampled responses. Used by `rlhf generate`, PPO rollouts, the drift probes and comparison.

- Prompts (token ids) are left-padded into a batch and generated with the KV cache; many prompts are sorted
  by length first so a batch wastes little padding (`generate_texts`).
- The EOS rule: a response ends at its first EOS token (any of the model's generation-config EOS ids or the
  tokenizer's). The EOS is part of the response (`response_mask` is 1 on it, so PPO learns to stop) but not
  of its text; everything after it is padding. A response that never reaches EOS has `ended = False`.
- Log-probs are recomputed with explicit position ids (left padding would otherwise shift the positions
  against those used while generating) and at the sampling temperature, so the "old" log-probs of PPO
  match the distribution sampled from.
- Seeded rows (`sample(..., seeds=[...])`): each row draws from its own generator, so a row's answer
  depends only on (model, prompt, settings, its seed) — not on the batch it shares or its size. Used where
  answers are cached and compared (`rlhf compare`). The logits pass through the same processors HF
  `generate` applies (repetition penalty, temperature, top-k, top-p, in that order).
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from typing import NamedTuple

import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rlhf.config import bounded, documented
from rlhf.errors import ConfigError


@dataclass
class SamplingSettings:
    max_new_tokens: int = bounded(128, ge=1)
    do_sample: bool = documented(True, help="false: greedy (deterministic)")
    temperature: float = bounded(1.0, ge=0)
    top_p: float = bounded(1.0, gt=0, le=1)
    top_k: int = bounded(0, ge=0, help="0 = off")
    repetition_penalty: float = bounded(1.0, gt=0)

    def __post_init__(self):
        if self.do_sample and self.temperature <= 0:
            raise ConfigError("'temperature' must be > 0 when sampling (or set do_sample=false).")

    def generate_kwargs(self) -> dict:
        kwargs = dict(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            repetition_penalty=self.repetition_penalty,
        )
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        return kwargs

    def processors(self) -> LogitsProcessorList:
        """The logits processors `generate` applies for these settings, in its order."""
        out = LogitsProcessorList()
        if self.repetition_penalty != 1.0:
            out.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.do_sample:
            if self.temperature != 1.0:
                out.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k:
                out.append(TopKLogitsWarper(self.top_k))
            if self.top_p < 1.0:
                out.append(TopPLogitsWarper(self.top_p))
        return out


def row_seed(seed: int, key: str, index: int = 0) -> int:
    """A row's own seed from the run seed, a key (e.g. the prompt's hash) and the sample index. Pure."""
    digest = hashlib.sha256(f"{seed}|{key}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class Rollout:
    input_ids: torch.Tensor  # B x (P + R): left-padded prompt, then the response, padded on the right
    attention_mask: torch.Tensor  # B x (P + R)
    prompt_width: int  # P
    response_mask: torch.Tensor  # B x R float: 1 on response tokens (EOS included)
    ended: torch.Tensor  # B bool: the response reached EOS within max_new_tokens

    @property
    def responses(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width :]

    def select(self, idx: torch.Tensor) -> Rollout:
        return Rollout(
            self.input_ids[idx],
            self.attention_mask[idx],
            self.prompt_width,
            self.response_mask[idx],
            self.ended[idx],
        )


class Sample(NamedTuple):
    text: str  # the response, without its EOS
    ended: bool  # reached EOS within max_new_tokens
    tokens: int  # response tokens generated (the EOS included)
    ids: tuple[int, ...] = ()  # the sampled token ids (the EOS included when ended)


@dataclass
class Generated:
    """`generate_texts` output: per prompt, its samples; and the new tokens generated in all."""

    samples: list[list[Sample]]
    new_tokens: int


def eos_ids(model, tokenizer) -> list[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def left_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def cut_at_eos(
    responses: torch.Tensor, eos: list[int], pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The EOS rule on generated tokens (B x R): (responses with everything after the first EOS set to
    `pad`, response mask 1 up to and including the first EOS, ended). Pure."""
    is_eos = torch.isin(responses, torch.tensor(eos, dtype=responses.dtype))
    ended = is_eos.any(1)
    first = torch.where(
        ended, is_eos.float().argmax(1), torch.full_like(ended, responses.shape[1], dtype=torch.long)
    )
    pos = torch.arange(responses.shape[1]).unsqueeze(0)
    mask = (pos <= first.unsqueeze(1)).float()
    return torch.where(mask.bool(), responses, torch.full_like(responses, pad)), mask, ended


def sample(
    model,
    tokenizer,
    prompts: list[list[int]],
    settings: SamplingSettings,
    *,
    n: int = 1,
    synced_gpus=False,
    seeds: list[int] | None = None,
) -> Rollout:
    """`n` responses per prompt (token ids in), as one batch; rows are prompt-major (prompt i's samples
    are rows i*n .. i*n+n-1). With `seeds` (one per row), each row samples from its own generator."""
    pad = tokenizer.pad_token_id
    eos = eos_ids(model, tokenizer)
    ids, mask = left_pad(prompts, pad)
    if n > 1:
        ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    width = ids.shape[1]
    if seeds is not None:
        if len(seeds) != ids.shape[0]:
            raise ValueError(f"seeds: one per row ({ids.shape[0]}), got {len(seeds)}")
        generated = _seeded_decode(model, ids, mask, settings, eos, pad, seeds)
    else:
        device = next(model.parameters()).device
        kwargs = settings.generate_kwargs()
        kwargs.update(pad_token_id=pad, eos_token_id=eos)
        if synced_gpus:
            kwargs["synced_gpus"] = True
        with torch.no_grad():
            generated = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True, **kwargs
            ).cpu()[:, width:]
    resp, rmask, ended = cut_at_eos(generated, eos, pad)
    return Rollout(
        input_ids=torch.cat([ids, resp], 1),
        attention_mask=torch.cat([mask, rmask.long()], 1),
        prompt_width=width,
        response_mask=rmask,
        ended=ended,
    )


def _seeded_decode(
    model, ids: torch.Tensor, mask: torch.Tensor, settings: SamplingSettings, eos, pad, seeds
) -> torch.Tensor:
    """Token-by-token decoding with the KV cache, each row drawing from `torch.Generator(seed)`: the new
    tokens (B x <= max_new_tokens), `pad` after a row's EOS. Greedy when `do_sample` is false."""
    device = next(model.parameters()).device
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    processors = settings.processors()
    eos_t = torch.tensor(eos or [-1])
    seq, attn = ids.clone(), mask.clone()
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    new: list[torch.Tensor] = []
    past, step_ids, pos = None, seq, position_ids(attn)
    # transformers >= 5.2x names the KV cache `cache` (`past_key_values` before)
    cache_kw = (
        "cache"
        if "cache"
        in inspect.signature(
            model.get_base_model().forward if hasattr(model, "get_base_model") else model.forward
        ).parameters
        else "past_key_values"
    )
    with torch.no_grad():
        for _ in range(settings.max_new_tokens):
            out = model(
                input_ids=step_ids.to(device),
                attention_mask=attn.to(device),
                position_ids=pos.to(device),
                use_cache=True,
                **{cache_kw: past},
            )
            past = getattr(out, cache_kw)
            scores = processors(seq, out.logits[:, -1, :].float().cpu())
            if settings.do_sample:
                cdf = torch.softmax(scores, -1).cumsum(-1)
                u = torch.stack([torch.rand(1, generator=g) for g in gens]) * cdf[:, -1:]
                token = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=scores.shape[-1] - 1)
            else:
                token = scores.argmax(-1)
            token = torch.where(done, torch.full_like(token, pad), token)
            new.append(token)
            done |= torch.isin(token, eos_t)
            if bool(done.all()):
                break
            seq = torch.cat([seq, token[:, None]], 1)
            attn = torch.cat([attn, torch.ones_like(token[:, None])], 1)
            step_ids, pos = token[:, None], attn.sum(1, keepdim=True) - 1
    return torch.stack(new, 1)


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """The text of each response, without its EOS."""
    out = []
    lengths = rollout.response_mask.sum(1).long() - rollout.ended.long()
    for toks, n in zip(rollout.responses.tolist(), lengths.tolist(), strict=True):
        out.append(tokenizer.decode(toks[:n], skip_special_tokens=True).strip())
    return out


def generate_texts(
    model,
    tokenizer,
    prompts: list[list[int]],
    settings: SamplingSettings,
    *,
    n: int = 1,
    batch_size: int = 8,
    progress=None,
    seeds: list[int] | None = None,
) -> Generated:
    """`n` samples for each prompt, prompts batched after sorting them by length. With `seeds` (one per
    prompt and n = 1), each answer comes from its own generator: the same whatever the batching."""
    if seeds is not None and (n != 1 or len(seeds) != len(prompts)):
        raise ValueError("seeds: one per prompt, with n = 1")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[Sample]] = [[] for _ in prompts]
    new_tokens = 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        rows = [seeds[i] for i in idx] if seeds is not None else None
        rollout = sample(model, tokenizer, [prompts[i] for i in idx], settings, n=n, seeds=rows)
        new_tokens += int(rollout.response_mask.sum().item())
        texts = decode_responses(tokenizer, rollout)
        lengths = rollout.response_mask.sum(1).long().tolist()
        responses = rollout.responses.tolist()
        for row, (text, ended) in enumerate(zip(texts, rollout.ended.tolist(), strict=True)):
            ids = tuple(responses[row][: lengths[row]])
            out[idx[row // n]].append(Sample(text, bool(ended), lengths[row], ids))
        if progress is not None:
            progress.update(len(idx))
    return Generated(out, new_tokens)


# -- log-probs of sampled responses ------------------------------------------------------------------------


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def forward_responses(
    model, rollout: Rollout, *, temperature: float = 1.0, hidden: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of the response tokens (B x R) and, when asked, the last hidden states at the
    positions that predict them (B x R x H: the states a value head reads)."""
    device = next(model.parameters()).device
    ids = rollout.input_ids.to(device)
    mask = rollout.attention_mask.to(device)
    P, R = rollout.prompt_width, ids.shape[1] - rollout.prompt_width
    # the LM head only where a response token is predicted (positions P-1 .. end): over a long prompt the
    # head is most of a small model's forward
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids(mask),
        output_hidden_states=hidden,
        logits_to_keep=R + 1,
    )
    logits = out.logits[:, :-1].float() / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, P:].unsqueeze(-1)).squeeze(-1)
    states = out.hidden_states[-1][:, P - 1 : -1] if hidden else None
    return logp, states


def sequence_logprobs(model, rollout: Rollout, temperature: float = 1.0) -> torch.Tensor:
    return forward_responses(model, rollout, temperature=temperature)[0]
