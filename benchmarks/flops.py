"""Training-FLOP accounting shared by the throughput benchmarks (DPO, SFT, KTO): each side's trainer is
`instrumented` (train() timed; every training batch counted in compute_loss: tokens, padded positions,
sum of length^2, LM-head positions, labeled positions), the FLOPs follow analytically (`lora_flops`), and
`utilisation` prints them against this machine's measured matmul peak of the precision each side trained in.

FLOPs (analytic, per run). L layers, width d, Nb = frozen decoder matmul weights (q,k,v,o,gate,up,down:
106.2M for SmolLM2), Nl = LoRA weights (4.9M at r=16), Nh = d * vocab (the tied LM head, 28.3M); T = tokens,
H = positions put through the LM head, S2 = sum over sequences of length^2:
    layer forward      F  = 2*(Nb+Nl)*T + 4*L*d*S2        (matmuls + attention QK^T and AV, full square)
    policy forward        F + 2*Nh*H
    reference forward     2*Nb*T + 4*L*d*S2 + 2*Nh*H      (DPO, KTO: adapter disabled, no grad)
    KTO's KL batch        a policy forward (no grad) and a reference forward over its mismatched sequences
    recomputation         F                               (gradient checkpointing re-runs each layer)
    backward              2*(Nb+Nl)*T + 8*L*d*S2 + 2*Nh*H (activation grads through every frozen weight:
                          the first LoRA sits in layer 0)  + 2*Nl*T (weight grads: LoRA only)
  executed: T, S2 over the positions computed (padding included; a padding-free row is its sequences,
            each attending alone), H = every position where TRL's fused LM head scores them all (its torch
            fallback without Triton), the labeled positions where rlhf's CPU head runs (`rlhf.train.lm_head`).
  useful:   T, S2 over non-padding tokens, H = labeled positions only (MFU convention).
Not counted: norms, activations, softmax, RoPE, the (LoRA-only) optimizer: a few per cent at most.
The DPO figures were checked against torch.utils.flop_counter on one step: the matmul part within 0.1 %.
"""

from __future__ import annotations

import itertools
import resource
import statistics
import time

import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def model_dims(model) -> dict:
    """Matmul weight counts of a (peft-wrapped) causal LM: frozen decoder linears, LoRA, LM head."""
    cfg = model.config
    body = lora = 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            lora += p.numel()
        elif p.dim() == 2 and "embed_tokens" not in name and "lm_head" not in name:
            body += p.numel()
    d = cfg.hidden_size
    return dict(L=cfg.num_hidden_layers, d=d, Nb=body, Nl=lora, Nh=d * cfg.vocab_size)


def sequence_lengths(inputs) -> tuple[torch.Tensor, int, int]:
    """(non-padding length of each sequence, rows, width) of a training batch: from the attention mask, or
    for TRL's padding-free rows (position_ids, no mask) from where the positions restart at 0."""
    mask = inputs.get("attention_mask")
    if mask is not None:
        return mask.sum(dim=1), *mask.shape
    ids, pos = inputs["input_ids"], inputs.get("position_ids")
    if pos is None:
        return torch.full((ids.shape[0],), ids.shape[1]), *ids.shape
    starts = (pos.reshape(-1) == 0).nonzero().reshape(-1).tolist() + [pos.numel()]
    lens = torch.tensor([b - a for a, b in itertools.pairwise(starts) if b > a])
    return lens, *ids.shape


def batch_counts(inputs) -> dict:
    """What one training batch puts through the network: non-padding tokens, positions computed (padding
    included), sum of length^2 (attention; padded: rows x width^2), positions through the LM head (all but
    the last of each row), and the labeled positions (`completion`) where the batch says which they are.
    KTO's mismatched KL sequences (`KL_input_ids`, ...) are counted the same way under `kl_` keys."""
    counts = _counts(inputs)
    if "KL_input_ids" in inputs:
        kl = {k[3:]: v for k, v in inputs.items() if k.startswith("KL_")}
        counts |= {f"kl_{k}": v for k, v in _counts(kl).items()}
    return counts


def _counts(inputs) -> dict:
    lens, rows, width = sequence_lengths(inputs)
    packed_row = inputs.get("attention_mask") is None and inputs.get("position_ids") is not None
    counts = {
        "tokens": int(lens.sum()),
        "padded": rows * width,
        "s2": int((lens * lens).sum()),
        "padded_s2": int((lens * lens).sum()) if packed_row else rows * width * width,
        "head_positions": rows * (width - 1),
    }
    if "completion_mask" in inputs:
        counts["completion"] = int(inputs["completion_mask"][:, 1:].sum())
    elif "labels" in inputs:
        counts["completion"] = int((inputs["labels"][..., 1:] != -100).sum())
    return counts


def lora_flops(m: dict, T: int, H: int, S2: int, *, checkpointing: bool, reference: bool) -> float:
    """Training FLOPs of a LoRA fine-tune over T tokens, H positions through the LM head, S2 = sum of
    length^2 (module docstring); `reference`: plus DPO's adapter-off reference forward of the same batch."""
    attn = 4 * m["L"] * m["d"] * S2
    layers = 2 * (m["Nb"] + m["Nl"]) * T + attn
    head = 2 * m["Nh"] * H
    policy = layers + head
    ref = 2 * m["Nb"] * T + attn + head if reference else 0
    recompute = layers if checkpointing else 0
    backward = 2 * (m["Nb"] + m["Nl"]) * T + 2 * attn + head + 2 * m["Nl"] * T
    return float(policy + ref + recompute + backward)


def kl_forward_flops(m: dict, T: int, H: int, S2: int) -> float:
    """KTO's KL term: the policy (no grad) and the adapter-off reference forward over the mismatched batch."""
    attn = 4 * m["L"] * m["d"] * S2
    head = 2 * m["Nh"] * H
    return float((2 * (m["Nb"] + m["Nl"]) * T + attn + head) + (2 * m["Nb"] * T + attn + head))


def flop_result(stats: dict, steps: int, *, reference: bool) -> dict:
    """A side's result from its `instrumented` trainer's stats: tokens, seconds, FLOPs executed (padding and
    every head position the side computes) and useful (non-padding tokens, labeled head positions)."""
    if stats["steps"] != steps:
        raise SystemExit(f"trained {stats['steps']} steps, expected {steps}")
    m, ckpt = stats["dims"], stats["checkpointing"]
    executed = lora_flops(
        m,
        stats["padded"],
        stats["head_positions"],
        stats["padded_s2"],
        checkpointing=ckpt,
        reference=reference,
    )
    useful = lora_flops(
        m, stats["tokens"], stats["completion"], stats["s2"], checkpointing=ckpt, reference=reference
    )
    if "kl_tokens" in stats:  # KTO
        executed += kl_forward_flops(m, stats["kl_padded"], stats["kl_head_positions"], stats["kl_padded_s2"])
        useful += kl_forward_flops(m, stats["kl_tokens"], stats["kl_completion"], stats["kl_s2"])
    return {
        "tokens": stats["tokens"],
        "seconds": stats["seconds"],
        "padded": stats["padded"],
        "flops": executed,
        "useful_flops": useful,
        "gflop_per_s": round(executed / stats["seconds"] / 1e9, 2),
        "peak_rss_mb": stats["peak_rss_mb"],
        "bf16": stats["bf16"],
        "checkpointing": ckpt,
    }


def compact_head(device) -> bool:
    """Whether TRL's fused LM head scores only labeled positions here: on Triton devices, and on a CPU once
    rlhf's CPU head is installed (`rlhf.train.lm_head`: a TRL stage installs it in its process)."""
    from trl.trainer import utils as trl_utils  # lazy: trl loads only in the side processes

    return bool(trl_utils._use_triton(device))


PACKED = {"forwards": 0}  # forwards rlhf.train.packing ran padding-free (counted by count_packing)


def count_packing() -> None:
    """Count the padding-free forwards (`rlhf.train.packing.pack`), so a packed batch's executed work is its
    tokens (each sequence attends alone: S2 = sum of length^2), not rows x width."""
    from rlhf.train import packing

    pack = packing.pack

    def counted(*args, **kwargs):
        PACKED["forwards"] += 1
        return pack(*args, **kwargs)

    packing.pack = counted


def instrumented(base):
    """A subclass of a TRL trainer that only times train() and counts the batches it trains on."""

    class Instrumented(base):
        stats: dict = {}

        def compute_loss(self, model, inputs, *args, **kwargs):
            packed_before = PACKED["forwards"]
            out = super().compute_loss(model, inputs, *args, **kwargs)
            if model.training:
                counts = batch_counts(inputs)
                compact = compact_head(inputs["input_ids"].device)  # rlhf's CPU head: labeled positions only
                packed = PACKED["forwards"] > packed_before  # rlhf.train.packing: one row, no padding
                for pre in ("", "kl_") if "kl_tokens" in counts else ("",):
                    if compact and f"{pre}completion" in counts:
                        counts[f"{pre}head_positions"] = counts[f"{pre}completion"]
                    if packed:
                        counts[f"{pre}padded"] = counts[f"{pre}tokens"]
                        counts[f"{pre}padded_s2"] = counts[f"{pre}s2"]
                for k, v in counts.items():
                    Instrumented.stats[k] = Instrumented.stats.get(k, 0) + v
            return out

        def train(self, *args, **kwargs):
            t0 = time.perf_counter()
            out = super().train(*args, **kwargs)
            s = Instrumented.stats
            s["seconds"] = time.perf_counter() - t0
            s["peak_rss_mb"] = round(peak_rss_mb(), 1)
            s["steps"] = self.state.global_step
            s["dims"] = model_dims(self.model)
            s["checkpointing"] = bool(self.args.gradient_checkpointing)
            s["bf16"] = bool(self.args.bf16)
            return out

    return Instrumented


def matmul_peak(dtype_name: str, n: int, budget_s: float) -> float:
    """Best FLOP/s of one n x n x n torch.matmul over repeated timed calls (warm-up excluded)."""
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best, t_end = 0.0, time.perf_counter() + budget_s
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def precision_line(peaks: dict, threads: int) -> str:
    """What the measured peaks say about bf16 on this machine (no assumption)."""
    ratio = peaks["bf16"] / peaks["fp32"]
    verdict = (
        f"bf16 is {ratio:.1f}x fp32 here (native)"
        if ratio >= 1
        else f"bf16 is {1 / ratio:.0f}x slower than fp32 here (emulated)"
    )
    return (
        f"measured matmul peak ({threads} threads): fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 "
        f"{peaks['bf16'] / 1e9:.1f} GFLOP/s — {verdict}"
    )


def utilisation(results: dict[str, list[dict]], names: dict[str, str]) -> None:
    """Measure this machine's matmul peaks, say what they mean for bf16, then each side's median achieved
    FLOP/s (executed and useful) as a share of the peak of the precision it trained in."""
    peaks = {"fp32": matmul_peak("float32", 2048, 6.0), "bf16": matmul_peak("bfloat16", 1024, 6.0)}
    print(precision_line(peaks, torch.get_num_threads()), flush=True)
    for side, rs in results.items():
        ran = "bf16" if rs[0]["bf16"] else "fp32"
        rate = statistics.median(r["flops"] / r["seconds"] for r in rs)
        useful = statistics.median(r["useful_flops"] / r["seconds"] for r in rs)
        mode = "bf16 mixed precision" if rs[0]["bf16"] else "fp32"
        print(
            f"achieved {names[side]}: {rate / 1e9:.2f} GFLOP/s executed = {100 * rate / peaks[ran]:.1f}% of the "
            f"{ran} matmul peak (trained in {mode}); useful {useful / 1e9:.2f} GFLOP/s = "
            f"{100 * useful / peaks[ran]:.1f}% of it"
        )
