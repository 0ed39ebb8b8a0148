"""The evidence half of a round (`Judging`, mixed into `rlhf.loop.rounds.Loop`), read off the round's
comparison run: the blind arena's votes of new against best (`promote_on: arena` — simulated assessors
vote there as they label; people are waited for like a round's labels) and, with simulated assessors,
the oracle (their noise-free taste: the round's policy against the start)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from rlhf.compare import read_result
from rlhf.loop.collect import Waiting
from rlhf.loop.evidence import arena_votes, head_to_head, oracle_win_rate
from rlhf.loop.labels import RoundData
from rlhf.loop.simulate import progress, vote
from rlhf.loop.steps import StepRecord
from rlhf.reward import load_reward
from rlhf.runs import declared_output
from rlhf.store import Store, now_utc


def compare_answers(compare_run: Path) -> list[dict]:
    """The comparison's answers: one row per held-out prompt, {"prompt", "answers": {checkpoint: text}}."""
    path = declared_output(compare_run, "answers")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Judging:
    """Needs from the loop: cfg, dir, state, store, records, say(), save(), step(), start_policy()."""

    def compare(self, r: int, best: str, new: str, rm: Path | None, eval_file: Path, data: RoundData):
        """New vs best (and the start, for the oracle) on the held-out prompts; human agreement on the slice,
        each policy against its own reference; the reward model trained on every label but the slice."""
        start = self.start_policy()
        models = list(dict.fromkeys([start, best, new]))
        names = {m: checkpoint_name(m, self.dir) for m in models}
        chain = {
            "checkpoints": [{"name": names[m], "model": m} for m in models],
            "baseline": names[best],
            "reference": names[best],
            "reward": {"model": str(rm)} if rm is not None else None,  # KTO rounds: no reward model
            "data": {"prompts": str(eval_file), "limit": None},
        }
        if data.human_slice is not None:
            chain["human"] = {"preferences": str(data.human_slice)}
        if self.cfg.arena:
            chain["arena"] = {"project": self.arena_project(r), "store": self.store}
        run = self.step(f"r{r}-compare", "compare", chain)
        return read_result(declared_output(run, "compare_json")), names, run

    def arena_project(self, r: int) -> str:
        return f"{self.cfg.run.name}-r{r}-arena"

    def judge_arena(self, r: int, compare_run: Path, best: str, new: str) -> dict:
        """`head_to_head` of the arena's votes of `new` against `best` (checkpoint names) on the answers of
        this comparison. Simulated assessors cast their votes first; with people, raises `Waiting` until
        `assessors.min_complete` of the battles are judged (or `assessors.deadline_h` has passed)."""
        a, project = self.cfg.assessors, self.arena_project(r)
        t0 = time.perf_counter()
        with Store(self.store, create=False) as store:
            if a.source == "simulated":
                sims = [replace(s, name=s.name or f"sim-{k + 1}") for k, s in enumerate(a.simulated)]
                made = vote(store, project, sims, load_reward(a.reward), seed=self.cfg.run.seed + 7919 * r)
                if sum(made.values()):
                    self.say(
                        f"r{r}-arena: {sum(made.values())} blind votes by {len(sims)} simulated assessors"
                    )
            p = store.project(project)
            items, annotations = store.items(project), store.annotations(project)
        done = progress(items, annotations, p.overlap)
        late = a.deadline_h is not None and (now_utc() - p.created_at).total_seconds() > a.deadline_h * 3600
        if a.source == "human" and done["share"] + 1e-9 < a.min_complete and not late:
            self.state["status"] = "waiting"
            self.save()
            raise Waiting(
                f"waiting for arena votes: {done['complete']}/{done['items']} battles of '{project}' judged "
                f"({done['share']:.0%}; the verdict comes at {a.min_complete:.0%}).\n"
                f"  serve the arena:  rlhf label store={self.store} project={project} arena=true\n"
                f"  then run the same `rlhf loop` command again: finished steps are skipped."
            )
        answers = {
            json.dumps(row["prompt"], sort_keys=True, ensure_ascii=False): row["answers"]
            for row in compare_answers(compare_run)
        }
        won = head_to_head(arena_votes(items, annotations, answers, new, best), seed=self.cfg.run.seed)
        self.state["rounds"][str(r)]["arena"] = won
        self.records.append(
            StepRecord(f"r{r}-arena", "arena", Path(self.store), a.source, time.perf_counter() - t0, won)
        )
        return won

    def oracle(self, compare_run: Path, names: dict) -> dict | None:
        """The simulated assessors' taste itself (noise-free) on the held-out prompts: the round's policy
        against the start."""
        rows = compare_answers(compare_run)
        new = names[list(names)[-1]]
        start = names[self.start_policy()]
        if new == start:
            return None
        taste = load_reward(self.cfg.assessors.reward)
        prompts = [row["prompt"] for row in rows]
        won = oracle_win_rate(
            taste(prompts, [row["answers"][new] for row in rows]),
            taste(prompts, [row["answers"][start] for row in rows]),
            seed=self.cfg.run.seed,
        )
        lo, hi = won["ci95"]
        won["text"] = (
            f"{new} beats {start} on {won['rate']:.0%} [{lo:.0%}, {hi:.0%}] of {won['n']} held-out prompts"
        )
        return won


def checkpoint_name(model: str, loop_dir: Path) -> str:
    """A loop's run directory by its step name (r1-dpo); the starting policy (no SFT round) as `start`."""
    p = Path(model)
    return p.name if p.parent == loop_dir else "start"
