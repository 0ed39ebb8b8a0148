"""The actor-critic that PPO trains: the policy (a causal LM, LoRA or full) and a value head.

`value.mode: shared` puts the value head on the policy's own network — one forward gives the response
log-probs and the last hidden states the head reads (with LoRA they share the base and the adapter);
`separate` gives the critic its own backbone (a copy of `value.model`, default the policy's init, with its
own LoRA when the policy has one). Values are read at the positions that predict each response token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from accelerate.utils import set_seed
from peft import get_peft_model
from torch import nn
from transformers import AutoModel

from rlhf.config import documented
from rlhf.generation import Rollout, forward_responses, position_ids
from rlhf.models import ModelConfig, adapter_base, load_causal_lm, lora_config, resolve_model_path


@dataclass
class ValueSettings:
    mode: Literal["shared", "separate"] = "shared"
    model: str | None = documented(None, help="separate: the critic's init (default: the policy's)")


class ActorCritic(nn.Module):
    def __init__(self, policy, critic=None, *, head_dtype: torch.dtype | None = None):
        super().__init__()
        self.policy, self.critic = policy, critic
        hidden = policy.config.hidden_size if critic is None else critic.config.hidden_size
        self.value_head = nn.Linear(hidden, 1, dtype=head_dtype or policy.dtype)
        nn.init.normal_(self.value_head.weight, std=1.0 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.value_head.bias)

    def forward(self, rollout: Rollout, temperature: float):
        """(per-token log-probs of the responses B x R, values B x R)."""
        logp, states = forward_responses(
            self.policy, rollout, temperature=temperature, hidden=self.critic is None
        )
        if self.critic is not None:
            mask = rollout.attention_mask.to(logp.device)
            out = self.critic(
                input_ids=rollout.input_ids.to(logp.device),
                attention_mask=mask,
                position_ids=position_ids(mask),
            )
            states = out.last_hidden_state[:, rollout.prompt_width - 1 : -1]
        return logp, self.value_head(states.to(self.value_head.weight.dtype)).squeeze(-1).float()


def is_value_param(name: str) -> bool:
    return name.startswith(("value_head.", "critic.", "module.value_head.", "module.critic."))


def build_actor_critic(
    model: ModelConfig,
    value: ValueSettings,
    *,
    seed: int,
    gradient_checkpointing: bool = False,
    bf16_base: bool = False,
) -> ActorCritic:
    """The policy (and a separate critic) from `model`; `bf16_base`: LoRA under bf16 mixed precision, the
    frozen bases held in bf16 (what autocast casts them to anyway) while the adapters (peft keeps them fp32
    on a bf16 base), the value head and their optimizer state stay fp32."""
    set_seed(seed)  # LoRA and value-head initialisation, then the rollouts: reproducible
    policy = load_causal_lm(model.name, "bfloat16" if bf16_base else model.dtype, trainable_adapter=True)
    if model.lora and not hasattr(policy, "peft_config"):
        policy = get_peft_model(policy, lora_config(model.lora))
    critic = None
    if value.mode == "separate":
        base = value.model or adapter_base(resolve_model_path(model.name)) or model.name
        critic = AutoModel.from_pretrained(resolve_model_path(base), dtype=policy.dtype)
        if model.lora:
            critic = get_peft_model(critic, lora_config(model.lora, "FEATURE_EXTRACTION"))
    if gradient_checkpointing:
        for m in (policy, critic):
            if m is not None:
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                if hasattr(m, "enable_input_require_grads"):
                    m.enable_input_require_grads()
    return ActorCritic(policy, critic, head_dtype=torch.float32 if bf16_base else None)
