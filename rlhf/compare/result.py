"""What `rlhf compare` measures, as typed results: the stage builds a `CompareResult`, the report, the flags
and the loop read it by attribute. On disk (compare.json) it is `CompareResult.to_dict()` — the dataclasses
as nested mappings, fields that were not measured left out — and `read_result` turns the file back into a
`CompareResult`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class MeanCI:
    """A mean with its 95 % bootstrap interval over `n` values."""

    mean: float
    ci95: list[float]
    n: int


@dataclass
class RateCI:
    """A share (1 = yes, 0.5 = half) with its 95 % bootstrap interval over `n` values."""

    rate: float
    ci95: list[float]
    n: int


@dataclass
class KL(MeanCI):
    """KL(checkpoint || reference) on the checkpoint's own samples: nats per response (mean, CI), and
    nats per scored token."""

    per_token: float


@dataclass
class Generation:
    cached: int  # answers taken from the generation cache
    generated: int  # answers generated in this run
    seconds: float


@dataclass
class Lengths:
    tokens: list[int]  # per prompt
    mean_tokens: float
    mean_chars: float
    ended_fraction: float  # answers that reached EOS


@dataclass
class LengthControlled:
    """Raw and length-controlled (AlpacaEval-LC) win rates of a model over the baseline."""

    win_rate: float
    lc_win_rate: float
    length_coef: float


@dataclass
class VsBaseline(LengthControlled):
    win_rate_ci95: list[float]
    lc_win_rate_ci95: list[float]


@dataclass
class WinRates:
    """Row beats column (the diagonal is 0.5), with 95 % bootstrap bounds over prompts."""

    rate: list[list[float]]
    ci95_low: list[list[float]]
    ci95_high: list[list[float]]


@dataclass
class Rating:
    checkpoint: str
    rating: float  # Elo scale
    ci95: list[float]
    p_best: float


@dataclass
class Leaderboard:
    checkpoints: list[Rating]  # best first
    battles: int
    anchor: str  # the checkpoint rated 1000


@dataclass
class HumanAgreement:
    """Share of held-out human pairs a checkpoint orders like the humans."""

    implicit_reward: RateCI | None  # by log(pi / pi_ref) against `reference`; None: another vocabulary
    logprob: RateCI  # by the summed sequence log-prob (favours the shorter answer)
    logprob_per_token: RateCI  # by the mean log-prob per token
    reference: str  # this checkpoint's own reference: a checkpoint's name, or the model
    reference_source: str  # how it was chosen: config, run manifest, LoRA base (adapter off), `reference`
    logprob_vs_reference: MeanCI | None = None  # log-prob agreement minus the reference's, paired per pair


@dataclass
class JudgeVerdict(VsBaseline):
    """The LLM judge against the baseline: raw and length-controlled win rates (the mean probability that
    the checkpoint's answer is the better one, both orders averaged) with CIs over prompts, and the judge's
    own biases."""

    position_bias: float  # share of calls that picked the first answer (0.5: none)
    order_disagreement: float  # share of prompts where the verdict flipped with the order
    per_prompt: list[float]  # P(the checkpoint's answer is better), both orders averaged


@dataclass
class ArenaBattles:
    project: str
    store: str
    battles: int  # added by this run
    serve: str  # the command that serves the arena
    existing: int = 0  # already in the project (a re-run adds only what is new)


@dataclass
class RewardSummary:
    """The reward-model numbers of a comparison (`measure.summarize`)."""

    reward: dict[str, MeanCI]
    vs_baseline: dict[str, VsBaseline]  # every checkpoint but the baseline
    win_rates: WinRates
    bradley_terry: Leaderboard


@dataclass
class CheckpointResult:
    generation: Generation
    length: Lengths
    kl: KL | None = None  # None: a different vocabulary than the reference's
    reward: MeanCI | None = None  # None: no reward model
    vs_baseline: VsBaseline | None = None  # None: the baseline itself, or no reward model


@dataclass
class CompareResult:
    names: list[str]
    baseline: str
    reference: str
    prompts: int
    checkpoints: dict[str, CheckpointResult]
    human_agreement: dict[str, HumanAgreement] = field(default_factory=dict)
    win_rates: WinRates | None = None
    bradley_terry: Leaderboard | None = None
    judge: dict[str, JudgeVerdict] | None = None
    arena: ArenaBattles | None = None
    flags: list[str] = field(default_factory=list)

    def add_rewards(self, summary: RewardSummary) -> None:
        for name, c in self.checkpoints.items():
            c.reward, c.vs_baseline = summary.reward[name], summary.vs_baseline.get(name)
        self.win_rates, self.bradley_terry = summary.win_rates, summary.bradley_terry

    def to_dict(self) -> dict:
        """compare.json's content: nested mappings, without the fields that were not measured (None)."""
        return dataclasses.asdict(self, dict_factory=lambda kv: {k: v for k, v in kv if v is not None})

    @classmethod
    def from_dict(cls, data: dict) -> CompareResult:
        return _build(cls, data)


def read_result(path: str | Path) -> CompareResult:
    """A compare.json back as a `CompareResult`."""
    return CompareResult.from_dict(json.loads(Path(path).read_text()))


def _build(tp: Any, value: Any) -> Any:
    """`value` (parsed JSON) as type `tp`: dataclasses, `X | None`, list[X], dict[str, X], plain values."""
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return _build(inner, value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{k: _build(hints[k], v) for k, v in value.items()})
    if origin is list:
        return [_build(args[0], v) for v in value]
    if origin is dict:
        return {k: _build(args[1], v) for k, v in value.items()}
    return value
