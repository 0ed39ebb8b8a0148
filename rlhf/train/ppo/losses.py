"""Pure tensor functions of PPO: masked statistics, whitening, KL estimators, per-token rewards, GAE,
clipped policy and value losses, KL controllers. No I/O, no models — tested against hand-computed values.

Shapes: B sequences x T response tokens; `mask` is 1 on response tokens (the EOS included) and 0 on the
padding after them. Distributed runs pass `reduce` (sum over processes) so statistics are global and a
2-process run computes what a 1-process run of the same global batch computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor] | None


def _sum(x: torch.Tensor, reduce: Reduce) -> torch.Tensor:
    s = x.sum()
    return reduce(s) if reduce is not None else s


def masked_mean(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce = None) -> torch.Tensor:
    return _sum(x * mask, reduce) / _sum(mask, reduce).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce = None) -> torch.Tensor:
    """Unbiased (n-1) variance of the masked entries."""
    mean = masked_mean(x, mask, reduce)
    n = _sum(mask, reduce)
    return _sum(((x - mean) ** 2) * mask, reduce) / (n - 1).clamp(min=1)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, reduce: Reduce = None
) -> torch.Tensor:
    """(x - mean) / std over the masked entries; with shift_mean=False the mean is added back (rewards keep
    their sign, only their scale changes). Masked-out entries come back as 0."""
    mean, var = masked_mean(x, mask, reduce), masked_var(x, mask, reduce)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Estimators of KL(policy || reference) per sampled token (Schulman, "Approximating KL divergence"):
    k1 = log p - log q (unbiased, can be negative), k2 = (log p - log q)^2 / 2, k3 = (r - 1) - log r with
    r = q / p (unbiased, always >= 0). Samples come from the policy p."""
    d = logp - ref_logp
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d**2
    if kind == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor) -> torch.Tensor:
    """Per-token rewards: -kl_coef * KL at every response token, plus the sequence score on its last token."""
    rewards = -kl_coef * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens; the value after the last token is 0.
    Returns (advantages, returns = advantages + values), both zero on padding."""
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < T else 0)
        adv[:, t] = last
    adv = adv * mask
    return adv, (adv + values) * mask


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
    denom: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict]:
    """PPO clipped surrogate, averaged over tokens (divided by `denom` when given: the global token count
    per process, so distributed gradients equal the single-process ones). Also returns clip fraction and
    the approximate KL between the new and the rollout policy."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    per_token = torch.maximum(unclipped, clipped)
    n = mask.sum().clamp(min=1) if denom is None else denom
    loss = (per_token * mask).sum() / n
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean(0.5 * (logp - old_logp) ** 2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
    denom: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict]:
    """Clipped value loss: 0.5 * max((v - R)^2, (clip(v, v_old +- clip) - R)^2), averaged over tokens."""
    clipped_v = old_values + torch.clamp(values - old_values, -clip, clip)
    per_token = 0.5 * torch.maximum((values - returns) ** 2, (clipped_v - returns) ** 2)
    n = mask.sum().clamp(min=1) if denom is None else denom
    loss = (per_token * mask).sum() / n
    with torch.no_grad():
        stats = {
            "vf_clipfrac": masked_mean(((values - returns) ** 2 < (clipped_v - returns) ** 2).float(), mask)
        }
    return loss, stats


@dataclass
class KLController:
    """Coefficient of the KL penalty. Fixed (`target: null`) or adaptive (Ziegler et al. 2019): after each
    rollout batch, value *= 1 + clip(KL / target - 1, -0.2, 0.2) * n_samples / horizon."""

    value: float
    target: float | None = None
    horizon: int = 10000

    def update(self, current_kl: float, n_samples: int) -> float:
        if self.target is not None:
            error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_samples / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.target, self.horizon = state["value"], state["target"], state["horizon"]
