"""The loop's config (`configs/loop.yaml`). Each `stages.<stage>` mapping takes the same keys as that
stage's own YAML and is laid over its defaults; the loop then sets the keys that chain the stages (run
names, models, data, store and project) itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config import ConfigError, bounded, documented
from rlhf.engine import EngineSettings
from rlhf.loop.selection import Selection
from rlhf.loop.simulate import SimulatedAssessor
from rlhf.reward import RewardSettings
from rlhf.runs import RunSettings


@dataclass
class AssessorSettings:
    source: Literal["simulated", "human"] = "simulated"
    # simulated: assessors whose taste is a reward model run (reward.model) or a function (reward.function),
    # each with their own temperature (how noisy), length bias and share of careless votes
    reward: RewardSettings = field(
        default_factory=lambda: RewardSettings(
            model=None, function="rlhf.loop.simulate:demo_preference", normalize=False
        )
    )
    simulated: list[SimulatedAssessor] = documented(
        default_factory=lambda: [
            # on the demo's taste these three agree on ~71 % of candidate pairs (people: ~65-75 % on HH-RLHF)
            # and side with the taste on ~79 %
            SimulatedAssessor(temperature=0.2, length_bias=0.3, careless=0.05),
            SimulatedAssessor(temperature=0.3, length_bias=-0.3, careless=0.05),
            SimulatedAssessor(temperature=0.4, length_bias=0.0, careless=0.1),
        ],
        help="one entry per simulated assessor: {temperature, length_bias, careless, name}",
    )
    agreement_band: list[float] = bounded(
        default_factory=lambda: [0.6, 0.85],
        ge=0,
        le=1,
        help="the share of candidate pairs two assessors order alike that people reach (~0.65-0.75 on HH-RLHF); "
        "outside it, a warning",
    )
    # human: the round goes on once this share of its items is complete, or `deadline_h` hours after
    # the project opened with whatever is complete by then
    min_complete: float = bounded(1.0, gt=0, le=1)
    deadline_h: float | None = bounded(None, gt=0)

    def __post_init__(self):
        if self.source == "simulated" and not self.simulated:
            raise ConfigError(
                "'assessors.simulated' needs one entry per simulated assessor, e.g. [{temperature: 0.5}]."
            )
        if len(self.agreement_band) != 2 or self.agreement_band[0] > self.agreement_band[1]:
            raise ConfigError(f"'assessors.agreement_band' is [low, high], got {self.agreement_band}.")


@dataclass
class LabelSettings:
    """How each round's labels are used (rlhf.loop.labels)."""

    holdout_share: float = bounded(
        0.2,
        ge=0,
        lt=1,
        help="share of every round's labeled items held out of all training: the human slice that judges "
        "promotion (it grows each round)",
    )
    accumulate: bool = documented(
        True, help="the reward model trains on every round's pairs so far; false: this round's only"
    )
    dpo_replay: float = bounded(
        0.5,
        ge=0,
        help="earlier rounds' pairs added to DPO's, as a share of this round's (they are about earlier "
        "policies' answers; 0: none)",
    )
    rm_warm_start: bool = documented(False, help="start each round's reward model from the previous one")


@dataclass
class LoopStages:
    sft: dict | None = documented(default_factory=dict, help="null: no SFT round, start from `policy` itself")
    generate: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)
    reward: dict = field(default_factory=dict)
    dpo: dict = field(default_factory=dict)
    ppo: dict = field(default_factory=dict)
    kto: dict = field(default_factory=dict)
    compare: dict = field(default_factory=dict)


@dataclass
class LoopConfig:
    run: RunSettings = documented(
        default_factory=lambda: RunSettings(name="loop"), help="-> runs/<name>/r1-dpo ..."
    )
    policy: str = documented("smollm2-135m-instruct", help="round 0 (SFT) starts here")
    algorithm: Literal["dpo", "ppo", "kto"] = documented(
        "dpo",
        help="dpo | ppo: ranked answers; kto: binary judgements (good / bad on each answer; no reward model)",
    )
    rounds: int = bounded(1, ge=1)
    prompts: str = documented("demo:prompts", help="the pool of prompts the rounds draw from")
    eval_prompts: int = bounded(
        64, ge=1, help="held out of the pool (seeded): every round's comparison (64+ for a verdict)"
    )
    prompts_per_round: int = bounded(16, ge=1, help="items that go to the assessors each round")
    pool_factor: int = bounded(2, ge=1, help="rounds after the first sample this x more, then select")
    selection: Selection = documented("disagreement", help="disagreement | uncertainty | random")
    store: str | None = documented(None, help="default: runs/<name>/labels.db")
    assessors: AssessorSettings = field(default_factory=AssessorSettings)
    labels: LabelSettings = field(default_factory=LabelSettings)
    promote_on: Literal["human", "reward_model", "arena"] = documented(
        "human",
        help="human: agreement with the held-out human slice (implicit reward, each policy against its own "
        "reference); reward_model: the win rate by a reward model trained on every label but the slice; "
        "arena: the new policy's share of the blind arena's votes against the best (needs arena: true; "
        "simulated assessors vote there too, people are waited for like a round's labels)",
    )
    promote_above: float = bounded(
        0.5,
        ge=0,
        le=1,
        help="the new policy becomes the best when the lower bound of its 95 % interval clears this (and "
        "its estimate is at least the best's)",
    )
    arena: bool = documented(
        False, help="also open a blind arena project (start, best and new on the held-out prompts) each round"
    )
    generation: EngineSettings = documented(
        default_factory=EngineSettings,
        help="the engine of every step that samples: generate, compare, PPO rollouts, DPO/KTO drift probes "
        "(over the stage's own generation / drift.generation): with vllm, one engine serves the whole loop "
        "while the policies are LoRA adapters on one base or fine-tunes of its architecture "
        "(docs/generation.md)",
    )
    stages: LoopStages = field(default_factory=LoopStages)

    def __post_init__(self):
        if self.algorithm == "kto" and self.promote_on == "reward_model":
            raise ConfigError(
                "algorithm: kto trains no reward model (its labels are good / bad, not pairs), so promote_on "
                "must be human (the held-out binary judgements, paired within a prompt)."
            )
        if self.promote_on == "arena" and not self.arena:
            raise ConfigError(
                "promote_on: arena judges each round by the blind arena's votes, but arena is false. Set "
                "arena: true (or promote_on: human)."
            )
