"""Generation: one sampling settings type, one decoder, one end-of-sequence rule, and the log-probs of
sampled responses. Used by `rlhf generate`, PPO rollouts, the drift probes and comparison.

- One decoder (`decode`) for every caller: prompts (token ids) left-padded into a batch, each distinct
  prompt prefilled **once** and its KV cache repeated for its `n` samples, then token by token with the KV
  cache. Rows that reached EOS leave the batch (the cache is compacted once an eighth of the rows is done),
  so a batch runs only as long as its live rows need. `generate_texts` sorts many prompts by length and cuts
  them into batches of at most `batch_size` prompts and `max_batch_tokens` cached tokens.
- The EOS rule: a response ends at its first EOS token (any of the model's generation-config EOS ids or the
  tokenizer's). The EOS is part of the response (`response_mask` is 1 on it, so PPO learns to stop) but not
  of its text; everything after it is padding. A response that never reaches EOS has `ended = False`.
- Sampling: the logits pass through what HF `generate` applies, in its order (repetition penalty, the
  min-new-tokens EOS ban, temperature, top-k, top-p), then one uniform per row picks a token by inverse CDF.
  Top-p works on the 64 most likely tokens and falls back to a full sort only for a row whose nucleus is
  wider (HF's warper sorts the whole vocabulary every step: measured 70–400 ms per step for 64 rows of a
  49k vocabulary on one core, more than the model's forward). The sampled token's log-prob at the sampling
  temperature (log softmax(logits / T): without repetition penalty, EOS ban or top-k / top-p truncation,
  what `forward_responses` recomputes) is recorded as it is drawn, from the very logits the token was drawn
  from, in the precision it was sampled in.
- Seeded rows (`seeds=[...]`): each row draws its uniforms from its own generator, so a row's answer depends
  only on (model, prompt, settings, its seed) — not on the batch it shares or its size. Used where answers
  are cached and compared (`rlhf compare`). Unseeded rows draw from torch's global generator.
- Precision (`SamplingSettings.precision`: auto | float32 | bfloat16; `rlhf.models.inference_precision`):
  `generate_texts` and the scorers in `rlhf.logprobs` run the model in it — the model itself when its weights
  already are, else an inference copy (`in_precision`); the stages load inference-only models in it
  directly. `sample` (PPO rollouts, drift probes) runs the model as it is: a training loop keeps its own
  precision. On a CPU, bf16 decoding uses `decode_attention` for its one-token steps (measured ≈ 20 % faster
  per step than the CPU SDPA kernel, whose bf16 path is slow for a single query; fp32 keeps SDPA).
- Log-probs of given tokens are recomputed with explicit position ids (left padding would otherwise shift
  the positions against those used while generating) and at the sampling temperature, so the "old"
  log-probs of PPO match the distribution sampled from.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
from transformers import (
    AttentionInterface,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from rlhf.config import bounded, documented
from rlhf.errors import ConfigError
from rlhf.models import Precision, PrecisionChoice, inference_precision, say_precision

TOP_P_CANDIDATES = 64  # top-p looks at this many most likely tokens before it falls back to a full sort
DECODE_ATTENTION = "rlhf_decode"
PREFILL_GROUP_ROWS = 16  # prefill: prompts of very different lengths run in groups of this many rows
LOGPROB_CHUNK_ELEMENTS = 1 << 22  # target_logprobs: 16 MB of fp32 logits at a time


@dataclass
class SamplingSettings:
    max_new_tokens: int = bounded(128, ge=1)
    min_new_tokens: int = bounded(0, ge=0, help="EOS is held back until this many new tokens (0 = off)")
    do_sample: bool = documented(True, help="false: greedy (deterministic)")
    temperature: float = bounded(1.0, ge=0)
    top_p: float = bounded(1.0, gt=0, le=1)
    top_k: int = bounded(0, ge=0, help="0 = off")
    repetition_penalty: float = bounded(1.0, gt=0)
    precision: Precision = documented(
        "auto",
        help="weights' precision when sampling and scoring (generate, compare): auto = bfloat16 where the "
        "hardware does bf16 natively (CUDA with bf16, AVX512-BF16/AMX CPUs), else float32. PPO rollouts and "
        "drift probes on hf sample the training model as it is (on vllm: the engine in this precision)",
    )

    def __post_init__(self):
        if self.do_sample and self.temperature <= 0:
            raise ConfigError("'temperature' must be > 0 when sampling (or set do_sample=false).")
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError(
                f"'min_new_tokens' ({self.min_new_tokens}) must be <= 'max_new_tokens' ({self.max_new_tokens})."
            )

    def precision_choice(self) -> PrecisionChoice:
        return inference_precision(self.precision)

    def generate_kwargs(self) -> dict:
        kwargs = dict(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            repetition_penalty=self.repetition_penalty,
        )
        if self.min_new_tokens:
            kwargs["min_new_tokens"] = self.min_new_tokens
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        return kwargs

    def processors(self) -> LogitsProcessorList:
        """HF's logits processors for these settings, in `generate`'s order (the reference `choose_tokens`
        is tested against; min_new_tokens is left out: it needs the step)."""
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
    logp: torch.Tensor | None = None  # B x R: each sampled token's log-prob as drawn (0 after the response)

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
            None if self.logp is None else self.logp[idx],
        )


class Sample(NamedTuple):
    text: str  # the response, without its EOS
    ended: bool  # reached EOS within max_new_tokens
    tokens: int  # response tokens generated (the EOS included)
    ids: tuple[int, ...] = ()  # the sampled token ids (the EOS included when ended)
    logp: float | None = None  # sum of the sampled tokens' log-probs at the sampling temperature, as drawn


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


# -- precision -----------------------------------------------------------------------------------------------


def weights_dtype(model) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def in_precision(model, choice: PrecisionChoice):
    """`model` itself when its weights are in `choice`'s dtype, else an inference copy in that dtype (the
    caller's model is left as it was). Stages load inference-only models in the precision directly."""
    say_precision(choice)
    if weights_dtype(model) == choice.dtype:
        return model
    with torch.no_grad():
        twin = copy.deepcopy(model)
    return twin.to(choice.dtype).eval().requires_grad_(False)


def decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention of one new token per row (decoding) as two batched matmuls over the key/value heads (no
    repeat of the KV cache for grouped queries), softmax in fp32; anything else goes to HF's SDPA path."""
    if query.shape[2] != 1 or dropout or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    batch, heads, _, dim = query.shape
    q = query.reshape(batch, key.shape[1], heads // key.shape[1], dim)
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * (scaling if scaling is not None else dim**-0.5)
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, : key.shape[2]]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    out = torch.matmul(torch.softmax(scores, -1).to(value.dtype), value)
    return out.reshape(batch, 1, heads, dim), None


AttentionInterface.register(DECODE_ATTENTION, decode_attention)
AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)


@contextmanager
def _decoding_attention(model) -> Iterator[None]:
    """`decode_attention` for the duration of a decode, where it was measured faster: bf16 on a CPU with
    HF's SDPA attention. The model's own setting is restored afterwards."""
    config = getattr(model, "config", None)
    swap = (
        config is not None
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and weights_dtype(model) == torch.bfloat16
        and next(model.parameters()).device.type == "cpu"
    )
    if not swap:
        yield
        return
    config._attn_implementation = DECODE_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"


# -- sampling ------------------------------------------------------------------------------------------------


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Top-p on probabilities sorted in descending order: a token stays while the mass before it is < top_p
    (HF's rule: drop the tail whose ascending cumulative mass is <= 1 - top_p); the first always stays."""
    keep = (probs.cumsum(-1) - probs) < top_p
    keep[:, 0] = True
    return probs * keep


def choose_tokens(
    scaled: torch.Tensor, settings: SamplingSettings, uniforms: torch.Tensor, lse: torch.Tensor | None = None
) -> torch.Tensor:
    """One token per row from processed fp32 logits (B x V: after repetition penalty, the EOS ban and the
    temperature; `lse` their logsumexp, B x 1, when already computed) and `uniforms` (B) in [0, 1): argmax
    when greedy, else inverse CDF over the top-k / top-p truncated distribution, tokens in descending
    probability order."""
    if not settings.do_sample:
        return scaled.argmax(-1)
    vocab = scaled.shape[-1]
    if settings.top_k:
        vals, idx = scaled.topk(min(settings.top_k, vocab), -1)
        probs = torch.softmax(vals, -1)
        if settings.top_p < 1.0:
            probs = _nucleus(probs, settings.top_p)
    elif settings.top_p < 1.0:
        lse = torch.logsumexp(scaled, -1, keepdim=True) if lse is None else lse
        vals, idx = scaled.topk(min(TOP_P_CANDIDATES, vocab), -1)
        probs = _nucleus((vals - lse).exp(), settings.top_p)
        wide = probs[:, -1] > 0  # the nucleus may reach past the candidates: sort those rows in full
        if bool(wide.any()):
            return _choose_wide(scaled, settings, uniforms, idx, probs, wide)
    else:
        idx, probs = None, torch.softmax(scaled, -1)
    cdf = probs.cumsum(-1)
    pick = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(1), right=True)
    pick = pick.clamp(max=probs.shape[-1] - 1)
    return pick.squeeze(1) if idx is None else idx.gather(1, pick).squeeze(1)


def _choose_wide(scaled, settings, uniforms, idx, probs, wide) -> torch.Tensor:
    """`choose_tokens` for rows whose nucleus is wider than the candidates: those rows over the full sort."""
    out = torch.empty(scaled.shape[0], dtype=torch.long, device=scaled.device)
    narrow = ~wide
    if bool(narrow.any()):
        cdf = probs[narrow].cumsum(-1)
        pick = torch.searchsorted(cdf, (uniforms[narrow] * cdf[:, -1]).unsqueeze(1), right=True)
        out[narrow] = idx[narrow].gather(1, pick.clamp(max=cdf.shape[-1] - 1)).squeeze(1)
    full_vals, full_idx = scaled[wide].sort(-1, descending=True)
    full = _nucleus(torch.softmax(full_vals, -1), settings.top_p)
    cdf = full.cumsum(-1)
    pick = torch.searchsorted(cdf, (uniforms[wide] * cdf[:, -1]).unsqueeze(1), right=True)
    out[wide] = full_idx.gather(1, pick.clamp(max=cdf.shape[-1] - 1)).squeeze(1)
    return out


# -- the decoder ---------------------------------------------------------------------------------------------


@dataclass
class Decoded:
    tokens: torch.Tensor  # B x <= max_new_tokens: the new tokens, `pad` after a row's EOS
    logp: torch.Tensor  # B x <= max_new_tokens: each token's log-prob at the sampling temperature (0 after)


def cache_keyword(model) -> str:
    """transformers >= 5.2x names the KV cache `cache` (`past_key_values` before)."""
    forward = model.get_base_model().forward if hasattr(model, "get_base_model") else model.forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


class _Rows:
    """The live rows of a decode: which output row each batch row is, its attention mask, the ids seen so far
    (for the repetition penalty) and its generator (seeded rows)."""

    def __init__(self, mask, seen, gens):
        self.index, self.mask, self.seen, self.gens = torch.arange(mask.shape[0]), mask, seen, gens

    def uniforms(self) -> torch.Tensor:
        if self.gens is None:
            return torch.rand(len(self.index))
        return torch.cat([torch.rand(1, generator=g) for g in self.gens])

    def keep(self, live: torch.Tensor, cache) -> None:
        rows = live.nonzero().squeeze(1)
        cache.batch_select_indices(rows)
        self.index, self.mask = self.index[rows], self.mask[rows]
        self.seen = None if self.seen is None else self.seen[rows]
        self.gens = None if self.gens is None else [self.gens[i] for i in rows.tolist()]


def _draw(logits, t: int, live: _Rows, settings: SamplingSettings, penalty, banned) -> tuple:
    """Step t's tokens and their log-probs at the sampling temperature (on the CPU), drawn on the logits'
    device from the model's fp32 logits (live rows x V)."""
    device = logits.device
    plain = logits / settings.temperature if settings.do_sample else logits
    lse = torch.logsumexp(plain, -1, keepdim=True)
    uniforms = live.uniforms().to(device)
    ban = t < settings.min_new_tokens and len(banned) > 0
    if penalty is None and not ban:
        token = choose_tokens(plain, settings, uniforms, lse)
    else:
        scores = logits.clone() if penalty is None else penalty(live.seen.to(device), logits)
        if ban:
            scores[:, banned.to(device)] = float("-inf")
        token = choose_tokens(
            scores / settings.temperature if settings.do_sample else scores, settings, uniforms
        )
    # recorded at the temperature alone (no penalty, ban or truncation): what scoring recomputes
    logp = (plain.gather(1, token[:, None]) - lse).squeeze(1)
    return token.cpu(), logp.cpu()


def prefill(model, ids: torch.Tensor, mask: torch.Tensor, cache_kw: str) -> tuple:
    """Left-padded prompts (ids, mask) through the model with the KV cache kept: (cache, each row's
    last-position logits, B x V). A batch of prompts of very different lengths runs as groups of similar
    length (`_length_groups`) whose caches are put back together, left-padded to the batch's width: the
    padding is masked either way, and 64 demo prompts (2,926 tokens, 5,568 padded) prefilled in 1.5-1.8 s
    instead of 2.5-3.2 s."""
    groups = _length_groups(mask)
    if len(groups) == 1:
        return _prefill(model, ids, mask, cache_kw)
    width, parts = ids.shape[1], []
    for rows in groups:
        w = int(mask[rows].sum(1).max())
        parts.append((rows, w, *_prefill(model, ids[rows, width - w :], mask[rows, width - w :], cache_kw)))
    cache = parts[0][2]
    if not all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None])):
        return _prefill(model, ids, mask, cache_kw)  # a cache kind we do not re-assemble: one pass
    for k, layer in enumerate(cache.layers):
        for attr in ("keys", "values"):
            first = getattr(layer, attr)
            full = first.new_zeros(ids.shape[0], first.shape[1], width, first.shape[3])
            for rows, w, part, _ in parts:
                full[rows.to(first.device), :, width - w :] = getattr(part.layers[k], attr)
            setattr(layer, attr, full)
    logits = parts[0][3].new_empty(ids.shape[0], parts[0][3].shape[-1])
    for rows, _, _, last in parts:
        logits[rows.to(logits.device)] = last
    return cache, logits


def _prefill(model, ids: torch.Tensor, mask: torch.Tensor, cache_kw: str) -> tuple:
    device = next(model.parameters()).device
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=position_ids(mask).to(device),
        use_cache=True,
        logits_to_keep=1,
    )
    return getattr(out, cache_kw), out.logits[:, -1]


class _SlotLayer(DynamicLayer):
    """A layer's KV cache in one buffer sized for the whole decode (the prompt width plus every new token),
    each step's keys and values written into their slot in place. The attention reads the whole buffer: the
    causal mask hides the slots not written yet, which then add exactly 0 (the same logits, bit for bit).
    transformers' `DynamicLayer` copies the whole cache into a new tensor every step (`torch.cat`)."""

    def __init__(self, layer: DynamicLayer, capacity: int):
        super().__init__()
        batch, heads, width, dim = layer.keys.shape
        self.keys = layer.keys.new_zeros(batch, heads, capacity, dim)
        self.values = layer.values.new_zeros(batch, heads, capacity, dim)
        self.keys[:, :, :width], self.values[:, :, :width] = layer.keys, layer.values
        self.length, self.device, self.is_initialized = width, layer.keys.device, True

    def update(self, key_states, value_states, *args, **kwargs):
        start, self.length = self.length, self.length + key_states.shape[-2]
        self.keys[:, :, start : self.length] = key_states
        self.values[:, :, start : self.length] = value_states
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.keys.shape[-2], 0


def _in_slots(cache, capacity: int) -> None:
    """A prefilled dynamic cache's layers as `_SlotLayer`s of `capacity` tokens (other cache kinds are left
    as they are). Measured alternated (SmolLM2 bf16, 64 rows, 2-core AVX512-BF16 CPU): 87-110 ms a step
    instead of 103-133."""
    layers = getattr(cache, "layers", None)
    if layers and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers):
        cache.layers = [_SlotLayer(layer, capacity) for layer in layers]


def _length_groups(mask: torch.Tensor) -> list[torch.Tensor]:
    """Row indices of a left-padded batch in groups of `PREFILL_GROUP_ROWS` rows of similar length, when
    padding is over a quarter of the batch's tokens; else one group (all rows)."""
    lengths = mask.sum(1)
    rows = len(lengths)
    if rows <= PREFILL_GROUP_ROWS or rows * mask.shape[1] <= 1.25 * int(lengths.sum()):
        return [torch.arange(rows)]
    order = torch.argsort(lengths, stable=True)
    return list(order.split(PREFILL_GROUP_ROWS))


def decode(
    model,
    ids: torch.Tensor,
    mask: torch.Tensor,
    settings: SamplingSettings,
    eos: list[int],
    pad: int,
    *,
    n: int = 1,
    seeds: list[int] | None = None,
) -> Decoded:
    """`n` responses to each left-padded prompt (ids, mask: P x W), rows prompt-major; with `seeds` (one per
    row) each row draws from `torch.Generator(seed)`. The model runs as it is (its dtype and device)."""
    device = next(model.parameters()).device
    rows, steps = ids.shape[0] * n, settings.max_new_tokens
    if seeds is not None and len(seeds) != rows:
        raise ValueError(f"seeds: one per row ({rows}), got {len(seeds)}")
    gens = None if seeds is None else [torch.Generator().manual_seed(int(s)) for s in seeds]
    seen = ids.repeat_interleave(n, 0) if settings.repetition_penalty != 1.0 else None
    live = _Rows(mask.repeat_interleave(n, 0), seen, gens)
    tokens, logps = torch.full((rows, steps), pad), torch.zeros(rows, steps)
    eos_t, banned = torch.tensor(eos or [-1]), torch.tensor(eos, dtype=torch.long)
    penalty = RepetitionPenaltyLogitsProcessor(settings.repetition_penalty) if seen is not None else None
    cache_kw, done, used = cache_keyword(model), torch.zeros(rows, dtype=torch.bool), 0
    with torch.inference_mode(), _decoding_attention(model):
        cache, logits = prefill(model, ids, mask, cache_kw)
        logits = logits.float()
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, 0)
        _in_slots(cache, ids.shape[1] + steps)
        for t in range(steps):
            token, logp = _draw(logits, t, live, settings, penalty, banned)
            tokens[live.index, t], logps[live.index, t], used = token, logp, t + 1
            done[live.index] |= torch.isin(token, eos_t)
            going = ~done[live.index]
            if t == steps - 1 or not bool(going.any()):
                break
            if int((~going).sum()) * 8 >= len(going):  # compact once an eighth of the rows is done
                live.keep(going, cache)
                token = token[going]
            live.mask = torch.cat([live.mask, torch.ones(len(token), 1, dtype=live.mask.dtype)], 1)
            if live.seen is not None:
                live.seen = torch.cat([live.seen, token[:, None]], 1)
            out = model(
                input_ids=token[:, None].to(device),
                attention_mask=live.mask.to(device),
                position_ids=(live.mask.sum(1, keepdim=True) - 1).to(device),
                use_cache=True,
                **{cache_kw: cache},
            )
            cache, logits = getattr(out, cache_kw), out.logits[:, -1].float()
    tokens, logps = tokens[:, :used], logps[:, :used]
    after = torch.cumsum(torch.isin(tokens, eos_t).long(), 1) - torch.isin(tokens, eos_t).long() > 0
    return Decoded(tokens.masked_fill(after, pad), logps.masked_fill(after, 0.0))


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
    """`n` responses per prompt (token ids in), as one batch, from the model as it is (its precision);
    rows are prompt-major (prompt i's samples are rows i*n .. i*n+n-1). With `seeds` (one per row), each
    row samples from its own generator. `synced_gpus` (ZeRO-3 over several processes, whose forward passes
    must stay in step) uses HF `generate`."""
    pad = tokenizer.pad_token_id
    eos = eos_ids(model, tokenizer)
    ids, mask = left_pad(prompts, pad)
    width, logp = ids.shape[1], None
    if synced_gpus:
        if seeds is not None:
            raise ValueError("seeded rows need rlhf's decoder; synced_gpus runs HF generate")
        device = next(model.parameters()).device
        kwargs = {**settings.generate_kwargs(), "pad_token_id": pad, "eos_token_id": eos, "synced_gpus": True}
        ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
        with torch.no_grad():
            generated = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True, **kwargs
            ).cpu()[:, width:]
    else:
        decoded = decode(model, ids, mask, settings, eos, pad, n=n, seeds=seeds)
        generated, logp = decoded.tokens, decoded.logp
        ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    resp, rmask, ended = cut_at_eos(generated, eos, pad)
    return Rollout(
        input_ids=torch.cat([ids, resp], 1),
        attention_mask=torch.cat([mask, rmask.long()], 1),
        prompt_width=width,
        response_mask=rmask,
        ended=ended,
        logp=logp,
    )


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """The text of each response, without its EOS."""
    out = []
    lengths = rollout.response_mask.sum(1).long() - rollout.ended.long()
    for toks, n in zip(rollout.responses.tolist(), lengths.tolist(), strict=True):
        out.append(tokenizer.decode(toks[:n], skip_special_tokens=True).strip())
    return out


def batches(
    lengths: list[int], *, n: int, batch_size: int, max_batch_tokens: int | None, max_new_tokens: int
) -> list[list[int]]:
    """Prompt indices sorted by length, cut into batches of at most `batch_size` prompts whose rows (n per
    prompt) hold at most `max_batch_tokens` tokens in the KV cache at the end (rows x (longest prompt +
    max_new_tokens)); a prompt that alone exceeds it still gets a batch. Pure."""
    out: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if out:
            last = out[-1]
            width = max(lengths[last[-1]], lengths[i]) + max_new_tokens
            fits = max_batch_tokens is None or (len(last) + 1) * n * width <= max_batch_tokens
            if len(last) < batch_size and fits:
                last.append(i)
                continue
        out.append([i])
    return out


def generate_texts(
    model,
    tokenizer,
    prompts: list[list[int]],
    settings: SamplingSettings,
    *,
    n: int = 1,
    batch_size: int = 8,
    max_batch_tokens: int | None = None,
    progress=None,
    seeds: list[int] | None = None,
) -> Generated:
    """`n` samples for each prompt, in `settings.precision` (`in_precision`), prompts batched after sorting
    them by length (`batches`). With `seeds` (one per prompt and n = 1), each answer comes from its own
    generator: the same whatever the batching."""
    if seeds is not None and (n != 1 or len(seeds) != len(prompts)):
        raise ValueError("seeds: one per prompt, with n = 1")
    model = in_precision(model, settings.precision_choice())
    out: list[list[Sample]] = [[] for _ in prompts]
    new_tokens = 0
    plan = batches(
        [len(p) for p in prompts],
        n=n,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        max_new_tokens=settings.max_new_tokens,
    )
    for idx in plan:
        rows = [seeds[i] for i in idx] if seeds is not None else None
        rollout = sample(model, tokenizer, [prompts[i] for i in idx], settings, n=n, seeds=rows)
        new_tokens += int(rollout.response_mask.sum().item())
        texts = decode_responses(tokenizer, rollout)
        lengths = rollout.response_mask.sum(1).long().tolist()
        responses = rollout.responses.tolist()
        sums = rollout.logp.sum(1).tolist()
        for row, (text, ended) in enumerate(zip(texts, rollout.ended.tolist(), strict=True)):
            ids = tuple(responses[row][: lengths[row]])
            out[idx[row // n]].append(Sample(text, bool(ended), lengths[row], ids, sums[row]))
        if progress is not None:
            progress.update(len(idx))
    return Generated(out, new_tokens)


# -- log-probs of sampled responses ------------------------------------------------------------------------


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


@contextmanager
def contiguous_head_input(model) -> Iterator[None]:
    """The LM head gets a contiguous input for the duration. HF slices the last hidden states to the
    `logits_to_keep` positions, a strided view when there are several rows, and torch's linear then takes
    its batched-matmul path, which copies the whole head weight for every row: on SmolLM2's 49k x 576 head,
    4 rows x 49 positions took 241 ms in bf16 (26 ms from a contiguous input) and 206 ms in fp32 (113 ms);
    the copy of the input is 4 x 49 x 576 values."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(lambda _module, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


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
    with contiguous_head_input(model):
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids(mask),
            output_hidden_states=hidden,
            logits_to_keep=R + 1,
        )
    logp = target_logprobs(out.logits[:, :-1], ids[:, P:], temperature)
    states = out.hidden_states[-1][:, P - 1 : -1] if hidden else None
    return logp, states


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T) at each position's target token (logits ... x V, targets ...: the same leading
    shape), in fp32 — computed over chunks of positions as the target's logit minus the row's logsumexp, so
    no full-size fp32 copy of the logits (or of their log-softmax) is ever made: for 16 rows x 49 positions
    of a 49k vocabulary those were 154 MB each, freshly mapped pages every batch."""
    vocab = logits.shape[-1]
    flat, tgt = logits.reshape(-1, vocab), targets.reshape(-1).to(logits.device)
    step = max(1, LOGPROB_CHUNK_ELEMENTS // vocab)
    parts = []
    for start in range(0, flat.shape[0], step):
        chunk = flat[start : start + step].float()
        if temperature != 1.0:
            chunk = chunk / temperature
        picked = chunk.gather(1, tgt[start : start + step, None]).squeeze(1)
        parts.append(picked - torch.logsumexp(chunk, -1))
    return (torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.float32)).view(targets.shape)


def sequence_logprobs(model, rollout: Rollout, temperature: float = 1.0) -> torch.Tensor:
    return forward_responses(model, rollout, temperature=temperature)[0]
