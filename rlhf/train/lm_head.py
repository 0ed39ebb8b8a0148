"""The LM head's per-token log-probabilities on CPU: TRL's fused LM head at the CPU's speed.

TRL 1.16's SFT, DPO, KTO, GRPO and RLOO trainers score every token through a fused LM head
(`trl.trainer.utils.add_fused_lm_head` -> `ChunkedLogProbFunction`): the logits are never materialised
whole. On devices without Triton its torch fallback is slow on a CPU — in the demo it was 60 % of DPO's
time: every position is scored, prompt and padding included (`compact` is for Triton devices only); the
backward upcasts each tile and each weight chunk to fp32 for its matmuls (the bf16 matmul is ~4x faster
on a native-bf16 CPU); and the fold runs a dozen passes over [4096, 32768] tiles.

`CPULogProbs` computes the same quantities (log-probs, entropy, log(sum p^2), mean logit, whether the
label is the argmax; the same gradients, in the same compute dtype: the autocast dtype under autocast,
else the hidden states' dtype) on the labeled positions only, a block of tokens against the whole
vocabulary at a time (`TOKEN_BYTES` of fp32 logits), the matmuls in the compute dtype with fp32
accumulation inside each, the softmax arithmetic in fp32. `use_cpu_lm_head()` puts it behind TRL's fused
head for CPU tensors (TRL's own function keeps every other device, and final-logit soft-capping); it is
called once per process by `TRLStage`, and refuses quietly (TRL's path stays) if TRL's internals are not
the ones this was written against. Tested against a plain full-logits computation (values and gradients)
and against TRL's function (tests/test_lm_head.py).
"""

from __future__ import annotations

import inspect

import torch
from trl.trainer import utils as trl_utils

# fp32 logits per block of tokens: 24 MiB (128 tokens at SmolLM2's 49k vocab). Below glibc's mmap threshold
# (32 MiB: rlhf/allocator.py, and glibc's own ceiling), so each block's temporaries reuse heap pages; 128 MiB
# blocks were mapped fresh for every temporary, and a forward + backward over 1,200 tokens took 1.9-2.6 s
# instead of 0.59-0.61 s (2-core AVX512-BF16 CPU; 16 MiB: 0.64 s)
TOKEN_BYTES = 24 * 2**20
_EXPECTED = [
    "ctx",
    "hidden",
    "weight",
    "bias",
    "targets",
    "temperature",
    "chunk_size",
    "final_logit_softcapping",
    "logit_scale",
    "outputs",
]
_installed = False


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype


def _block(n_vocab: int) -> int:
    return max(64, TOKEN_BYTES // (4 * n_vocab))


def _logits(h: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """fp32 logits of one block, the matmul in `w`'s dtype (h already cast), times `scale`."""
    z = (h @ w.t()).float()
    if bias is not None:
        z += bias.float()
    if scale != 1.0:
        z *= scale
    return z


class CPULogProbs(torch.autograd.Function):
    """`ChunkedLogProbFunction`'s contract on the rows given (the caller passes labeled positions only):
    (log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1), fields not in `outputs` None."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale, outputs):
        ctx.set_materialize_grads(False)
        dtype = _compute_dtype(hidden)
        scale = logit_scale / temperature
        w = weight.to(dtype)
        n, vocab = hidden.shape[0], weight.shape[0]
        logprobs, entropy, lse_all = (hidden.new_empty(n, dtype=torch.float32) for _ in range(3))
        sq = hidden.new_empty(n, dtype=torch.float32) if "log_sum_sq_probs" in outputs else None
        mean = hidden.new_empty(n, dtype=torch.float32) if "mean_logits" in outputs else None
        top1 = hidden.new_empty(n, dtype=torch.bool) if "is_top1" in outputs else None
        step = _block(vocab)
        for a in range(0, n, step):
            b = min(a + step, n)
            z = _logits(hidden[a:b].to(dtype), w, bias, scale)
            t = targets[a:b].unsqueeze(-1)
            if mean is not None:
                mean[a:b] = z.mean(-1)
            if top1 is not None:
                top1[a:b] = (
                    z.argmax(-1) == targets[a:b]
                )  # the first maximum: a tie with an earlier token is not top-1
            target = z.gather(-1, t).squeeze(-1)
            m = z.amax(-1, keepdim=True)
            z -= m
            e = torch.exp(z)
            s = e.sum(-1)
            log_s = torch.log(s)
            lse_all[a:b] = m.squeeze(-1) + log_s
            logprobs[a:b] = target - lse_all[a:b]
            entropy[a:b] = log_s - (e * z).sum(-1) / s
            if sq is not None:
                sq[a:b] = torch.log((e * e).sum(-1)) - 2 * log_s
        ctx.save_for_backward(hidden, weight, bias, targets, lse_all, entropy)
        ctx.scale, ctx.dtype = scale, dtype
        out_entropy = entropy if "entropy" in outputs else None
        ctx.mark_non_differentiable(*(x for x in (sq, mean, top1) if x is not None))
        return logprobs, out_entropy, sq, mean, top1

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy, *_):
        hidden, weight, bias, targets, lse_all, entropy = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        dtype, scale = ctx.dtype, ctx.scale
        w = weight.to(dtype)
        n, vocab = hidden.shape[0], weight.shape[0]
        grad_h = torch.empty(hidden.shape, dtype=hidden.dtype) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros(vocab, dtype=torch.float32) if need_b else None
        step = _block(vocab)
        for a in range(0, n, step):
            b = min(a + step, n)
            h = hidden[a:b].to(dtype)
            log_p = _logits(h, w, bias, scale)
            log_p -= lse_all[a:b].unsqueeze(-1)
            p = torch.exp(log_p)
            grad = torch.zeros_like(p)
            if grad_logprobs is not None:  # d log p_t / dz_j = 1[j = t] - p_j
                g = grad_logprobs[a:b].float().unsqueeze(-1)
                grad -= p * g
                grad.scatter_add_(-1, targets[a:b].unsqueeze(-1), g)
            if grad_entropy is not None:  # dH / dz_j = -p_j (log p_j + H)
                log_p += entropy[a:b].unsqueeze(-1)
                grad -= p * log_p * grad_entropy[a:b].float().unsqueeze(-1)
            if scale != 1.0:
                grad *= scale
            if grad_h is not None:
                grad_h[a:b] = grad.to(dtype) @ w
            if grad_w is not None:
                grad_w += (grad.t().to(dtype) @ h).float()
            if grad_b is not None:
                grad_b += grad.sum(0)
        return (
            grad_h,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            grad_b.to(bias.dtype) if grad_b is not None else None,
            *([None] * 6),
        )


def use_cpu_lm_head() -> bool:
    """Put `CPULogProbs` behind TRL's fused LM head for CPU tensors (module docstring). Once per process;
    False (TRL's path kept) where TRL's internals differ from those this was written against."""
    global _installed
    if _installed:
        return True
    try:
        trl_function = trl_utils._ChunkedLogProbFunction
        trl_compact = trl_utils._use_triton
        if list(inspect.signature(trl_function.forward).parameters) != _EXPECTED:
            return False
    except AttributeError:
        return False

    class Dispatch:
        @staticmethod
        def apply(hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale, outputs):
            fn = CPULogProbs if hidden.device.type == "cpu" and softcap is None else trl_function
            return fn.apply(
                hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale, outputs
            )

    trl_utils._ChunkedLogProbFunction = Dispatch
    # TRL scores only the labeled positions on Triton devices; on a CPU every position (prompt and padding
    # too) unless told otherwise. The CPU's shapes may vary from batch to batch (no compilation here).
    trl_utils._use_triton = lambda device: device.type == "cpu" or trl_compact(device)
    _installed = True
    return True
