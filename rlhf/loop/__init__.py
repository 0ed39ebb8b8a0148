"""The loop: rounds of generate -> select -> collect -> export -> reward -> policy -> compare, the only
layer that calls the stages (through their `run(cfg)` entry points, chained by declared outputs); with
its pure helpers: active selection, simulated assessors, lineage from manifests, the closing table."""

from rlhf.loop.collect import Waiting
from rlhf.loop.config import LoopConfig
from rlhf.loop.lineage import lineage_text
from rlhf.loop.rounds import Loop
from rlhf.loop.selection import disagreement, item_margins, regroup, select, uncertainty
from rlhf.loop.simulate import SimulatedAssessor, demo_preference, progress, vote
from rlhf.loop.steps import StepRecord, run_step
from rlhf.loop.summary import table

__all__ = [
    "Loop",
    "LoopConfig",
    "SimulatedAssessor",
    "StepRecord",
    "Waiting",
    "demo_preference",
    "disagreement",
    "item_margins",
    "lineage_text",
    "progress",
    "regroup",
    "run_step",
    "select",
    "table",
    "uncertainty",
    "vote",
]
