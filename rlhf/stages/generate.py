"""Generate stage: K candidate responses per prompt, from one or more policies, into a labeling project.

    rlhf generate --config configs/generate.yaml [policies=[runs/sft-demo/model,smollm2-135m-instruct] k=2 ...]

Inputs : prompts (`prompt` column: a string or a message list ending with a user turn; optional `id`),
         policies (alias | directory | LoRA adapter dir | hub id).
Outputs: items in the store's project (created if absent), each with its K candidates and their
         provenance (policy, run, sampling params, seed, whether the response ended with EOS);
         runs/<name>/ with the manifest (prompt accounting, tokens/s) and candidates.jsonl.

Choices:
- Candidate j of a prompt comes from policy j mod P, so two policies and K=2 give a head-to-head
  comparison per prompt; the labeling app hides the provenance and shuffles the order per assessor.
- A binary project (thumbs up / down on one answer, for KTO) takes K=1: one answer per item.
- Batched generation (`rlhf.generation`): prompts sorted by length and cut into batches of at most
  `batch_size` prompts and `max_batch_tokens` cached tokens, each prompt prefilled once for its samples, KV
  cache; one seed per policy (run.seed + index), recorded. Measured on a 2-core AVX512-BF16 CPU
  (SmolLM2-135M, 64 prompts x 2, 64 new tokens): batches by tokens (64 prompts, 16,384 tokens) ran 1.45x
  the tokens/s of 8-prompt batches; past ~128 rows a batch gets slower again (attention and cache copies).
- Precision: policies are loaded in `sampling.precision` (auto: bf16 where the hardware does bf16 natively,
  else fp32); the run says which and why, and records it with the candidates' provenance.
- Backend (`generation.backend`, `rlhf.engine`): hf samples in this process with rlhf's decoder; vllm asks
  a vLLM engine (`generation.url`, or one the step starts on the policies' base and stops after), LoRA
  policies as run-time adapters; each prompt's request is seeded by (policy seed, prompt id).
- All items of a run are written in one transaction: a failed run leaves the project untouched.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rlhf.config import ConfigError, bounded, documented
from rlhf.data import source_path
from rlhf.engine import EngineSettings, engines
from rlhf.generation import SamplingSettings, row_seed
from rlhf.models import load_causal_lm, load_tokenizer, record_model, say_precision
from rlhf.prompts import PromptSource, load_prompts
from rlhf.runs import RunDir, RunSettings
from rlhf.store import AnswerTask, Priority, Rationale, Store


@dataclass
class ProjectSettings:
    name: str = "demo"
    task: AnswerTask = documented("pairwise", help="pairwise | ranking | likert | binary (K=1: good / bad)")
    overlap: int = bounded(1, ge=1)
    lease_ttl_s: int = bounded(1800, ge=1)
    guidelines: str = documented("", help="Markdown text, or a path to a .md file")
    rationale: Rationale = "optional"
    priority: Priority = "random"

    def guidelines_text(self) -> str:
        g = self.guidelines
        return Path(g).read_text() if g.endswith(".md") and Path(g).is_file() else g


@dataclass
class GenerateStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="generate"))
    policies: list[str] = field(default_factory=lambda: ["smollm2-135m-instruct"])
    data: PromptSource = field(default_factory=lambda: PromptSource(max_prompt_length=512))
    k: int = bounded(2, ge=1, help="candidates per prompt (1 for a binary project, else at least 2)")
    batch_size: int = bounded(64, ge=1, help="at most this many prompts per batch")
    max_batch_tokens: int | None = bounded(
        16384,
        ge=1,
        help="at most this many tokens per batch in the KV cache: rows (prompts x their candidates) x "
        "(longest prompt + max_new_tokens); null = batch_size alone",
    )
    sampling: SamplingSettings = field(default_factory=lambda: SamplingSettings(temperature=0.8, top_p=0.95))
    generation: EngineSettings = field(default_factory=EngineSettings)
    store: str = documented("labels.db", help="SQLite path or postgresql:// URL")
    project: ProjectSettings = field(default_factory=ProjectSettings)
    publish: bool = documented(
        True, help="false: candidates.jsonl only (the loop's active selection publishes a subset)"
    )

    def __post_init__(self):
        if not self.policies:
            raise ConfigError("'policies' must name at least one model.")
        if self.project.task == "pairwise" and self.k != 2:
            raise ConfigError(
                f"a pairwise project needs k=2, got k={self.k}; use project.task=ranking for more."
            )
        if self.project.task == "binary" and self.k != 1:
            raise ConfigError(
                f"a binary project judges one answer per item: set k=1 (got k={self.k}), or use "
                "project.task=pairwise / ranking to compare several."
            )
        if self.project.task != "binary" and self.k < 2:
            raise ConfigError(
                f"a {self.project.task} project compares answers: k must be at least 2 (got k={self.k}); "
                "project.task=binary judges one answer per item."
            )


def sample_candidates(
    cfg: GenerateStageConfig, prompts, tokenizers: list, run_dir: RunDir
) -> tuple[list[list[dict]], dict]:
    """Candidate j of each prompt from policy j mod P; returns [prompt][slot] -> {text, source}, stats."""
    candidates: list[list[dict | None]] = [[None] * cfg.k for _ in range(len(prompts))]
    stats = {"new_tokens": 0, "seconds": 0.0}
    precision = cfg.sampling.precision_choice()
    say_precision(precision)
    backend = cfg.generation.backend
    with engines(cfg.generation, precision.name, cfg.run.seed, run_dir.path) as pool:
        for p, policy in enumerate(cfg.policies):
            slots = [j for j in range(cfg.k) if j % len(cfg.policies) == p]
            if not slots:
                continue
            record_model(run_dir, f"policy[{p}]", policy)
            seed = cfg.run.seed + p
            torch.manual_seed(seed)
            # vllm: one request per prompt, seeded by (policy seed, prompt id); hf: the global generator
            seeds = [row_seed(seed, pid) for pid in prompts.ids] if backend == "vllm" else None
            # tokens/s leaves an engine's start and weight reloads out
            t0, started = time.perf_counter(), pool.start_seconds + pool.reload_seconds
            with tqdm(total=len(prompts), desc=f"generate [{policy}]") as bar:
                out = pool.generate(
                    policy,
                    lambda policy=policy: load_causal_lm(policy, precision.name).eval(),
                    tokenizers[p],
                    prompts.encoded[p],
                    cfg.sampling,
                    n=len(slots),
                    seeds=seeds,
                    batch_size=cfg.batch_size,
                    max_batch_tokens=cfg.max_batch_tokens,
                    progress=bar,
                )
            stats["seconds"] += (
                time.perf_counter() - t0 - (pool.start_seconds + pool.reload_seconds - started)
            )
            stats["new_tokens"] += out.new_tokens
            sampling = {**vars(cfg.sampling), "precision": precision.name, "backend": backend}
            source = {"policy": policy, "policy_index": p, "run": cfg.run.name, "sampling": sampling}
            for i, samples in enumerate(out.samples):
                for slot, smp in zip(slots, samples, strict=True):
                    candidates[i][slot] = {
                        "text": smp.text,
                        "source": {**source, "seed": seed, "ended_with_eos": smp.ended},
                    }
        stats["engine"] = pool.summary()
    stats["precision"] = precision.name
    return candidates, stats


def publish(store: Store, ps: ProjectSettings, items: list[dict], *, seed: int) -> int:
    """Create the project (if new) and add the items whose external_id it does not hold yet."""
    store.create_project(
        ps.name,
        ps.task,
        overlap=ps.overlap,
        lease_ttl_s=ps.lease_ttl_s,
        guidelines=ps.guidelines_text(),
        rationale=ps.rationale,
        priority=ps.priority,
        exist_ok=True,
    )
    have = {it["external_id"] for it in store.items(ps.name)}
    return store.add_items(ps.name, [it for it in items if it["external_id"] not in have], seed=seed)


def run(cfg: GenerateStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    with (
        RunDir.prepare(cfg.run, "generate", cfg, resume=resume, overwrite=overwrite) as run_dir,
        Store(cfg.store) if cfg.publish else nullcontext() as store,  # a bad store fails before the slow part
    ):
        if store is not None and store.created:
            run_dir.say(f"created a new store at {cfg.store}")
        tokenizers = [load_tokenizer(policy, padding_side="left") for policy in cfg.policies]
        prompts = load_prompts(cfg.data, tokenizers, section="data")
        run_dir.record_input("data.prompts", cfg.data.prompts, source_path(cfg.data.prompts))
        run_dir.account("generate", {"prompts": prompts.accounting})
        candidates, stats = sample_candidates(cfg, prompts, tokenizers, run_dir)
        items = [
            {
                "external_id": f"{pid}@{cfg.run.name}",
                "prompt": prompt,
                "candidates": cands,
                "meta": {"prompt_id": pid, "generate_run": cfg.run.name},
            }
            for pid, prompt, cands in zip(prompts.ids, prompts.prompts, candidates, strict=True)
        ]
        ps = cfg.project
        added = publish(store, ps, items, seed=cfg.run.seed) if store is not None else len(items)
        with open(run_dir.path / "candidates.jsonl", "w") as f:
            for it in items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
        result = {
            "items_added": added,
            "candidates": added * cfg.k,
            "identical_candidate_items": sum(
                1 for it in items if len({c["text"] for c in it["candidates"]}) < cfg.k
            ),
            "new_tokens": stats["new_tokens"],
            "generate_seconds": round(stats["seconds"], 2),
            "tokens_per_s": round(stats["new_tokens"] / max(stats["seconds"], 1e-9), 1),
            "precision": stats["precision"],
            "backend": cfg.generation.backend,
        }
        if cfg.generation.backend == "vllm":
            result.update(stats["engine"])
        if store is not None:
            run_dir.update_manifest(store=cfg.store, project=ps.name)
        run_dir.finish(result=result, outputs={"candidates": run_dir.path / "candidates.jsonl"})
        where = f"into project '{ps.name}' ({cfg.store})" if store is not None else "(not published)"
        run_dir.say(
            f"generate: {added} items x {cfg.k} candidates {where} at {result['tokens_per_s']} new "
            f"tokens/s ({stats['precision']}, {cfg.generation.backend}) -> {run_dir.path / 'candidates.jsonl'}"
        )
        return run_dir
