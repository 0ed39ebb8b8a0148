"""The loop's config (`configs/loop.yaml`). Each `stages.<stage>` mapping takes the same keys as that
stage's own YAML and is laid over its defaults; the loop then sets the keys that chain the stages (run
names, models, data, store and project) itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config import ConfigError, bounded, documented
from rlhf.loop.selection import Selection
from rlhf.reward import RewardSettings
from rlhf.runs import RunSettings


@dataclass
class AssessorSettings:
    source: Literal["simulated", "human"] = "simulated"
    # simulated: one assessor per noise level (in standard deviations of an item's candidate scores),
    # backed by a reward model run (reward.model) or a function (reward.function)
    reward: RewardSettings = field(
        default_factory=lambda: RewardSettings(
            model=None, function="rlhf.loop.simulate:demo_preference", normalize=False
        )
    )
    noise: list[float] = bounded(default_factory=lambda: [0.2, 0.5, 1.0], ge=0)
    # human: the round goes on once this share of its items is complete, or `deadline_h` hours after
    # the project opened with whatever is complete by then
    min_complete: float = bounded(1.0, gt=0, le=1)
    deadline_h: float | None = bounded(None, gt=0)

    def __post_init__(self):
        if self.source == "simulated" and not self.noise:
            raise ConfigError("'assessors.noise' needs one entry per simulated assessor, e.g. [0.2, 0.5].")


@dataclass
class LoopStages:
    sft: dict | None = documented(default_factory=dict, help="null: no SFT round, start from `policy` itself")
    generate: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)
    reward: dict = field(default_factory=dict)
    dpo: dict = field(default_factory=dict)
    ppo: dict = field(default_factory=dict)
    compare: dict = field(default_factory=dict)


@dataclass
class LoopConfig:
    run: RunSettings = documented(
        default_factory=lambda: RunSettings(name="loop"), help="-> runs/<name>/r1-dpo ..."
    )
    policy: str = documented("smollm2-135m-instruct", help="round 0 (SFT) starts here")
    algorithm: Literal["dpo", "ppo"] = "dpo"
    rounds: int = bounded(1, ge=1)
    prompts: str = documented("demo:prompts", help="the pool of prompts the rounds draw from")
    eval_prompts: int = bounded(16, ge=1, help="held out of the pool (seeded): every round's comparison")
    prompts_per_round: int = bounded(16, ge=1, help="items that go to the assessors each round")
    pool_factor: int = bounded(2, ge=1, help="rounds after the first sample this x more, then select")
    selection: Selection = documented("disagreement", help="disagreement | uncertainty | random")
    store: str | None = documented(None, help="default: runs/<name>/labels.db")
    assessors: AssessorSettings = field(default_factory=AssessorSettings)
    promote_above: float = bounded(
        0.5, ge=0, le=1, help="RM win rate over the best so far to become the best"
    )
    arena: bool = documented(
        False, help="also open a blind arena project (best vs new) for people, each round"
    )
    stages: LoopStages = field(default_factory=LoopStages)
