"""`rlhf loop --config configs/loop.yaml`: rounds of human feedback as one resumable object.

    round 0   sft                                   (stages.sft: null skips it)
    round r   generate -> select -> collect -> export -> reward -> dpo | ppo -> compare (new vs best)
              (algorithm: kto — each answer its own binary item, judged good / bad; no reward model)

Every step is a normal stage run under runs/<loop>/<r>-<stage>, chained by the outputs each run declares
(a run directory passed as model or data resolves to its declared model or rows). Re-running the command
skips steps whose config and input hashes are unchanged and resumes an interrupted one (rlhf.loop.steps).
With human assessors the loop opens the round's labeling project, says how far labeling is and how to
serve the app, and exits; the next `rlhf loop` continues once enough items are complete.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

from rlhf.config import from_dict, to_dict
from rlhf.data import load_rows
from rlhf.engine import shared_engines
from rlhf.errors import ConfigError, RlhfError, RunDirError
from rlhf.loop.collect import Labeling
from rlhf.loop.config import LoopConfig
from rlhf.loop.evidence import candidates_hash, promotion
from rlhf.loop.judging import Judging
from rlhf.loop.labels import LabelsRun, RoundData, assemble, binary_items, describe, shortfall
from rlhf.loop.steps import StepRecord, merged, run_step
from rlhf.runs import MANIFEST, RunSettings, declared_output
from rlhf.stages import compare, dpo, export, generate, kto, ppo, reward, sft
from rlhf.stages.export import current_digest

STAGES = {
    "sft": (sft, sft.SFTStageConfig),
    "generate": (generate, generate.GenerateStageConfig),
    "export": (export, export.ExportStageConfig),
    "reward": (reward, reward.RewardStageConfig),
    "dpo": (dpo, dpo.DPOStageConfig),
    "ppo": (ppo, ppo.PPOStageConfig),
    "kto": (kto, kto.KTOStageConfig),
    "compare": (compare, compare.CompareStageConfig),
}


class LoopError(RlhfError):
    """A round cannot go on with what it has (a clear message; the loop can be run again after a fix)."""


class Loop(Labeling, Judging):
    def __init__(self, cfg: LoopConfig, *, source: str = "loop config", say=None):
        self.cfg = cfg
        self.source = source
        self.dir = Path(cfg.run.output_root) / cfg.run.name
        self.store = cfg.store or str(self.dir / "labels.db")
        self.say = say or (lambda text: print(f"[rlhf] {text}", flush=True))
        self.records: list[StepRecord] = []
        self.state_path = self.dir / "loop.json"
        self.state: dict = {"rounds": {}}

    # -- the whole loop -----------------------------------------------------------------------------------

    def run(self) -> dict:
        """Runs (or continues) every round; returns the state. Raises Waiting for human labels."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.state_path.is_file():
            self.state = json.loads(self.state_path.read_text())
        self.state.update(config=to_dict(self.cfg), store=self.store, status="running")
        self.check_stages()
        eval_file, pool = self.split_prompts()
        with shared_engines():  # generation.backend=vllm: one engine for the rounds, not one per step
            best = self.round_zero()
            for r in range(1, self.cfg.rounds + 1):
                best = self.round(r, best, eval_file, pool)
        self.state.update(status="completed", best=best)
        self.save()
        return self.state

    def check_stages(self) -> None:
        """Every `stages.<stage>` mapping builds its stage's config: a typo fails now, before any model loads."""
        k = (self.cfg.stages.generate or {}).get("k", generate.GenerateStageConfig.k)
        if self.cfg.algorithm == "kto" and k < 2:
            raise ConfigError(
                f"{self.source}: algorithm: kto publishes each of a prompt's k answers as its own binary item, "
                f"and the held-out prompts judge promotion by pairing a good answer with a bad one: "
                f"stages.generate.k must be at least 2 (got {k})."
            )
        used = ["sft", "generate", "export", *self.reward_stage(), self.cfg.algorithm, "compare"]
        for stage in used:
            user = getattr(self.cfg.stages, stage)
            if user is not None:
                user = merged(user, self.forced(stage))
                from_dict(STAGES[stage][1], user, source=f"{self.source}: stages.{stage}")

    def forced(self, stage: str) -> dict:
        """What the loop sets in a stage beyond chaining: a KTO round's generate step samples k answers per
        prompt for the loop to publish as binary items (its own project settings are not used)."""
        return {"project": {"task": "ranking"}} if stage == "generate" and self.cfg.algorithm == "kto" else {}

    def reward_stage(self) -> list[str]:
        """["reward"] where the round trains a reward model: not for KTO (good / bad labels, no pairs)."""
        return [] if self.cfg.algorithm == "kto" else ["reward"]

    def step(self, key: str, stage: str, chaining: dict, *, force: bool = False) -> Path:
        module, cls = STAGES[stage]
        user = getattr(self.cfg.stages, stage) or {}
        if self.cfg.generation.backend != "hf":  # the loop's engine: for every step that samples
            engine = to_dict(self.cfg.generation)
            if stage in ("generate", "compare", "ppo"):
                user = merged(user, {"generation": engine})
            elif stage in ("dpo", "kto"):
                user = merged(user, {"drift": {"generation": engine}})
        run = {"name": key, "output_root": str(self.dir), "seed": self.cfg.run.seed}
        raw = merged(merged(user, chaining), {"run": run})
        rec = run_step(
            key, stage, module, cls, raw, source=f"{self.source}: stages.{stage}", say=self.say, force=force
        )
        self.records.append(rec)
        self.state.setdefault("steps", {})[key] = {
            "run": str(rec.run),
            "action": rec.action,
            "seconds": rec.seconds,
        }
        self.save()
        return rec.run

    def save(self) -> None:
        self.state["records"] = [asdict(r) | {"run": str(r.run)} for r in self.records]
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, default=str) + "\n")
        tmp.replace(self.state_path)
        manifest = {"stage": "loop", "status": self.state.get("status"), "steps": self.state.get("steps", {})}
        manifest["published"] = {
            v["project"]: v["generate_run"] for v in self.state["rounds"].values() if "project" in v
        }
        (self.dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    # -- prompts ------------------------------------------------------------------------------------------

    def split_prompts(self) -> tuple[Path, list[dict]]:
        """The pool, seeded-shuffled once; its first `eval_prompts` are held out for the comparisons."""
        loaded = load_rows(self.cfg.prompts, what="prompts")
        # every row carries its (normalized, unique) id, so that rounds know which prompts were used
        rows = [{**row, "id": rid} for row, rid in zip(loaded.rows, loaded.ids, strict=True)]
        if len(rows) <= self.cfg.eval_prompts:
            raise ConfigError(
                f"{self.source}: 'prompts' ({self.cfg.prompts}) has {len(rows)} prompts; eval_prompts "
                f"({self.cfg.eval_prompts}) must leave some for the rounds. Lower eval_prompts or add prompts."
            )
        rows = sorted(rows, key=lambda r: str(r.get("id")))
        random.Random(self.cfg.run.seed).shuffle(rows)
        eval_file = self.write_rows("prompts/eval.jsonl", rows[: self.cfg.eval_prompts])
        return eval_file, rows[self.cfg.eval_prompts :]

    def write_rows(self, rel: str, rows: list[dict]) -> Path:
        """Write rows unless the file already holds exactly them (so its hash, and what depends on it, stays)."""
        path = self.dir / rel
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return path

    def round_prompts(self, r: int, pool: list[dict]) -> Path:
        used = {pid for k, v in self.state["rounds"].items() if int(k) < r for pid in v.get("prompt_ids", [])}
        fresh = [row for row in pool if str(row.get("id")) not in used] or pool  # reuse once exhausted
        n = self.cfg.prompts_per_round * (1 if r == 1 else self.cfg.pool_factor)
        return self.write_rows(f"prompts/r{r}-pool.jsonl", fresh[:n])

    # -- rounds -------------------------------------------------------------------------------------------

    def round_zero(self) -> str:
        if self.cfg.stages.sft is None:
            return self.cfg.policy
        return str(self.step("r0-sft", "sft", {"model": {"name": self.cfg.policy}}))

    def round(self, r: int, best: str, eval_file: Path, pool: list[dict]) -> str:
        state = self.state["rounds"].setdefault(str(r), {})
        gen = self.step(
            f"r{r}-generate",
            "generate",
            {
                "policies": [best],
                "data": {"prompts": str(self.round_prompts(r, pool)), "limit": None},
                "publish": False,
                "store": self.store,
                # the loop publishes the items itself (a KTO round: each answer as its own binary item)
                "project": {
                    "name": f"{self.cfg.run.name}-r{r}",
                    **self.forced("generate").get("project", {}),
                },
            },
        )
        chosen = self.choose(r, gen)
        # new candidates (e.g. after r0-sft changed) open a new project version: votes on another policy's
        # answers never land in this round's export
        project = f"{self.cfg.run.name}-r{r}-{candidates_hash(chosen)[:8]}"
        state.update(
            project=project, generate_run=str(gen), prompt_ids=[it["meta"]["prompt_id"] for it in chosen]
        )
        self.publish(project, binary_items(chosen) if self.cfg.algorithm == "kto" else chosen)
        self.collect(r, project)
        digest = current_digest(self.store, project)
        exp = self.step(
            f"r{r}-export",
            "export",
            {"store": self.store, "project": project}
            | ({"format": "unpaired"} if self.cfg.algorithm == "kto" else {}),
            force=state.get("export_digest") != digest,
        )
        state.update(export_digest=digest, export_run=str(exp))
        data = self.labels(r, eval_file)
        rm = self.step(f"r{r}-reward", "reward", self.reward_chain(r, data)) if self.reward_stage() else None
        new = str(
            self.step(
                f"r{r}-{self.cfg.algorithm}", self.cfg.algorithm, self.policy_chain(best, rm, gen, data)
            )
        )
        result, names, cmp_run = self.compare(r, best, new, rm, eval_file, data)
        arena = (
            self.judge_arena(r, cmp_run, names[best], names[new]) if self.cfg.promote_on == "arena" else None
        )
        verdict = promotion(
            self.cfg.promote_on, self.cfg.promote_above, result, names[best], names[new], arena=arena
        )
        state.update(
            verdict=asdict(verdict), best=new if verdict.promoted else best, compare_run=str(cmp_run)
        )
        oracle = self.oracle(cmp_run, names) if self.cfg.assessors.source == "simulated" else None
        state["oracle"] = oracle
        self.save()
        self.say(f"round {r}: {verdict.text}")
        if oracle:
            self.say(f"round {r}: oracle (the simulated assessors' noise-free taste): {oracle['text']}")
        return state["best"]

    def labels(self, r: int, eval_file: Path) -> RoundData:
        """This round's training data from every round's export so far (rlhf.loop.labels)."""
        exports, unpaired = [], self.cfg.algorithm == "kto"
        for k in range(1, r + 1):
            run = Path(self.state["rounds"][str(k)]["export_run"])
            try:
                exports.append(str(declared_output(run, "rows" if unpaired else "preferences")))
            except RunDirError:
                exports.append(str(self.write_rows(f"prompts/empty-export-r{k}.jsonl", [])))  # no pairs
        lab = self.cfg.labels
        cfg = LabelsRun(
            RunSettings(name=f"r{r}-labels", output_root=str(self.dir), seed=self.cfg.run.seed),
            exports,
            str(eval_file),
            lab.holdout_share,
            lab.accumulate,
            lab.dpo_replay,
            unpaired,
        )
        data = assemble(cfg, self.cfg.run.seed)
        self.state["rounds"][str(r)]["labels"] = data.counts
        short = shortfall(data.counts, r)
        if short:
            self.save()
            raise LoopError(
                f"round {r}: {short} ({data.counts}): the export found too few labels with a majority, or all "
                "went to the human slice. Label more items (prompts_per_round, overlap) or lower "
                "labels.holdout_share."
            )
        self.say(f"r{r}-labels: {describe(data.counts)}")
        return data

    def reward_chain(self, r: int, data: RoundData) -> dict:
        chain: dict = {"data": {"train": str(data.reward_train)}}
        if data.human_slice is not None:
            chain["data"].update(eval=str(data.human_slice), eval_fraction=0.0)
        if self.cfg.labels.rm_warm_start and r > 1:
            chain["model"] = {"name": self.state["steps"][f"r{r - 1}-reward"]["run"]}
        return chain

    def policy_chain(self, best: str, rm: Path | None, gen: Path, data: RoundData) -> dict:
        if self.cfg.algorithm in ("dpo", "kto"):
            return {"model": {"name": best}, "data": {"train": str(data.policy_train)}}
        return {
            "model": {"name": best},
            "reward": {"model": str(rm)},
            "data": {"prompts": str(gen / "candidates.jsonl")},
        }

    def start_policy(self) -> str:
        steps = self.state.get("steps", {})
        return steps["r0-sft"]["run"] if "r0-sft" in steps else self.cfg.policy
