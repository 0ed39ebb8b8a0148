"""`rlhf loop` with `algorithm: kto`: each answer its own binary item judged good / bad by simulated assessors
(against the project's median answer), an unpaired export, KTO on the rows outside the human slice, no
reward model, and promotion judged on the held-out rows paired within their prompts.

Precision: fp32 on every CPU (the trainers set bf16: false; generate and compare sample in float32)."""

import json
import random

import pytest
from support.looping import TRAINER, loop_config, write_loop_files

from rlhf.config import ConfigError, load_config
from rlhf.loop import Loop
from rlhf.loop.config import LoopConfig
from rlhf.loop.labels import binary_items, describe, shortfall, slice_pairs, split_by_item
from rlhf.loop.simulate import SimulatedAssessor, agreement_rate, judgement, perceived
from rlhf.store.service import Store


def test_a_careful_binary_assessor_calls_answers_above_the_median_good():
    """P(good) = sigmoid((s - median) / T): at T -> 0 the label is the side of the median, at T = 1 a score
    one unit above the median is good with probability sigmoid(1) = 0.731 (within 3 standard errors)."""
    sure = SimulatedAssessor(temperature=1e-4)
    rng = random.Random(0)
    for score, want in ((0.3, "good"), (-0.3, "bad")):
        seen = {
            judgement("binary", [7], perceived(sure, [score, 0.0], ["x", ""], rng))["label"]
            for _ in range(50)
        }
        assert seen == {want}
    plain = SimulatedAssessor(temperature=1.0)
    n = 4000
    good = sum(
        judgement("binary", [7], perceived(plain, [1.0, 0.0], ["x", ""], rng))["label"] == "good"
        for _ in range(n)
    )
    p = 1 / (1 + 2.718281828459045**-1.0)
    assert abs(good / n - p) < 3 * (p * (1 - p) / n) ** 0.5


def test_agreement_counts_binary_labels():
    votes = [
        {"item_id": 1, "kind": "binary", "payload": {"label": "good"}, "values": {10: 1.0}},
        {"item_id": 1, "kind": "binary", "payload": {"label": "good"}, "values": {10: 1.0}},
        {"item_id": 2, "kind": "binary", "payload": {"label": "good"}, "values": {11: 1.0}},
        {"item_id": 2, "kind": "binary", "payload": {"label": "bad"}, "values": {11: 0.0}},
    ]
    assert agreement_rate(votes) == (0.5, 2)


def _row(prompt, completion, label, item):
    return {"item_id": item, "prompt": prompt, "completion": completion, "label": label}


def test_unpaired_rows_split_by_prompt_and_held_out_rows_pair_within_their_prompt():
    rows = [_row(f"p{i}", f"a{i}{j}", j == 0, f"i{i}#{j}") for i in range(40) for j in range(2)]
    train, held = split_by_item(rows, 0.3, seed=1)
    sides = {}
    for side, part in (("train", train), ("held", held)):
        for r in part:
            sides.setdefault(r["prompt"], set()).add(side)
    assert all(len(s) == 1 for s in sides.values())  # both answers of a prompt on the same side
    assert 0 < len(held) < len(rows)
    # hand-made: p1 has one good and two bad answers -> 2 pairs; p2 only good -> none; p3 the same text
    # labelled both ways -> skipped
    pairs = slice_pairs(
        [
            _row("p1", "g", True, "a"),
            _row("p1", "b1", False, "b"),
            _row("p1", "b2", False, "c"),
            _row("p2", "g", True, "d"),
            _row("p3", "same", True, "e"),
            _row("p3", "same", False, "f"),
        ]
    )
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("p1", "g", "b1"),
        ("p1", "g", "b2"),
    ]
    assert pairs[0]["id"] == "a>b"


def test_binary_items_and_the_labels_line():
    items = [{"external_id": "p1@g", "prompt": "q", "candidates": [{"text": "x"}, {"text": "y"}], "meta": {}}]
    out = binary_items(items)
    assert [(it["external_id"], it["candidates"][0]["text"], it["meta"]["answer"]) for it in out] == [
        ("p1@g#0", "x", 0),
        ("p1@g#1", "y", 1),
    ]
    counts = {
        "kto_train": {"r1": 12},
        "human_slice_rows": {"r1": 4},
        "human_slice": {"r1": 1},
        "decontaminated": {"kto_train": 0},
    }
    assert shortfall(counts, 1) is None
    assert "no labeled rows" in shortfall({**counts, "kto_train": {}}, 1)
    line = describe(counts)
    assert "KTO trains on 12 good/bad rows" in line and "from 4 held-out rows" in line


def test_kto_loop_settings_that_cannot_work_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="trains no reward model"):
        load_config(LoopConfig, None, ["algorithm=kto", "promote_on=reward_model"])
    files = write_loop_files(tmp_path)
    cfg = loop_config(tmp_path, "unused-model", *files, algorithm="kto", **{"stages.generate.k": 1})
    with pytest.raises(ConfigError, match="k must be at least 2"):
        Loop(cfg, source="test").check_stages()


KTO = {**TRAINER, "per_device_train_batch_size": 4}


@pytest.mark.slow
def test_a_kto_round_collects_binary_judgements_and_is_judged_on_held_out_ones(tmp_path, tiny_model_dir):
    prompts, sft = write_loop_files(tmp_path)
    cfg = loop_config(
        tmp_path,
        tiny_model_dir,
        prompts,
        sft,
        rounds=1,
        algorithm="kto",
        prompts_per_round=12,
        **{
            "labels.holdout_share": 0.35,
            "stages.generate.project.overlap": 3,  # three assessors, an odd number of votes: no ties
            "stages.kto": {"data": {"max_length": 64}, "drift": {"every_steps": 0}, "trainer": KTO},
        },
    )
    loop = Loop(cfg, source="test")
    state = loop.run()
    rnd = state["rounds"]["1"]
    done = {r.key: r.action for r in loop.records}
    assert "r1-reward" not in done and done["r1-kto"] == "ran"  # no reward model in a KTO round
    with Store(loop.store, create=False) as store:
        project = store.project(rnd["project"])
        items = store.items(rnd["project"])
        votes = store.annotations(rnd["project"])
    assert project.task == "binary"
    assert len(items) == 12 * 2 and all(
        len(it["candidates"]) == 1 for it in items
    )  # k = 2 answers, each an item
    assert len(votes) == 24 * 3 and {v["payload"]["label"] for v in votes} <= {"good", "bad"}
    # the scale of the taste: the median answer is the threshold, so both labels occur
    assert {v["payload"]["label"] for v in votes} == {"good", "bad"}
    export = json.loads((loop.dir / "r1-export" / "manifest.json").read_text())
    assert export["outputs"]["rows"]
    labels = loop.dir / "r1-labels"
    trained = [json.loads(x) for x in (labels / "kto_train.jsonl").read_text().splitlines()]
    assert trained and all(set(r) >= {"prompt", "completion", "label"} for r in trained)
    counts = rnd["labels"]
    assert sum(counts["kto_train"].values()) == len(trained)
    if (labels / "human_slice.jsonl").exists():
        pairs = [json.loads(x) for x in (labels / "human_slice.jsonl").read_text().splitlines()]
        held_prompts = {json.dumps(p["prompt"]) for p in pairs}
        assert not held_prompts & {json.dumps(r["prompt"]) for r in trained}  # never trained on
        assert rnd["verdict"]["n"] == len(pairs) == sum(counts["human_slice"].values())
    else:
        assert rnd["verdict"]["n"] == 0 and not rnd["verdict"]["promoted"]
    kto_manifest = json.loads((loop.dir / "r1-kto" / "manifest.json").read_text())
    assert kto_manifest["status"] == "completed"
