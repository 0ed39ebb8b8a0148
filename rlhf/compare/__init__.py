"""Checkpoint comparison: measurements (answers, reward-model scores, KL, human agreement), the numbers
(win rates, length control, Bradley-Terry with intervals; pure), the typed result the stage builds and the
report and the loop read, the blind arena, the LLM judge, the answer cache and the report."""

from rlhf.compare import arena, bradley_terry, metrics
from rlhf.compare.answer_cache import GenerationCache
from rlhf.compare.arena import ArenaSettings
from rlhf.compare.judge import judge_all
from rlhf.compare.measure import (
    Answers,
    Lazy,
    collect_answers,
    generation_counts,
    human_agreement,
    kl_on_samples,
    lengths,
    preference_logprobs,
    same_vocabulary,
    summarize,
)
from rlhf.compare.report import flags, terminal_table, write_outputs
from rlhf.compare.result import (
    KL,
    ArenaBattles,
    CheckpointResult,
    CompareResult,
    Generation,
    HumanAgreement,
    JudgeVerdict,
    Leaderboard,
    LengthControlled,
    Lengths,
    MeanCI,
    RateCI,
    Rating,
    RewardSummary,
    VsBaseline,
    WinRates,
    read_result,
)

__all__ = [
    "KL",
    "Answers",
    "ArenaBattles",
    "ArenaSettings",
    "CheckpointResult",
    "CompareResult",
    "Generation",
    "GenerationCache",
    "HumanAgreement",
    "JudgeVerdict",
    "Lazy",
    "Leaderboard",
    "LengthControlled",
    "Lengths",
    "MeanCI",
    "RateCI",
    "Rating",
    "RewardSummary",
    "VsBaseline",
    "WinRates",
    "arena",
    "bradley_terry",
    "collect_answers",
    "flags",
    "generation_counts",
    "human_agreement",
    "judge_all",
    "kl_on_samples",
    "lengths",
    "metrics",
    "preference_logprobs",
    "read_result",
    "same_vocabulary",
    "summarize",
    "terminal_table",
    "write_outputs",
]
