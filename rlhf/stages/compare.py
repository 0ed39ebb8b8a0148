"""Compare stage: which checkpoint to ship — automatic metrics, agreement with held-out human judgements, a
private blind arena, a leaderboard and a report.

    rlhf compare --config configs/compare.yaml [checkpoints=[...] arena.project=arena-1 ...]
    rlhf compare --leaderboard arena-1 [--store labels.db] [--json]

Inputs : N checkpoints ({name, model}: an alias, a model dir, a LoRA adapter dir, a run dir — resolved to its
         declared model — or a hub id), prompts, optionally a reward model (an `rlhf reward` run), held-out
         preference pairs, a local judge LM, and a store for the arena.
Outputs: runs/<name>/report.html (self-contained, plots inline; flags in words at the top), compare.json,
         answers.jsonl (every checkpoint's answer per prompt) — the declared outputs — and a terminal table.

Choices:
- Answers are sampled once per (model content hash, prompt, sampling settings, seed) and cached
  (`$RLHF_CACHE/generations`, or `cache:`): a re-run generates nothing, a new checkpoint only its own
  answers; the manifest counts hits and misses per checkpoint.
- Reward-model metrics: mean score with a bootstrap CI, the pairwise win-rate matrix, Bradley-Terry ratings
  on the Elo scale (every pair of checkpoints on every prompt is a battle) with P(best), and raw and
  length-controlled (AlpacaEval-LC) win rates over the baseline.
- KL to the reference on each checkpoint's own samples; response lengths.
- Judge-free human agreement: on held-out preference pairs, the share each checkpoint orders like your
  assessors by its implicit reward beta * log(pi / pi_ref), and by plain sequence log-prob.
- Optional LLM judge (both orders, position bias reported). The arena writes balanced, side-randomised
  pairwise battles into a labeling project; `--leaderboard` fits Bradley-Terry on the human votes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.compare import (
    Lazy,
    collect_answers,
    flags,
    human_agreement,
    judge_all,
    kl_on_samples,
    preference_logprobs,
    same_vocabulary,
    summarize,
    terminal_table,
    write_outputs,
)
from rlhf.compare import arena as arena_lib
from rlhf.config import ConfigError, bounded, documented
from rlhf.data import source_path
from rlhf.generation import SamplingSettings
from rlhf.models import cache_dir, load_causal_lm, load_tokenizer, model_fingerprint, resolve_model_path
from rlhf.preferences import import_preferences
from rlhf.prompts import PromptSource, load_prompts
from rlhf.reward import RewardSettings, check_reward, load_reward
from rlhf.runs import RunDir, RunSettings
from rlhf.store import Store


@dataclass
class Checkpoint:
    name: str
    model: str


@dataclass
class HumanSettings:
    preferences: str | None = documented(
        None, help="held-out preference pairs (TRL/HH rows, an export or import run)"
    )
    beta: float = bounded(0.1, gt=0)
    limit: int | None = bounded(None, ge=1)
    max_length: int = bounded(512, ge=1)


@dataclass
class JudgeSettings:
    model: str | None = documented(None, help="a local causal LM; null: no judge")
    batch_size: int = bounded(4, ge=1)


@dataclass
class ArenaSettings:
    project: str | None = documented(None, help="a new pairwise project for the blind arena; null: none")
    store: str = "labels.db"
    battles_per_prompt: int = bounded(1, ge=1)
    overlap: int = bounded(1, ge=1)
    guidelines: str = (
        "Pick the better answer to the request. Which model wrote which is hidden until you vote."
    )


def _default_checkpoints() -> list[Checkpoint]:
    return [Checkpoint("base", "smollm2-135m-instruct"), Checkpoint("sft", "runs/sft-demo")]


@dataclass
class CompareStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="compare"))
    checkpoints: list[Checkpoint] = field(default_factory=_default_checkpoints)
    baseline: str | None = documented(None, help="default: the first checkpoint")
    reference: str | None = documented(None, help="for KL and implicit rewards; default: the baseline")
    data: PromptSource = field(default_factory=lambda: PromptSource(limit=50))
    sampling: SamplingSettings = field(
        default_factory=lambda: SamplingSettings(max_new_tokens=64, temperature=0.7, top_p=0.9)
    )
    batch_size: int = bounded(16, ge=1)
    reward: RewardSettings | None = field(default_factory=lambda: RewardSettings(model="runs/reward-demo"))
    human: HumanSettings = field(default_factory=HumanSettings)
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    arena: ArenaSettings = field(default_factory=ArenaSettings)
    bootstrap: int = bounded(1000, ge=10)
    tie_eps: float = bounded(0.0, ge=0)
    kl_threshold: float = bounded(20.0, gt=0, help="nats per response: above it, a flag")
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
    names = list(specs)
    with RunDir.prepare(cfg.run, "compare", cfg, resume=resume, overwrite=overwrite) as run_dir:
        for name, spec in specs.items():
            run_dir.record_input(f"checkpoint[{name}]", spec, resolve_model_path(spec))
        tokenizers = {n: load_tokenizer(s, padding_side="left") for n, s in specs.items()}
        prompts = load_prompts(cfg.data, list(tokenizers.values()), section="data")
        run_dir.record_input("data.prompts", cfg.data.prompts, source_path(cfg.data.prompts))
        run_dir.account("compare", {"prompts": prompts.accounting})
        pairs = _held_out(cfg, tokenizers[cfg.reference], run_dir)
        reference = Lazy(lambda: load_causal_lm(specs[cfg.reference]).eval())  # loaded only when needed
        ref_fp = model_fingerprint(specs[cfg.reference])
        ref_pref = (
            preference_logprobs(reference(), tokenizers[cfg.reference], pairs, batch_size=cfg.batch_size)
            if pairs
            else None
        )
        cache = Path(cfg.cache) if cfg.cache else cache_dir() / "generations"
        answers, result = {}, {"checkpoints": {}, "human_agreement": {}}
        for k, name in enumerate(names):
            tok = tokenizers[name]
            model = (
                reference
                if name == cfg.reference
                else Lazy(lambda name=name: load_causal_lm(specs[name]).eval())
            )
            ans = collect_answers(
                name,
                specs[name],
                tok,
                prompts.prompts,
                prompts.encoded[k],
                cfg.sampling,
                cache_root=cache,
                seed=cfg.run.seed,
                batch_size=cfg.batch_size,
                model=model,
            )
            answers[name] = ans
            entry = {"generation": {"cached": ans.cached, "generated": ans.generated, "seconds": ans.seconds}}
            if same_vocabulary(tok, tokenizers[cfg.reference]):
                entry["kl"] = kl_on_samples(
                    model,
                    reference,
                    ref_fp,
                    tok,
                    prompts.prompts,
                    ans,
                    batch_size=cfg.batch_size,
                    bootstrap=cfg.bootstrap,
                )
                if pairs:
                    pol = preference_logprobs(model(), tok, pairs, batch_size=cfg.batch_size)
                    result["human_agreement"][name] = human_agreement(
                        pol, ref_pref, beta=cfg.human.beta, bootstrap=cfg.bootstrap
                    )
            entry["length"] = {
                "tokens": ans.tokens,
                "mean_tokens": sum(ans.tokens) / len(ans.tokens),
                "mean_chars": sum(map(len, ans.texts)) / len(ans.texts),
                "ended_fraction": sum(ans.ended) / len(ans.ended),
            }
            result["checkpoints"][name] = entry
            if model is not reference:
                model.release()
        chars = {n: [len(t) for t in answers[n].texts] for n in names}
        if cfg.reward:
            run_dir.record_input(
                "reward.model" if cfg.reward.model else "reward.function", cfg.reward.source, rm_path
            )
            reward = load_reward(cfg.reward)
            scores = {
                n: reward(prompts.prompts, answers[n].texts, where=f"scoring {n}", ids=prompts.ids)
                for n in names
            }
            summary = summarize(
                names,
                scores,
                chars,
                cfg.baseline,
                bootstrap=cfg.bootstrap,
                tie_eps=cfg.tie_eps,
                seed=cfg.run.seed,
            )
            for n in names:
                result["checkpoints"][n].update(summary["per_checkpoint"][n])
            result.update(win_rates=summary["win_rates"], bradley_terry=summary["bradley_terry"])
        if cfg.judge.model:
            texts = {n: a.texts for n, a in answers.items()}
            result["judge"] = judge_all(
                cfg.judge.model, texts, cfg.baseline, prompts.prompts, batch_size=cfg.judge.batch_size
            )
        if cfg.arena.project:
            result["arena"] = _open_arena(cfg, names, prompts, answers)
        result.update(prompts=len(prompts), baseline=cfg.baseline, reference=cfg.reference, names=names)
        result["flags"] = flags(result, kl_threshold=cfg.kl_threshold)
        outputs = write_outputs(
            run_dir.path, result, prompts.ids, prompts.prompts, {n: a.texts for n, a in answers.items()}
        )
        run_dir.finish(result={n: result["checkpoints"][n]["generation"] for n in names}, outputs=outputs)
        print(terminal_table(result), flush=True)
        for f in result["flags"]:
            run_dir.say(f"flag: {f}")
        run_dir.say(
            f"compare: {len(names)} checkpoints on {len(prompts)} prompts -> report {outputs['report']}"
        )
        return run_dir


def _held_out(cfg: CompareStageConfig, tokenizer, run_dir: RunDir) -> list[dict]:
    if not cfg.human.preferences:
        return []
    rows, acct = import_preferences(
        cfg.human.preferences, what="human.preferences", max_length=cfg.human.max_length, tokenizer=tokenizer
    )
    run_dir.record_input("human.preferences", cfg.human.preferences, source_path(cfg.human.preferences))
    run_dir.account("compare", {"human.preferences": acct.summary()})
    return rows[: cfg.human.limit] if cfg.human.limit else rows


def _open_arena(cfg: CompareStageConfig, names: list[str], prompts, answers: dict) -> dict:
    a = cfg.arena
    items = arena_lib.battle_items(
        names,
        prompts.prompts,
        prompts.ids,
        {n: answers[n].texts for n in names},
        per_prompt=a.battles_per_prompt,
        seed=cfg.run.seed,
    )
    with Store(a.store) as store:
        store.create_project(
            a.project, "pairwise", overlap=a.overlap, guidelines=a.guidelines, rationale="optional"
        )
        added = store.add_items(a.project, items, seed=cfg.run.seed)
    return {
        "project": a.project,
        "store": a.store,
        "battles": added,
        "serve": f"rlhf label store={a.store} project={a.project} arena=true",
    }


def leaderboard_command(args) -> int:
    """`rlhf compare --leaderboard NAME`: Bradley-Terry on the arena's human votes."""
    with Store(args.store, create=False) as store:
        store.project(args.leaderboard)
        board = arena_lib.leaderboard(store.items(args.leaderboard), store.annotations(args.leaderboard))
    print(json.dumps(board, indent=2) if args.json else arena_lib.table(board))
    return 0
