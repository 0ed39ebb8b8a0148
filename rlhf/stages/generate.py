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
- Batched generation: prompts sorted by length, left padding, KV cache, `num_return_sequences` for the
  samples of one policy; one seed per policy (run.seed + index), recorded.
- All items of a run are written in one transaction: a failed run leaves the project untouched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rlhf.config import ConfigError
from rlhf.runs import RunDir, RunSettings


@dataclass
class Sampling:
    max_new_tokens: int = 128
    do_sample: bool = True
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ConfigError(f"'sampling.max_new_tokens' must be at least 1, got {self.max_new_tokens}.")
        if self.do_sample and self.temperature <= 0:
            raise ConfigError(
                "'sampling.temperature' must be > 0 when sampling (or set sampling.do_sample=false)."
            )


@dataclass
class ProjectSettings:
    name: str = "demo"
    task: str = "pairwise"  # pairwise | ranking | likert
    overlap: int = 1
    lease_ttl_s: int = 1800
    guidelines: str = ""  # Markdown text, or a path to a .md file
    rationale: str = "optional"  # off | optional | required
    priority: str = "random"  # random | fifo


@dataclass
class GenerateStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="generate"))
    policies: list[str] = field(default_factory=lambda: ["smollm2-135m-instruct"])
    dtype: str = "float32"
    prompts: str = "demo:prompts"
    split: str = "train"
    limit: int | None = None  # first N valid prompts
    k: int = 2  # candidates per prompt
    batch_size: int = 8  # prompts per generate() call
    max_prompt_length: int = 512  # tokens after the chat template; longer prompts are rejected (reported)
    sampling: Sampling = field(default_factory=Sampling)
    store: str = "labels.db"  # SQLite path or postgresql:// URL
    project: ProjectSettings = field(default_factory=ProjectSettings)

    def __post_init__(self):
        if not self.policies:
            raise ConfigError("'policies' must name at least one model.")
        if self.k < 2:
            raise ConfigError(f"'k' must be at least 2 (candidates to compare), got {self.k}.")
        if self.project.task == "pairwise" and self.k != 2:
            raise ConfigError(
                f"a pairwise project needs k=2, got k={self.k}; use project.task=ranking for more."
            )
        if self.batch_size < 1:
            raise ConfigError(f"'batch_size' must be at least 1, got {self.batch_size}.")


def normalise_prompt(row: dict) -> tuple[dict | None, str | None]:
    from rlhf.data import check_messages

    prompt = row.get("prompt")
    if prompt is None:
        return None, "missing columns: need 'prompt'"
    if isinstance(prompt, str):
        return ({"prompt": prompt}, None) if prompt.strip() else (None, "empty prompt: 'prompt' is empty")
    reason = check_messages(prompt, last_role="user")
    return (None, reason) if reason else ({"prompt": prompt}, None)


def encode_prompt(tokenizer, prompt) -> list[int]:
    if tokenizer.chat_template:
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return tokenizer.apply_chat_template(
            msgs, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    return tokenizer(text)["input_ids"]


def generate_batched(
    model, tokenizer, prompts_ids: list[list[int]], n: int, sampling: Sampling, batch_size: int, progress=None
) -> tuple[list[list[tuple[str, bool]]], int]:
    """n samples for each prompt: [(text, ended_with_eos)] per prompt, plus the count of new tokens."""
    import torch

    pad = tokenizer.pad_token_id
    eos = set(_eos_ids(model, tokenizer))
    order = sorted(range(len(prompts_ids)), key=lambda i: len(prompts_ids[i]))
    out: list[list[tuple[str, bool]]] = [[] for _ in prompts_ids]
    new_tokens = 0
    kwargs = dict(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=sampling.do_sample,
        num_return_sequences=n,
        pad_token_id=pad,
        repetition_penalty=sampling.repetition_penalty,
    )
    if sampling.do_sample:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(prompts_ids[i]) for i in idx)
        input_ids = torch.tensor([[pad] * (width - len(prompts_ids[i])) + prompts_ids[i] for i in idx])
        mask = torch.tensor([[0] * (width - len(prompts_ids[i])) + [1] * len(prompts_ids[i]) for i in idx])
        with torch.inference_mode():
            seqs = model.generate(input_ids=input_ids, attention_mask=mask, use_cache=True, **kwargs)
        gen = seqs[:, width:]
        for row, toks in enumerate(gen.tolist()):
            ended = next((j for j, t in enumerate(toks) if t in eos), None)
            kept = toks if ended is None else toks[:ended]
            new_tokens += len(kept) + (ended is not None)
            out[idx[row // n]].append(
                (tokenizer.decode(kept, skip_special_tokens=True).strip(), ended is not None)
            )
        if progress is not None:
            progress.update(len(idx))
    return out, new_tokens


def _eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids


def run(cfg: GenerateStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    import json
    from pathlib import Path

    import torch
    from tqdm.auto import tqdm

    from rlhf.data import load_rows, validate_rows
    from rlhf.models import load_causal_lm, load_tokenizer, resolve_model_path
    from rlhf.stages.sft import load_path
    from rlhf.store.service import Store

    run_dir = RunDir.prepare(cfg.run, "generate", cfg, resume=resume, overwrite=overwrite)
    try:
        store = Store(cfg.store)  # fail on a bad store before the slow part
        rows = load_rows(cfg.prompts, what="prompts", split=cfg.split)
        prompts, acct = validate_rows(rows, normalise_prompt, what="prompts")
        ids = [rid for rid, r in zip(rows.ids, rows.rows, strict=True) if normalise_prompt(r)[0] is not None]
        unused = max(0, len(prompts) - cfg.limit) if cfg.limit is not None else 0
        if cfg.limit is not None:
            prompts, ids = prompts[: cfg.limit], ids[: cfg.limit]
        run_dir.record_input("prompts", cfg.prompts, load_path(cfg.prompts))
        tokenizers = [load_tokenizer(policy, padding_side="left") for policy in cfg.policies]
        encoded = [[encode_prompt(tok, r["prompt"]) for r in prompts] for tok in tokenizers]
        keep = [i for i in range(len(prompts)) if all(len(e[i]) <= cfg.max_prompt_length for e in encoded)]
        rejected_long = [
            {
                "id": ids[i],
                "reason": f"too long: prompt over max_prompt_length {cfg.max_prompt_length} tokens",
            }
            for i in range(len(prompts))
            if i not in set(keep)
        ]
        candidates: list[list[dict | None]] = [[None] * cfg.k for _ in keep]
        stats = {"new_tokens": 0, "seconds": 0.0}
        sampling = vars(cfg.sampling)
        for p, policy in enumerate(cfg.policies):
            slots = [j for j in range(cfg.k) if j % len(cfg.policies) == p]
            if not slots:
                continue
            model = load_causal_lm(policy, cfg.dtype).eval()
            run_dir.record_input(f"policy[{p}]", policy, resolve_model_path(policy))
            seed = cfg.run.seed + p
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            with tqdm(total=len(keep), desc=f"generate [{policy}]") as bar:
                outs, new_tokens = generate_batched(
                    model,
                    tokenizers[p],
                    [encoded[p][i] for i in keep],
                    len(slots),
                    cfg.sampling,
                    cfg.batch_size,
                    bar,
                )
            stats["seconds"] += time.perf_counter() - t0
            stats["new_tokens"] += new_tokens
            for i, samples in enumerate(outs):
                for slot, (text, eos) in zip(slots, samples, strict=True):
                    candidates[i][slot] = {
                        "text": text,
                        "source": {
                            "policy": policy,
                            "policy_index": p,
                            "run": cfg.run.name,
                            "sampling": sampling,
                            "seed": seed,
                            "ended_with_eos": eos,
                        },
                    }
            del model
        items = [
            {
                "external_id": f"{ids[i]}@{cfg.run.name}",
                "prompt": prompts[i]["prompt"],
                "candidates": cands,
                "meta": {"prompt_id": ids[i], "generate_run": cfg.run.name},
            }
            for i, cands in zip(keep, candidates, strict=True)
        ]
        guidelines = cfg.project.guidelines
        if guidelines.endswith(".md") and Path(guidelines).is_file():
            guidelines = Path(guidelines).read_text()
        ps = cfg.project
        store.create_project(
            ps.name,
            ps.task,
            overlap=ps.overlap,
            lease_ttl_s=ps.lease_ttl_s,
            guidelines=guidelines,
            rationale=ps.rationale,
            priority=ps.priority,
            exist_ok=True,
        )
        added = store.add_items(ps.name, items, seed=cfg.run.seed)
        store.close()
        with open(run_dir.path / "candidates.jsonl", "w") as f:
            for it in items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
        summary = {**acct.summary(), "rows_not_used_limit": unused}
        summary["rows_rejected"] += len(rejected_long)
        summary["rejected_examples"] += rejected_long[:50]
        if rejected_long:
            summary["rejected_by_reason"]["too long"] = len(rejected_long)
        identical = sum(1 for it in items if len({c["text"] for c in it["candidates"]}) < cfg.k)
        result = {
            "items_added": added,
            "candidates": added * cfg.k,
            "identical_candidate_items": identical,
            "new_tokens": stats["new_tokens"],
            "generate_seconds": round(stats["seconds"], 2),
            "tokens_per_s": round(stats["new_tokens"] / max(stats["seconds"], 1e-9), 1),
        }
        run_dir.update_manifest(data={"prompts": summary}, store=cfg.store, project=ps.name)
        run_dir.finish(result=result)
        print(
            f"[rlhf] generate: {summary['rows_in']} prompts in, {added} items x {cfg.k} candidates into project "
            f"'{ps.name}' ({cfg.store}); {summary['rows_rejected']} prompts rejected; {unused} not used (limit); "
            f"{result['tokens_per_s']} new tokens/s",
            flush=True,
        )
        return run_dir
    except BaseException as e:
        run_dir.fail(f"{type(e).__name__}: {e}")
        raise
