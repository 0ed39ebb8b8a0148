"""rlhf: the whole preference fine-tuning loop — SFT, human labeling, reward models, DPO/PPO, comparison."""

__version__ = "0.1.0"
