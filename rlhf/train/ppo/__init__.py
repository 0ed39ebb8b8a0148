"""Our own PPO (TRL >= 1.13 has none): pure losses (`losses`, hand-tested), the actor-critic (policy +
value head), and the trainer (rollout -> score -> advantages -> optimise) on accelerate/DeepSpeed."""

from rlhf.train.ppo import losses
from rlhf.train.ppo.actor_critic import ActorCritic, ValueSettings, build_actor_critic
from rlhf.train.ppo.trainer import PPOSettings, PPOTrainer, make_accelerator, prompt_indices

__all__ = [
    "ActorCritic",
    "PPOSettings",
    "PPOTrainer",
    "ValueSettings",
    "build_actor_critic",
    "losses",
    "make_accelerator",
    "prompt_indices",
]
