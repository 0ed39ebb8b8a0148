"""`rlhf loop --config configs/loop.yaml`: rounds of human feedback as one resumable object.

    round 0   sft                                   (stages.sft: null skips it)
    round r   generate -> select -> collect -> export -> reward -> dpo | ppo -> compare (new vs best)

Every step is a normal stage run under runs/<loop>/<r>-<stage>, chained by the outputs each run declares
(a run directory passed as model or data resolves to its declared model or rows). Re-running the command
skips steps whose config and input hashes are unchanged and resumes an interrupted one (rlhf.loop.steps).
With human assessors the loop opens the round's labeling project, says how far labeling is and how to
serve the app, and exits; the next `rlhf loop` continues once enough items are complete.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

from rlhf.compare import read_result
from rlhf.config import from_dict, to_dict
from rlhf.data import load_rows
from rlhf.errors import ConfigError
from rlhf.loop.config import LoopConfig
from rlhf.loop.selection import regroup, select
from rlhf.loop.simulate import SimulatedAssessor, progress, vote
from rlhf.loop.steps import StepRecord, merged, run_step
from rlhf.reward import RewardScorer, load_reward
from rlhf.runs import MANIFEST, declared_output
from rlhf.stages import compare, dpo, export, generate, ppo, reward, sft
from rlhf.store import Store, now_utc

STAGES = {
    "sft": (sft, sft.SFTStageConfig),
    "generate": (generate, generate.GenerateStageConfig),
    "export": (export, export.ExportStageConfig),
    "reward": (reward, reward.RewardStageConfig),
    "dpo": (dpo, dpo.DPOStageConfig),
    "ppo": (ppo, ppo.PPOStageConfig),
    "compare": (compare, compare.CompareStageConfig),
}


class Waiting(Exception):
    """Human labeling of a round is not far enough yet (not an error: the loop exits and is run again)."""


class Loop:
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
        best = self.round_zero()
        for r in range(1, self.cfg.rounds + 1):
            best = self.round(r, best, eval_file, pool)
        self.state.update(status="completed", best=best)
        self.save()
        return self.state

    def check_stages(self) -> None:
        """Every `stages.<stage>` mapping builds its stage's config: a typo fails now, before any model loads."""
        used = ["sft", "generate", "export", "reward", self.cfg.algorithm, "compare"]
        for stage in used:
            user = getattr(self.cfg.stages, stage)
            if user is not None:
                from_dict(STAGES[stage][1], user, source=f"{self.source}: stages.{stage}")

    def step(self, key: str, stage: str, chaining: dict, *, force: bool = False) -> Path:
        module, cls = STAGES[stage]
        user = getattr(self.cfg.stages, stage) or {}
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
        project = f"{self.cfg.run.name}-r{r}"
        gen = self.step(
            f"r{r}-generate",
            "generate",
            {
                "policies": [best],
                "data": {"prompts": str(self.round_prompts(r, pool)), "limit": None},
                "publish": False,
                "store": self.store,
                "project": {"name": project},
            },
        )
        chosen = self.choose(r, gen)
        state.update(
            project=project, generate_run=str(gen), prompt_ids=[it["meta"]["prompt_id"] for it in chosen]
        )
        self.publish(project, chosen)
        self.collect(r, project)
        with Store(self.store, create=False) as store:
            judged = len(store.annotations(project))
        exp = self.step(
            f"r{r}-export",
            "export",
            {"store": self.store, "project": project},
            force=state.get("exported") != judged,
        )
        state["exported"] = judged
        rm = self.step(f"r{r}-reward", "reward", {"data": {"train": str(exp)}})
        algo = self.cfg.algorithm
        if algo == "dpo":
            chain = {"model": {"name": best}, "data": {"train": str(exp)}}
        else:
            chain = {
                "model": {"name": best},
                "reward": {"model": str(rm)},
                "data": {"prompts": str(gen / "candidates.jsonl")},
            }
        new = str(self.step(f"r{r}-{algo}", algo, chain))
        names = {best: checkpoint_name(best, self.dir), new: checkpoint_name(new, self.dir)}
        cmp_chain = {
            "checkpoints": [{"name": names[m], "model": m} for m in (best, new)],
            "baseline": names[best],
            "reference": names[best],
            "reward": {"model": str(rm)},
            "data": {"prompts": str(eval_file), "limit": None},
        }
        if self.cfg.arena:
            cmp_chain["arena"] = {"project": f"{project}-arena", "store": self.store}
        cmp_run = self.step(f"r{r}-compare", "compare", cmp_chain)
        result = read_result(declared_output(cmp_run, "compare_json"))
        measured = result.checkpoints[names[new]]
        vs, kl = measured.vs_baseline, measured.kl.mean if measured.kl else None
        win_rate = vs.win_rate if vs else None
        promoted = (win_rate or 0.0) > self.cfg.promote_above
        state.update(
            win_rate=win_rate, win_rate_ci95=vs.win_rate_ci95 if vs else None, kl=kl, promoted=promoted
        )
        state.update(best=new if promoted else best, compare_run=str(cmp_run))
        self.save()
        verdict = "becomes the best policy" if promoted else f"stays behind; {names[best]} remains the best"
        self.say(
            f"round {r}: {names[new]} wins {win_rate if vs else float('nan'):.0%} of reward-model battles "
            f"against {names[best]} on {result.prompts} held-out prompts (KL {kl if kl is None else round(kl, 2)}) "
            f"-> it {verdict}"
        )
        return state["best"]

    def choose(self, r: int, gen: Path) -> list[dict]:
        """The round's items: all of the first round's; later, `prompts_per_round` of the pool by active
        selection with the previous round's reward model (or at random)."""
        items = [
            json.loads(line) for line in declared_output(gen, "candidates").read_text().splitlines() if line
        ]
        n, method = self.cfg.prompts_per_round, self.cfg.selection
        if r == 1 or len(items) <= n:
            return items[:n]
        scorer = RewardScorer(
            str(declared_output(Path(self.state["steps"][f"r{r - 1}-reward"]["run"]), "model"))
        )
        if method == "disagreement" and len(scorer.members) < 2:
            self.say("selection: the reward model is a single model (no ensemble), so uncertainty is used")
            method = "uncertainty"
        k = len(items[0]["candidates"])
        flat = scorer.score_members(
            [it["prompt"] for it in items for _ in range(k)],
            [c["text"] for it in items for c in it["candidates"]],
        )
        picked, values = select(regroup(flat, k), n, method=method, seed=self.cfg.run.seed + r)
        self.say(f"selection ({method}): {n} of {len(items)} items chosen for the assessors")
        self.state["rounds"][str(r)]["selection"] = {"method": method, "values": values, "picked": picked}
        return [items[i] for i in picked]

    def publish(self, project: str, items: list[dict]) -> None:
        """Open the round's project (settings from stages.generate.project) with the chosen items."""
        user = dict((self.cfg.stages.generate or {}).get("project") or {})
        ps = from_dict(
            generate.ProjectSettings,
            {**user, "name": project},
            source=f"{self.source}: stages.generate.project",
        )
        with Store(self.store) as store:
            added = generate.publish(store, ps, items, seed=self.cfg.run.seed)
        if added:
            self.say(f"published {added} items to project '{project}' ({self.store})")

    def collect(self, r: int, project: str) -> None:
        a = self.cfg.assessors
        t0 = time.perf_counter()
        with Store(self.store, create=False) as store:
            if a.source == "simulated":
                sims = [SimulatedAssessor(f"sim-{k + 1}", noise) for k, noise in enumerate(a.noise)]
                made = vote(store, project, sims, load_reward(a.reward), seed=self.cfg.run.seed + r)
                if sum(made.values()):
                    self.say(
                        f"r{r}-collect: {sum(made.values())} judgements by {len(sims)} simulated assessors"
                    )
            p = store.project(project)
            done = progress(store.items(project), store.annotations(project), p.overlap)
            opened = p.created_at
        self.records.append(
            StepRecord(f"r{r}-collect", "collect", Path(self.store), a.source, time.perf_counter() - t0, done)
        )
        late = a.deadline_h is not None and (now_utc() - opened).total_seconds() > a.deadline_h * 3600
        if done["share"] + 1e-9 < a.min_complete and not late:
            self.state["status"] = "waiting"
            self.save()
            raise Waiting(waiting_message(self.store, project, done, a.min_complete))


def checkpoint_name(model: str, loop_dir: Path) -> str:
    """A loop's run directory by its step name (r1-dpo); the starting policy (no SFT round) as `start`."""
    p = Path(model)
    return p.name if p.parent == loop_dir else "start"


def waiting_message(store: str, project: str, done: dict, needed: float) -> str:
    return (
        f"waiting for labels: {done['complete']}/{done['items']} items of '{project}' complete "
        f"({done['share']:.0%}; the round goes on at {needed:.0%}).\n"
        f"  serve the app:  rlhf label store={store} project={project}\n"
        f"  add assessors:  rlhf users add NAME --store {store}\n"
        f"  then run the same `rlhf loop` command again: finished steps are skipped."
    )
