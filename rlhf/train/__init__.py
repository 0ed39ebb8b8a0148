"""What the training stages share: the frame of a TRL-based stage run (`stage`: TRLStage — trainer keys
checked early, run dir, inputs, the train/resume/drift-restore step, saving and the closing line), the
`trainer:` mapping -> TRL config, precision choice and saving (`args`), trainer callbacks (`callbacks`),
drift guards (`drift`), TRL's online trainers sampling on rlhf's engine (`online`), and reward-model training on preference pairs (`reward_model`). Our own PPO is the
sub-package `rlhf.train.ppo`."""

from rlhf.train.args import (
    build_trl_config,
    check_reserved,
    check_trainer,
    fast_bf16,
    point_tensorboard_at,
    save_trained,
)
from rlhf.train.callbacks import DriftCallback, RunDirCallback, probe_drift
from rlhf.train.drift import (
    DriftGuard,
    DriftSettings,
    best_checkpoint,
    drift_alarms,
    sample_drift,
    sequence_kl,
)
from rlhf.train.online import autocast_generation, engine_sampled, engine_sampling
from rlhf.train.reward_model import (
    reward_tokenizer,
    swap_labels,
    tokenize_pairs,
    train_members,
    train_reward_model,
)
from rlhf.train.stage import (
    Trained,
    TRLStage,
    check_trainer_section,
    describe_precision,
    train,
)

__all__ = [
    "DriftCallback",
    "DriftGuard",
    "DriftSettings",
    "RunDirCallback",
    "TRLStage",
    "Trained",
    "autocast_generation",
    "best_checkpoint",
    "build_trl_config",
    "check_reserved",
    "check_trainer",
    "describe_precision",
    "check_trainer_section",
    "drift_alarms",
    "engine_sampled",
    "engine_sampling",
    "probe_drift",
    "fast_bf16",
    "point_tensorboard_at",
    "reward_tokenizer",
    "sample_drift",
    "save_trained",
    "sequence_kl",
    "swap_labels",
    "tokenize_pairs",
    "train",
    "train_members",
    "train_reward_model",
]
