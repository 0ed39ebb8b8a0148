"""The settings of `rlhf compare` that are the compare domain's own: the checkpoints (each with its own
reference), how answers are sampled (with `n` per prompt), held-out human pairs and the judge. The stage
(`rlhf.stages.compare.CompareStageConfig`) gathers them with the run, data and reward settings."""

from __future__ import annotations

from dataclasses import dataclass, fields

from rlhf.config import bounded, documented
from rlhf.generation import SamplingSettings
from rlhf.models import Precision


@dataclass
class Checkpoint:
    name: str
    model: str
    reference: str | None = documented(
        None,
        help="its own reference for implicit rewards (a checkpoint's name or a model); default: the policy "
        "its run started from (manifest), a LoRA adapter's base (adapter off), else `reference`",
    )


@dataclass
class CompareSampling(SamplingSettings):
    n: int = bounded(
        1,
        ge=1,
        help="answers per prompt and checkpoint; win rates and KL average them, intervals resample prompts",
    )

    def plain(self) -> SamplingSettings:
        """The settings an answer depends on (`n` is how many, not how): the answer cache's key."""
        return SamplingSettings(**{f.name: getattr(self, f.name) for f in fields(SamplingSettings)})


@dataclass
class HumanSettings:
    preferences: str | None = documented(
        None, help="held-out preference pairs (TRL/HH rows, an export or import run)"
    )
    limit: int | None = bounded(None, ge=1)
    max_length: int = bounded(512, ge=1)


@dataclass
class JudgeSettings:
    model: str | None = documented(None, help="a local causal LM; null: no judge")
    batch_size: int = bounded(4, ge=1)
    precision: Precision = documented(
        "auto",
        help="the judge's weights: auto = bfloat16 where the hardware does bf16 natively, else float32 (one "
        "forward per question; P(A) moves by bf16 rounding only)",
    )
    bootstrap: int = bounded(
        300, ge=10, help="resamples of the prompts for the judge's intervals (a GLM each)"
    )
