"""Compare stage: which checkpoint to ship — automatic metrics, agreement with held-out human judgements, a
private blind arena, a leaderboard and a report.

    rlhf compare --config configs/compare.yaml [checkpoints=[...] arena.project=arena-1 ...]
    rlhf compare --leaderboard arena-1 [--store labels.db] [--json]

Inputs : N checkpoints ({name, model}: an alias, a model dir, a LoRA adapter dir, a run dir — resolved to its
         declared model — or a hub id), prompts, optionally a reward model (an `rlhf reward` run), held-out
         preference pairs, a local judge LM, and a store for the arena.
Outputs: runs/<name>/report.html (self-contained, plots inline; flags in words at the top), compare.json
         (the typed `rlhf.compare.CompareResult`; `read_result` reads it back), answers.jsonl (every
         checkpoint's answer per prompt) — the declared outputs — and a terminal table.

Choices:
- Answers are sampled once per (model content hash, prompt, sampling settings, seed) and cached
  (`$RLHF_CACHE/generations`, or `cache:`): a re-run generates nothing, a new checkpoint only its own
  answers; the manifest counts hits and misses per checkpoint.
- Reward-model metrics: mean score, the pairwise win-rate matrix, Bradley-Terry ratings on the Elo scale
  (every pair of checkpoints on every prompt is a battle) with P(best), and raw and length-controlled win
  rates over the baseline (AlpacaEval 2's GLM: checkpoint, prompt-difficulty and length terms). Every
  interval is a bootstrap over prompts — the battles of one prompt are correlated, so prompts are the unit.
- KL to the reference on each checkpoint's own samples; response lengths.
- Judge-free human agreement: on held-out preference pairs, the share each checkpoint orders like your
  assessors by its implicit reward log(pi / pi_ref) against its *own* reference (the policy its run
  started from, a LoRA adapter's base with the adapter off, a configured one, else `reference`; DPO's beta
  cannot change an ordering, so there is none), by its summed log-prob and by its log-prob per token.
- Optional LLM judge (both orders, position bias reported; win and LC win rates from its probabilities).
  The arena writes balanced, side-randomised pairwise battles into a labeling project — reused on a
  re-run, which adds only new battles; `--leaderboard` fits Bradley-Terry on the human votes.
- Flags (reward hacking only when the intervals say so) with thresholds named in `flags:`; the report
  shows answers side by side where the checkpoints differ most, where the reward model and the judge
  disagree, and at random.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlhf.clean import training_overlap
from rlhf.compare import (
    Answers,
    ArenaSettings,
    Checkpoint,
    CompareResult,
    CompareSampling,
    FlagSettings,
    HumanSettings,
    JudgeSettings,
    RewardSummary,
    agreement_with_humans,
    flags,
    judge_all,
    measure_checkpoints,
    summarize,
    terminal_table,
    write_outputs,
)
from rlhf.compare import arena as arena_lib
from rlhf.config import ConfigError, bounded, documented
from rlhf.data import source_path
from rlhf.engine import EngineSettings
from rlhf.models import cache_dir, load_tokenizer, record_model
from rlhf.preferences import import_preferences
from rlhf.prompts import PromptSource, load_prompts
from rlhf.reward import RewardSettings, check_reward, load_reward
from rlhf.runs import RunDir, RunSettings
from rlhf.store import Store


def _default_checkpoints() -> list[Checkpoint]:
    return [Checkpoint("base", "smollm2-135m-instruct"), Checkpoint("sft", "runs/sft-demo")]


@dataclass
class CompareStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="compare"))
    checkpoints: list[Checkpoint] = field(default_factory=_default_checkpoints)
    baseline: str | None = documented(None, help="default: the first checkpoint")
    reference: str | None = documented(
        None,
        help="for KL, and implicit rewards of a checkpoint with no reference of its own; default: the baseline",
    )
    data: PromptSource = field(default_factory=lambda: PromptSource(limit=50))
    sampling: CompareSampling = field(
        default_factory=lambda: CompareSampling(max_new_tokens=64, temperature=0.7, top_p=0.9)
    )
    generation: EngineSettings = field(default_factory=EngineSettings)
    batch_size: int = bounded(16, ge=1, help="sequences per forward pass when scoring (KL, human pairs)")
    sample_batch_size: int = bounded(
        64,
        ge=1,
        help="at most this many prompts per sampling batch (answers do not depend on it)",
        operational=True,
    )
    max_batch_tokens: int | None = bounded(
        16384,
        ge=1,
        help="at most this many tokens per sampling batch in the KV cache: rows x (longest prompt + "
        "max_new_tokens); null = sample_batch_size alone",
        operational=True,
    )
    reward: RewardSettings | None = field(default_factory=lambda: RewardSettings(model="runs/reward-demo"))
    human: HumanSettings = field(default_factory=HumanSettings)
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    arena: ArenaSettings = field(default_factory=ArenaSettings)
    bootstrap: int = bounded(1000, ge=10)
    tie_eps: float = bounded(0.0, ge=0)
    flags: FlagSettings = field(default_factory=FlagSettings)
    examples: int = bounded(3, ge=0, help="prompts per kind in the report's side-by-side answers")
    cache: str | None = documented(None, help="generation cache dir; default $RLHF_CACHE/generations")

    def __post_init__(self):
        names = [c.name for c in self.checkpoints]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ConfigError(f"'checkpoints' needs at least two, with distinct names; got {names}.")
        self.baseline = self.baseline or names[0]
        self.reference = self.reference or self.baseline
        for key in ("baseline", "reference"):
            if getattr(self, key) not in names:
                raise ConfigError(
                    f"'{key}' must name one of the checkpoints ({', '.join(names)}); got {getattr(self, key)!r}."
                )


def run(cfg: CompareStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    rm_path = check_reward(cfg.reward) if cfg.reward else None  # config errors before anything is written
    specs = {c.name: c.model for c in cfg.checkpoints}
    with RunDir.prepare(cfg.run, "compare", cfg, resume=resume, overwrite=overwrite) as run_dir:
        for name, spec in specs.items():
            record_model(run_dir, f"checkpoint[{name}]", spec)
        tokenizers = {n: load_tokenizer(s, padding_side="left") for n, s in specs.items()}
        prompts = load_prompts(cfg.data, list(tokenizers.values()), section="data")
        run_dir.record_input("data.prompts", cfg.data.prompts, source_path(cfg.data.prompts))
        run_dir.account("compare", {"prompts": prompts.accounting})
        pairs = _held_out(cfg, tokenizers[cfg.reference], run_dir)
        answers, result = measure_checkpoints(
            specs,
            tokenizers,
            prompts,
            baseline=cfg.baseline,
            reference=cfg.reference,
            sampling=cfg.sampling,
            generation=cfg.generation,
            cache=Path(cfg.cache) if cfg.cache else cache_dir() / "generations",
            seed=cfg.run.seed,
            batch_size=cfg.batch_size,
            sample_batch_size=cfg.sample_batch_size,
            max_batch_tokens=cfg.max_batch_tokens,
            bootstrap=cfg.bootstrap,
            log_dir=run_dir.path,
        )
        if pairs:  # each checkpoint's agreement with the held-out human pairs, against its own reference
            result.human_agreement = agreement_with_humans(
                [(c.name, c.model, c.reference) for c in cfg.checkpoints],
                tokenizers,
                pairs,
                default_reference=cfg.reference,
                batch_size=cfg.batch_size,
                bootstrap=cfg.bootstrap,
                seed=cfg.run.seed,
            )
        shown_rewards = None
        if cfg.reward:
            summary, scores = _score(cfg, rm_path, run_dir, prompts, answers)
            result.add_rewards(summary)
            shown_rewards = {n: _first(scores[n], answers[n]) for n in scores}
        if cfg.judge.model:
            result.judge = judge_all(
                cfg.judge.model,
                _texts(answers),
                cfg.baseline,
                prompts.prompts,
                batch_size=cfg.judge.batch_size,
                bootstrap=cfg.judge.bootstrap,
                seed=cfg.run.seed,
                precision=cfg.judge.precision,
            )
        if cfg.arena.project:
            result.arena = arena_lib.open_arena(
                cfg.arena, prompts.prompts, prompts.ids, _texts(answers), seed=cfg.run.seed
            )
        result.flags = flags(result, cfg.flags) + training_overlap(specs, prompts.prompts)
        _report(cfg, run_dir, result, prompts, answers, shown_rewards)
        return run_dir


def _score(
    cfg: CompareStageConfig, rm_path, run_dir: RunDir, prompts, answers: dict[str, Answers]
) -> tuple[RewardSummary, dict[str, list[float]]]:
    """Every answer scored by the reward model, and the numbers from the scores (intervals over prompts)."""
    run_dir.record_input(
        "reward.model" if cfg.reward.model else "reward.function", cfg.reward.source, rm_path
    )
    reward = load_reward(cfg.reward)
    names = list(answers)
    scores = {
        n: reward(
            [prompts.prompts[i] for i in answers[n].prompt_index],
            answers[n].texts,
            where=f"scoring {n}",
            ids=[prompts.ids[i] for i in answers[n].prompt_index],
        )
        for n in names
    }
    chars = {n: [len(t) for t in answers[n].texts] for n in names}
    summary = summarize(
        names,
        scores,
        chars,
        cfg.baseline,
        groups={n: answers[n].prompt_index for n in names},
        bootstrap=cfg.bootstrap,
        tie_eps=cfg.tie_eps,
        seed=cfg.run.seed,
    )
    return summary, scores


def _report(
    cfg: CompareStageConfig,
    run_dir: RunDir,
    result: CompareResult,
    prompts,
    answers: dict[str, Answers],
    rewards: dict[str, list[float]] | None,
) -> None:
    outputs = write_outputs(
        run_dir.path,
        result,
        prompts.ids,
        prompts.prompts,
        _texts(answers),
        rewards=rewards,
        examples=cfg.examples,
        seed=cfg.run.seed,
    )
    run_dir.finish(result={n: asdict(c.generation) for n, c in result.checkpoints.items()}, outputs=outputs)
    print(terminal_table(result), flush=True)
    for f in result.flags:
        run_dir.say(f"flag: {f}")
    run_dir.say(
        f"compare: {len(result.names)} checkpoints on {result.prompts} prompts -> report {outputs['report']}"
    )


def _texts(answers: dict[str, Answers]) -> dict[str, list[str]]:
    """Sample 0 of each prompt per checkpoint: what the judge, the arena and the side-by-side view use."""
    return {n: a.first() for n, a in answers.items()}


def _first(values: list, ans: Answers) -> list:
    """The values of sample 0 of each prompt (parallel to `Answers.first()`)."""
    return [v for v, j in zip(values, ans.sample, strict=True) if j == 0]


def _held_out(cfg: CompareStageConfig, tokenizer, run_dir: RunDir) -> list[dict]:
    if not cfg.human.preferences:
        return []
    rows, acct = import_preferences(
        cfg.human.preferences, what="human.preferences", max_length=cfg.human.max_length, tokenizer=tokenizer
    )
    run_dir.record_input("human.preferences", cfg.human.preferences, source_path(cfg.human.preferences))
    run_dir.account("compare", {"human.preferences": acct.summary()})
    return rows[: cfg.human.limit] if cfg.human.limit else rows


def leaderboard_command(args) -> int:
    """`rlhf compare --leaderboard NAME`: Bradley-Terry on the arena's human votes."""
    with Store(args.store, create=False) as store:
        store.project(args.leaderboard)
        board = arena_lib.leaderboard(store.items(args.leaderboard), store.annotations(args.leaderboard))
    print(json.dumps(board, indent=2) if args.json else arena_lib.table(board))
    return 0
