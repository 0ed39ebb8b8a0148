"""Rewards: the reward-model scorer (text in, scalar out), one loader for a reward model or a `module:fn`
function, and the reward model's QA metrics and report (pure)."""

from rlhf.reward import metrics
from rlhf.reward.metrics import accuracy, accuracy_ci, ensemble_accuracy, pair_correct
from rlhf.reward.report import build_report, write_html
from rlhf.reward.scorer import (
    META_FILE,
    RewardScorer,
    encode_pair,
    format_pair,
    read_reward_meta,
    response_fits,
)
from rlhf.reward.sources import Reward, RewardSettings, check_reward, load_reward

__all__ = [
    "META_FILE",
    "Reward",
    "RewardScorer",
    "RewardSettings",
    "accuracy",
    "accuracy_ci",
    "build_report",
    "check_reward",
    "encode_pair",
    "ensemble_accuracy",
    "format_pair",
    "load_reward",
    "metrics",
    "pair_correct",
    "read_reward_meta",
    "response_fits",
    "write_html",
]
