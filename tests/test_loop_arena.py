"""`promote_on: arena`: a round's verdict from the blind arena's votes of new against best — simulated
assessors vote there as they label, people are waited for like a round's labels — with an interval over
prompts; votes on answers other than the comparison's own do not count. Tiny models, fp32 (each trainer
sets bf16: false; compare samples with precision: float32)."""

import json
from pathlib import Path

import pytest
from support.looping import loop_config, write_loop_files
from support.rewards import liking_marker

from rlhf.compare.result import CompareResult
from rlhf.config import ConfigError, load_config
from rlhf.loop import Loop, Waiting
from rlhf.loop.commands import evidence_lines
from rlhf.loop.config import LoopConfig
from rlhf.loop.evidence import arena_votes, head_to_head, promotion
from rlhf.loop.simulate import SimulatedAssessor, vote
from rlhf.loop.summary import table
from rlhf.store.service import Store


def _battle(item_id, prompt, new_text, best_text, new_first=True):
    cands = [
        {"id": 10 * item_id + 1, "text": new_text, "source": {"policy": "r2-dpo"}},
        {"id": 10 * item_id + 2, "text": best_text, "source": {"policy": "r1-dpo"}},
    ]
    return {"id": item_id, "prompt": prompt, "candidates": cands if new_first else cands[::-1]}


def _vote(item_id, new_rank, best_rank):
    return {
        "item_id": item_id,
        "kind": "pairwise",
        "values": {10 * item_id + 1: new_rank, 10 * item_id + 2: best_rank},
    }


def test_arena_votes_count_the_comparisons_own_answers_and_the_interval_resamples_prompts():
    key = lambda p: json.dumps(p)  # noqa: E731 - the answers file's prompt as JSON text
    answers = {
        key("p1"): {"r2-dpo": "new one", "r1-dpo": "old one"},
        key("p2"): {"r2-dpo": "new two", "r1-dpo": "old two"},
    }
    items = [
        _battle(1, "p1", "new one", "old one"),
        _battle(2, "p2", "new two", "old two", new_first=False),
        _battle(3, "p2", "an older answer of r2-dpo", "old two"),  # stale: not this comparison's answer
        {"id": 4, "prompt": "p1", "candidates": [  # another pair of checkpoints
            {"id": 41, "text": "new one", "source": {"policy": "r2-dpo"}},
            {"id": 42, "text": "start", "source": {"policy": "r0-sft"}}]},
    ]  # fmt: skip
    annotations = [
        _vote(1, 1, 2),  # new won
        _vote(1, 1, 2),  # new won (a second assessor, same battle)
        _vote(2, 2, 1),  # new lost
        _vote(2, 1, 1),  # tie
        _vote(3, 1, 2),  # stale: ignored
        {"item_id": 4, "kind": "pairwise", "values": {41: 1, 42: 2}},  # not new vs best: ignored
    ]
    votes = arena_votes(items, annotations, answers, "r2-dpo", "r1-dpo")
    assert sorted(votes) == [(key("p1"), 1.0), (key("p1"), 1.0), (key("p2"), 0.0), (key("p2"), 0.5)]
    h = head_to_head(votes, seed=0, resamples=200)
    assert h["rate"] == pytest.approx(2.5 / 4)
    assert (h["n"], h["prompts"]) == (4, 2)
    # two prompts: a resample holds p1 twice (1.0), p2 twice (0.25) or both (0.625)
    assert h["ci95"] == [pytest.approx(0.25), pytest.approx(1.0)]
    assert head_to_head([]) == {"rate": None, "ci95": None, "n": 0, "prompts": 0}


def test_head_to_head_interval_covers_the_truth_at_its_level():
    """Planted: on each of 64 prompts the new policy wins a battle with probability 0.6; three assessors
    vote on it, agreeing with each other more than chance (a shared per-prompt effect). The 95 % interval
    over prompts covers 0.6 in about 95 % of 200 simulated arenas (a per-vote interval would not)."""
    import numpy as np

    rng = np.random.default_rng(0)
    covered = 0
    for sim in range(200):
        votes = []
        for p in range(64):
            clear = rng.random() < 0.6  # the battle's answer pair: does new's answer win for most people?
            for _ in range(3):
                votes.append((f"p{p}", float(rng.random() < (0.9 if clear else 0.1))))
        truth = 0.6 * 0.9 + 0.4 * 0.1
        lo, hi = head_to_head(votes, seed=sim, resamples=400)["ci95"]
        covered += lo <= truth <= hi
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_promotion_on_arena_votes_names_its_evidence():
    res = CompareResult(["r1-dpo", "r2-dpo"], "r1-dpo", "r1-dpo", prompts=64, checkpoints={})
    arena = {"rate": 0.63, "ci95": [0.55, 0.71], "n": 192, "prompts": 64}
    yes = promotion("arena", 0.5, res, "r1-dpo", "r2-dpo", arena=arena)
    assert yes.promoted and yes.evidence == "blind arena votes"
    assert yes.text == (
        "r2-dpo wins 63% [55%, 71%] of 192 blind arena votes against r1-dpo (64 held-out prompts) — promoted"
    )
    no = promotion("arena", 0.5, res, "r1-dpo", "r2-dpo", arena={**arena, "ci95": [0.48, 0.7]})
    assert not no.promoted and "lower bound 48% does not clear 50%" in no.text
    none = promotion("arena", 0.5, res, "r1-dpo", "r2-dpo", arena=head_to_head([]))
    assert not none.promoted and "no arena votes against r1-dpo" in none.text


def test_promote_on_arena_needs_the_arena():
    with pytest.raises(ConfigError, match="promote_on: arena .* Set arena: true"):
        load_config(LoopConfig, None, ["promote_on=arena", "arena=false"])


@pytest.mark.slow
def test_a_round_promoted_on_arena_votes_simulated_then_people(tmp_path, tiny_model_dir):
    prompts, sft = write_loop_files(tmp_path)
    arena = {"stages.compare.arena": {"battles_per_prompt": 3, "overlap": 3}}
    cfg = loop_config(
        tmp_path, tiny_model_dir, prompts, sft, rounds=1, promote_on="arena", arena=True, **arena
    )
    loop = Loop(cfg, source="test")
    state = loop.run()
    r1 = state["rounds"]["1"]
    assert "18 votes, new wins" in next(
        line for line in table(loop.records).splitlines() if "r1-arena" in line
    )
    # round 1: start == best == r0-sft, 6 held-out prompts, every battle judged by the 3 assessors
    assert (r1["arena"]["n"], r1["arena"]["prompts"]) == (18, 6)
    assert r1["verdict"]["evidence"] == "blind arena votes"
    assert "blind arena votes against r0-sft (6 held-out prompts)" in r1["verdict"]["text"]
    lines = evidence_lines(r1, Path(r1["compare_run"]))
    assert lines[0] == f"verdict (blind arena votes on held-out prompts): {r1['verdict']['text']}"
    assert lines[1].startswith("human slice (implicit reward, never trained on): r1-dpo agrees with ")
    assert any(line.startswith("oracle (the simulated assessors' noise-free taste)") for line in lines)

    # with people: the round waits for the arena like for its labels, then judges on their votes
    people = loop_config(
        tmp_path, tiny_model_dir, prompts, sft, rounds=1, promote_on="arena", arena=True,
        **arena, **{"run.name": "hp", "assessors.source": "human"},
    )  # fmt: skip
    db = str(tmp_path / "runs" / "hp" / "labels.db")
    with pytest.raises(Waiting, match="waiting for labels"):
        Loop(people, source="test").run()
    project = json.loads((tmp_path / "runs" / "hp" / "loop.json").read_text())["rounds"]["1"]["project"]
    ann, bob = SimulatedAssessor("ann", 0.1), SimulatedAssessor("bob", 0.1)
    with Store(db, create=False) as store:
        vote(store, project, [ann, bob], liking_marker)
    with pytest.raises(Waiting, match=r"waiting for arena votes: 0/6 battles of 'hp-r1-arena' judged") as w:
        Loop(people, source="test").run()
    assert f"rlhf label store={db} project=hp-r1-arena arena=true" in str(w.value)
    with Store(db, create=False) as store:
        assert (
            sum(vote(store, "hp-r1-arena", [ann, bob, SimulatedAssessor("cy", 0.1)], liking_marker).values())
            == 18
        )
    state = Loop(people, source="test").run()
    assert state["status"] == "completed"
    assert state["rounds"]["1"]["arena"]["n"] == 18
