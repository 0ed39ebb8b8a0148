"""What the training stages share: the `trainer:` mapping -> TRL config, precision choice and saving
(`args`), trainer callbacks and the train/resume/drift-restore step (`callbacks`), and drift guards
(`drift`). Our own PPO is the sub-package `rlhf.train.ppo`."""

from rlhf.train.args import (
    build_trl_config,
    check_reserved,
    check_trainer,
    fast_bf16,
    point_tensorboard_at,
    save_trained,
)
from rlhf.train.callbacks import DriftCallback, RunDirCallback, train
from rlhf.train.drift import (
    DriftGuard,
    DriftSettings,
    best_checkpoint,
    drift_alarms,
    sample_drift,
    sequence_kl,
)

__all__ = [
    "DriftCallback",
    "DriftGuard",
    "DriftSettings",
    "RunDirCallback",
    "best_checkpoint",
    "build_trl_config",
    "check_reserved",
    "check_trainer",
    "drift_alarms",
    "fast_bf16",
    "point_tensorboard_at",
    "sample_drift",
    "save_trained",
    "sequence_kl",
    "train",
]
