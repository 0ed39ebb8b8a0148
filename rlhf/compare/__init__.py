"""Checkpoint comparison: measurements (answers, reward-model scores, KL, human agreement), the numbers
(win rates, length control, Bradley-Terry with intervals; pure), the typed result the stage builds and the
report and the loop read, the blind arena, the LLM judge, the answer cache and the report."""

from rlhf.compare import arena, bradley_terry, metrics
from rlhf.compare.agreement import Reference, agreement_with_humans, own_reference, started_from
from rlhf.compare.answer_cache import GenerationCache
from rlhf.compare.answers import (
    Answers,
    Lazy,
    collect_answers,
    generation_counts,
    kl_on_samples,
    lengths,
    same_vocabulary,
)
from rlhf.compare.arena import ArenaSettings
from rlhf.compare.checkpoints import measure_checkpoints
from rlhf.compare.judge import judge_all
from rlhf.compare.measure import (
    PairLogprobs,
    adapter_off_logprobs,
    human_agreement,
    preference_logprobs,
    summarize,
)
from rlhf.compare.report import FlagSettings, flags, terminal_table, write_outputs
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
from rlhf.compare.settings import Checkpoint, CompareSampling, HumanSettings, JudgeSettings

__all__ = [
    "Checkpoint",
    "CompareSampling",
    "HumanSettings",
    "JudgeSettings",
    "KL",
    "Answers",
    "ArenaBattles",
    "ArenaSettings",
    "CheckpointResult",
    "CompareResult",
    "FlagSettings",
    "Generation",
    "GenerationCache",
    "HumanAgreement",
    "JudgeVerdict",
    "Lazy",
    "Leaderboard",
    "LengthControlled",
    "Lengths",
    "MeanCI",
    "PairLogprobs",
    "RateCI",
    "Rating",
    "Reference",
    "RewardSummary",
    "VsBaseline",
    "WinRates",
    "adapter_off_logprobs",
    "agreement_with_humans",
    "arena",
    "bradley_terry",
    "collect_answers",
    "flags",
    "generation_counts",
    "human_agreement",
    "judge_all",
    "kl_on_samples",
    "lengths",
    "measure_checkpoints",
    "metrics",
    "own_reference",
    "preference_logprobs",
    "read_result",
    "same_vocabulary",
    "started_from",
    "summarize",
    "terminal_table",
    "write_outputs",
]
