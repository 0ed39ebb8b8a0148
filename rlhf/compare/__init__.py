"""Checkpoint comparison: measurements (answers, reward-model scores, KL, human agreement), the numbers
(win rates, length control, Bradley-Terry with intervals; pure), the blind arena, the LLM judge, the answer
cache and the report."""

from rlhf.compare import arena, bradley_terry, metrics
from rlhf.compare.answer_cache import GenerationCache
from rlhf.compare.judge import judge_all
from rlhf.compare.measure import (
    Lazy,
    collect_answers,
    human_agreement,
    kl_on_samples,
    preference_logprobs,
    same_vocabulary,
    summarize,
)
from rlhf.compare.report import flags, terminal_table, write_outputs

__all__ = [
    "GenerationCache",
    "Lazy",
    "arena",
    "bradley_terry",
    "collect_answers",
    "flags",
    "human_agreement",
    "judge_all",
    "kl_on_samples",
    "metrics",
    "preference_logprobs",
    "same_vocabulary",
    "summarize",
    "terminal_table",
    "write_outputs",
]
