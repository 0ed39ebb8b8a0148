"""Log-probabilities of given responses under a causal LM, batched: what checkpoint comparison needs for the
KL to a reference (`token_logprobs`: a checkpoint's own sampled token ids, at the sampling temperature)
and for agreement with held-out human preferences (`pair_logprobs`: chosen vs rejected texts, under the
policy and the reference; `sequence_logprobs` scores any texts one by one).

A text response is scored as the policy would produce it: the prompt through `encode_prompt` (chat template
and generation prompt), then the response's tokens and the end-of-turn (EOS) token (a human answer is
complete). Sequences are left-padded
prompts + right-padded responses — the `Rollout` layout — and scored with explicit position ids.

A preference pair's two answers share their prompt: `pair_logprobs` runs each prompt once, copies its KV
cache for the two answers and runs them after it (the prompt is ~25 % of a demo pair's tokens, ~35 % of an
HH-RLHF pair's). The sums match scoring each sequence whole to float rounding (tests/test_compare_answers.py).

`precision` (a `PrecisionChoice`; None: the model as it is) runs the model in that precision
(`rlhf.generation.in_precision`): a KL on a policy's own samples scores the reference in the precision the
answers were sampled in.
"""

from __future__ import annotations

import torch

from rlhf.generation import (
    Rollout,
    cache_keyword,
    eos_ids,
    forward_responses,
    in_precision,
    left_pad,
    prefill,
    target_logprobs,
)
from rlhf.models import PrecisionChoice
from rlhf.prompts import encode_prompt


def response_ids(tokenizer, response) -> list[int]:
    text = response if isinstance(response, str) else response[-1]["content"]
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def pack(prompts: list[list[int]], responses: list[list[int]], pad: int) -> Rollout:
    """Prompt and response token ids -> a Rollout (left-padded prompts, right-padded responses)."""
    ids, mask = left_pad(prompts, pad)
    width = max(len(r) for r in responses) or 1
    resp = torch.tensor([r + [pad] * (width - len(r)) for r in responses])
    rmask = torch.tensor([[1.0] * len(r) + [0.0] * (width - len(r)) for r in responses])
    return Rollout(
        input_ids=torch.cat([ids, resp], 1),
        attention_mask=torch.cat([mask, rmask.long()], 1),
        prompt_width=ids.shape[1],
        response_mask=rmask,
        ended=torch.ones(len(responses), dtype=torch.bool),
    )


def token_logprobs(
    model,
    prompts: list[list[int]],
    responses: list[list[int]],
    pad: int,
    *,
    temperature: float,
    batch_size: int = 8,
    precision: PrecisionChoice | None = None,
) -> list[float]:
    """Sum of log-probs of given response token ids (as sampled: the EOS only where the answer ended) after
    given prompt ids, at the sampling temperature — what an unbiased KL on a policy's own samples needs."""
    model = model if precision is None else in_precision(model, precision)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
    sums = [0.0] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = pack([prompts[i] for i in idx], [list(responses[i]) for i in idx], pad)
        with torch.inference_mode():
            logp, _ = forward_responses(model, batch, temperature=temperature)
        mask = batch.response_mask.to(logp.device)
        for row, i in enumerate(idx):
            sums[i] = float((logp[row] * mask[row]).sum())
    return sums


def sequence_logprobs(
    model,
    tokenizer,
    prompts: list,
    responses: list,
    *,
    batch_size: int = 8,
    temperature: float = 1.0,
    precision: PrecisionChoice | None = None,
) -> tuple[list[float], list[int]]:
    """(sum of token log-probs, token count) of each response given its prompt, EOS included."""
    model = model if precision is None else in_precision(model, precision)
    eos = eos_ids(model, tokenizer)
    end = [eos[0]] if eos else []
    encoded = [
        (encode_prompt(tokenizer, p), response_ids(tokenizer, r) + end)
        for p, r in zip(prompts, responses, strict=True)
    ]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    sums, counts = [0.0] * len(encoded), [0] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = pack([encoded[i][0] for i in idx], [encoded[i][1] for i in idx], tokenizer.pad_token_id)
        with torch.inference_mode():
            logp, _ = forward_responses(model, batch, temperature=temperature)
        mask = batch.response_mask.to(logp.device)
        for row, i in enumerate(idx):
            sums[i] = float((logp[row] * mask[row]).sum())
            counts[i] = int(mask[row].sum())
    return sums, counts


def _right_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def pair_logprobs(
    model, tokenizer, prompts: list, chosen: list, rejected: list, *, batch_size: int = 8
) -> tuple[list[float], list[int], list[float], list[int]]:
    """(chosen sums, chosen token counts, rejected sums, rejected token counts): `sequence_logprobs` of each
    pair's two answers, its prompt run once (module docstring). `batch_size` counts pairs."""
    eos = eos_ids(model, tokenizer)
    end = [eos[0]] if eos else []
    pad = tokenizer.pad_token_id
    device = next(model.parameters()).device
    encoded = [
        (encode_prompt(tokenizer, p), response_ids(tokenizer, c) + end, response_ids(tokenizer, r) + end)
        for p, c, r in zip(prompts, chosen, rejected, strict=True)
    ]
    order = sorted(range(len(encoded)), key=lambda i: sum(len(x) for x in encoded[i]))
    sums, counts = [0.0] * (2 * len(encoded)), [0] * (2 * len(encoded))  # chosen_i at 2i, rejected_i at 2i+1
    cache_kw = cache_keyword(model)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = left_pad([encoded[i][0] for i in idx], pad)
        answers = [encoded[i][k] for i in idx for k in (1, 2)]
        resp, rmask = _right_pad(answers, pad)
        with torch.inference_mode():
            cache, last = prefill(model, ids, mask, cache_kw)
            cache.batch_repeat_interleave(2)
            first = last[:, None].repeat_interleave(2, 0)  # predicts each answer's first token
            mask2 = torch.cat([mask.repeat_interleave(2, 0), rmask], 1)
            positions = mask.sum(1, keepdim=True).repeat_interleave(2, 0) + torch.arange(resp.shape[1])
            rest = model(
                input_ids=resp.to(device),
                attention_mask=mask2.to(device),
                position_ids=positions.to(device),
                use_cache=True,
                **{cache_kw: cache},
            ).logits[:, :-1]
            targets = resp.to(device)
            logp = torch.cat(
                [target_logprobs(first, targets[:, :1]), target_logprobs(rest, targets[:, 1:])], 1
            ).cpu()
        logp = logp * rmask
        for row, i in enumerate(idx):
            for k in (0, 1):
                sums[2 * i + k] = float(logp[2 * row + k].sum())
                counts[2 * i + k] = int(rmask[2 * row + k].sum())
    return sums[0::2], counts[0::2], sums[1::2], counts[1::2]
