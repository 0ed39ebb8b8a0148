"""Attention for training on a CPU: padding-free (packed) batches attend within each sequence only.

A padding-free batch (TRL's `padding_free` / `packing`) is one row holding several sequences, their position
ids restarting at 0 where each begins. transformers gives every attention implementation except
flash-attention varlen (CUDA only) a block-diagonal mask over the whole row, so the attention costs
(sum of the lengths)^2 — eight demo SFT rows of ~200 tokens: 1,600^2 scores a head a layer, 8x the
sum of 200^2 — and on a CPU the softmax over those scores was most of an SFT forward (6.4 s of 12.8 s in
the demo's five steps). Here each sequence runs alone, causal, through the same kernel (HF's eager attention
under bf16, its SDPA in fp32: `rlhf.train.stage` picks), which is the same arithmetic without the
masked-out blocks. Any other batch (padded rows, a KV cache) goes to that kernel unchanged.

Registered as two transformers attention implementations, each with the mask format of its kernel; used
only for model types whose attention is plain causal (`PLAIN_CAUSAL`, no sliding window): the eager kernel
is the model's own module's `eager_attention_forward`.
"""

from __future__ import annotations

import sys

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

SEGMENTS_EAGER = "rlhf_segments_eager"
SEGMENTS_SDPA = "rlhf_segments_sdpa"
PLAIN_CAUSAL = {"llama", "mistral", "qwen2", "qwen3", "olmo2"}  # model types this is known right for


def segment_attention(config, kernel: str) -> str | None:
    """The implementation name to train `config`'s model with for `kernel` (eager | sdpa); None where this
    module does not apply (another model type, a sliding window)."""
    plain = config.model_type in PLAIN_CAUSAL and not getattr(config, "sliding_window", None)
    return {"eager": SEGMENTS_EAGER, "sdpa": SEGMENTS_SDPA}.get(kernel) if plain else None


def sequence_starts(
    position_ids: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor
) -> list[int] | None:
    """Where each packed sequence of a one-row batch begins, with the row's end appended; None unless the row
    holds several sequences (and no KV cache: as many keys as queries)."""
    if position_ids is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return None
    pos = position_ids.reshape(-1)
    if pos.numel() != query.shape[2]:
        return None
    starts = (pos[1:] == 0).nonzero().flatten().add(1).tolist()
    if not starts:
        return None
    return [0, *starts, pos.numel()]


def _causal(length: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The additive causal mask eager attention takes (0 on and below the diagonal, the dtype's min above)."""
    return torch.full((length, length), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)[
        None, None
    ]


def _per_sequence(kernel, module, query, key, value, attention_mask, *, dropout=0.0, scaling=None, **kwargs):
    starts = sequence_starts(kwargs.get("position_ids"), query, key)
    if starts is None:
        return kernel(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    outs = []
    for begin, end in zip(starts[:-1], starts[1:], strict=True):
        q, k, v = query[:, :, begin:end], key[:, :, begin:end], value[:, :, begin:end]
        # SDPA without a mask is causal by itself; eager attention needs one
        mask = None if kernel is sdpa_attention_forward else _causal(end - begin, query.dtype, query.device)
        out, _ = kernel(module, q, k, v, mask, dropout=dropout, scaling=scaling, **kwargs)
        outs.append(out)
    return torch.cat(outs, 1), None  # batch x length x heads x head_dim, as the kernels return it


def segments_eager(module, query, key, value, attention_mask, **kwargs):
    eager = sys.modules[type(module).__module__].eager_attention_forward  # the model's own
    return _per_sequence(eager, module, query, key, value, attention_mask, **kwargs)


def segments_sdpa(module, query, key, value, attention_mask, **kwargs):
    return _per_sequence(sdpa_attention_forward, module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(SEGMENTS_EAGER, segments_eager)
AttentionMaskInterface.register(SEGMENTS_EAGER, eager_mask)
AttentionInterface.register(SEGMENTS_SDPA, segments_sdpa)
AttentionMaskInterface.register(SEGMENTS_SDPA, sdpa_mask)
