"""Rollouts for on-policy stages: batched generation and per-token log-probs of the responses.

Prompts are left-padded into one batch and generated with the KV cache; a response ends at its first EOS
(kept, so the policy learns to stop) and everything after it is padding. Log-probs are recomputed with
explicit position ids (left padding would otherwise shift the positions against those used while
generating) and at the sampling temperature, so the "old" log-probs match the distribution sampled from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    synced_gpus: bool = False,
) -> Rollout:
    """One response per prompt (token ids in), batched."""
    pad = tokenizer.pad_token_id
    eos = eos_ids(model, tokenizer)
    ids, mask = left_pad(prompts, pad)
    device = next(model.parameters()).device
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad, eos_token_id=eos)
    if do_sample:
        kwargs.update(temperature=temperature, top_k=top_k or None, top_p=top_p)
    if synced_gpus:
        kwargs["synced_gpus"] = True
    with torch.no_grad():
        seqs = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True, **kwargs
        ).cpu()
    width = ids.shape[1]
    resp = seqs[:, width:]
    is_eos = torch.isin(resp, torch.tensor(eos))
    ended = is_eos.any(1)
    first = torch.where(
        ended, is_eos.float().argmax(1), torch.full_like(ended, resp.shape[1], dtype=torch.long)
    )
    pos = torch.arange(resp.shape[1]).unsqueeze(0)
    rmask = (pos <= first.unsqueeze(1)).float()
    resp = torch.where(rmask.bool(), resp, torch.full_like(resp, pad))
    return Rollout(
        input_ids=torch.cat([ids, resp], 1),
        attention_mask=torch.cat([mask, rmask.long()], 1),
        prompt_width=width,
        response_mask=rmask,
        ended=ended,
    )


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    out = []
    for toks, m in zip(rollout.responses.tolist(), rollout.response_mask.tolist(), strict=True):
        kept = [t for t, keep in zip(toks, m, strict=True) if keep]
        out.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return out


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
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), output_hidden_states=hidden
    )
    P = rollout.prompt_width
    logits = out.logits[:, P - 1 : -1].float() / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, P:].unsqueeze(-1)).squeeze(-1)
    states = out.hidden_states[-1][:, P - 1 : -1] if hidden else None
    return logp, states


def sequence_logprobs(model, rollout: Rollout, temperature: float = 1.0) -> torch.Tensor:
    return forward_responses(model, rollout, temperature=temperature)[0]
