"""The labeling half of a round (`Labeling`, mixed into `rlhf.loop.rounds.Loop`): which items go to people
(active selection with the previous round's reward model), publishing them, and collecting judgements —
from simulated assessors through the store API, or by waiting for people."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from rlhf.config import from_dict
from rlhf.loop.selection import regroup, select
from rlhf.loop.simulate import agreement_rate, progress, vote
from rlhf.loop.steps import StepRecord
from rlhf.reward import RewardScorer, load_reward
from rlhf.runs import declared_output
from rlhf.stages import generate
from rlhf.store import Store, now_utc


class Waiting(Exception):
    """Human labeling of a round is not far enough yet (not an error: the loop exits and is run again)."""


class Labeling:
    """Needs from the loop: cfg, state, store, source, records, say(), save()."""

    def choose(self, r: int, gen: Path) -> list[dict]:
        """The round's items: all of the first round's; later, `prompts_per_round` of the pool by active
        selection with the previous round's reward model (or at random; KTO rounds, which train none: the
        pool's seeded order)."""
        items = [
            json.loads(line) for line in declared_output(gen, "candidates").read_text().splitlines() if line
        ]
        n, method = self.cfg.prompts_per_round, self.cfg.selection
        if r == 1 or len(items) <= n:
            return items[:n]
        if self.cfg.algorithm == "kto":  # no reward model to select with: the pool's (seeded) order
            self.say(f"selection: a KTO round trains no reward model; the first {n} of {len(items)} items")
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
            {**user, "name": project} | ({"task": "binary"} if self.cfg.algorithm == "kto" else {}),
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
                sims = [replace(s, name=s.name or f"sim-{k + 1}") for k, s in enumerate(a.simulated)]
                made = vote(store, project, sims, load_reward(a.reward), seed=self.cfg.run.seed + r)
                if sum(made.values()):
                    self.say(
                        f"r{r}-collect: {sum(made.values())} judgements by {len(sims)} simulated assessors"
                    )
            p = store.project(project)
            annotations = store.annotations(project)
            done = progress(store.items(project), annotations, p.overlap)
            opened = p.created_at
        rate, pairs = agreement_rate(annotations)
        done["agreement"] = rate
        self.state["rounds"][str(r)]["agreement"] = {"rate": rate, "pairs": pairs}
        low, high = a.agreement_band
        if rate is not None and not low <= rate <= high:
            self.say(
                f"r{r}-collect: assessors agree on {rate:.0%} of {pairs} candidate pairs judged twice, outside the expected "
                f"{low:.0%}-{high:.0%} (people agree on ~65-75 % of HH-RLHF pairs): check the guidelines "
                "or the simulated assessors' temperatures"
            )
        self.records.append(
            StepRecord(f"r{r}-collect", "collect", Path(self.store), a.source, time.perf_counter() - t0, done)
        )
        late = a.deadline_h is not None and (now_utc() - opened).total_seconds() > a.deadline_h * 3600
        if done["share"] + 1e-9 < a.min_complete and not late:
            self.state["status"] = "waiting"
            self.save()
            raise Waiting(waiting_message(self.store, project, done, a.min_complete))


def waiting_message(store: str, project: str, done: dict, needed: float) -> str:
    return (
        f"waiting for labels: {done['complete']}/{done['items']} items of '{project}' complete "
        f"({done['share']:.0%}; the round goes on at {needed:.0%}).\n"
        f"  serve the app:  rlhf label store={store} project={project}\n"
        f"  add assessors:  rlhf users add NAME --store {store}\n"
        f"  then run the same `rlhf loop` command again: finished steps are skipped."
    )
