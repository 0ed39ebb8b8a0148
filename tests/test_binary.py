"""Unpaired feedback end to end: the `binary` task in the store (overlap, leases, no repeats, gold,
agreement), `rlhf generate` opening a binary project (K = 1), unpaired export of binary / Likert / ranked
projects with the balance, production feedback imported with every row accounted for, and the acceptance
chain: two assessors judge binary items through the store API -> export -> KTO moves the weights (fp32)."""

import json
import uuid

import pytest
import torch
from support.data import write_jsonl

from rlhf.config import load_config
from rlhf.errors import ConfigError, DataError
from rlhf.preferences import feedback_to_unpaired, import_unpaired, rating_key
from rlhf.stages import export, generate, importer, kto
from rlhf.store import ExportSettings, export_project, export_unpaired, project_stats, values
from rlhf.store.judgements import JudgementError
from rlhf.store.service import StoreError

PW = "password123"
GOOD_WORDS = ["yes please thanks good answer", "the sun is hot today", "one two three four five"]
BAD_WORDS = ["no", "bad bad bad", "cold river stone"]


def binary_project(store, *, n_items=4, overlap=2, gold=None, users=("ann", "bob")):
    store.create_project("thumbs", "binary", overlap=overlap, rationale="optional")
    store.add_items(
        "thumbs",
        [
            {
                "external_id": f"i{i}",
                "prompt": [{"role": "user", "content": f"question {i}"}],
                "candidates": [{"text": f"answer {i}", "source": {"policy": "m"}}],
                "gold": gold if i == 0 else None,
            }
            for i in range(n_items)
        ],
    )
    for u in users:
        store.add_user(u, PW)


def judge_all(store, user, label_of):
    """The assessor judges every item the store offers; label_of(external id) -> good | bad."""
    seen = []
    while (lease := store.next_item("thumbs", user)) is not None:
        assert len(lease.candidates) == 1
        store.submit(
            "thumbs",
            user,
            lease.item_id,
            {"label": label_of(lease.external_id)},
            client_token=uuid.uuid4().hex,
        )
        seen.append(lease.external_id)
    return seen


# -- the store ----------------------------------------------------------------------------------------------


def test_binary_values_and_refusals():
    assert values("binary", {"label": "good"}, [7]) == {7: 1.0}
    assert values("binary", {"label": "bad"}, [7]) == {7: 0.0}
    with pytest.raises(JudgementError, match="judge the answer good or bad"):
        values("binary", {"label": "meh"}, [7])
    with pytest.raises(JudgementError, match="a binary item has one answer"):
        values("binary", {"label": "good"}, [7, 8])


def test_binary_items_hold_one_answer_and_gold_is_a_label(store):
    store.create_project("thumbs", "binary")
    two = {"external_id": "x", "prompt": "p", "candidates": [{"text": "a"}, {"text": "b"}]}
    with pytest.raises(
        StoreError, match="binary project 'thumbs': item 'x' needs exactly 1 answer, it has 2"
    ):
        store.add_items("thumbs", [two])
    bad_gold = {"external_id": "g", "prompt": "p", "candidates": [{"text": "a"}], "gold": {"best": 0}}
    with pytest.raises(StoreError, match='a binary gold answer is {"label": "good"} or {"label": "bad"}'):
        store.add_items("thumbs", [bad_gold])


def test_two_assessors_overlap_no_repeat_agreement_and_gold(store):
    binary_project(
        store, n_items=5, overlap=2, gold={"label": "good", "note": "it answers"}, users=("ann", "bob", "cy")
    )
    ann = judge_all(store, "ann", lambda e: "good" if e in ("i0", "i1", "i4") else "bad")
    bob = judge_all(store, "bob", lambda e: "good" if e in ("i1", "i2") else "bad")
    assert sorted(ann) == sorted(bob) == ["i0", "i1", "i2", "i3", "i4"]
    assert judge_all(store, "cy", lambda e: "good") == [
        "i0"
    ]  # the rest has its 2 judgements; gold goes to all
    gold_item = next(it for it in store.items("thumbs") if it["external_id"] == "i0")
    assert store.gold_info(gold_item["id"]) == {"label": "good", "note": "it answers"}
    stats = project_stats(store.items("thumbs"), store.annotations("thumbs"), "binary")
    assert stats["alpha"]["level"] == "nominal"
    # by hand: coincidences o_GG 3, o_BB 2, o_GB = o_BG 3 -> n_G 6, n_B 5, n 11;
    # alpha = 1 - (n - 1) * 6 / (2 * 6 * 5) = 0 (as much disagreement as chance)
    assert stats["alpha"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert stats["assessors"]["ann"]["gold_accuracy"] == 1.0
    assert stats["assessors"]["bob"]["gold_accuracy"] == 0.0
    assert stats["assessors"]["cy"]["gold_seen"] == 1


def test_binary_export_majority_ties_counted_and_balance(store):
    binary_project(store, n_items=5, overlap=2)
    judge_all(store, "ann", lambda e: "good" if e in ("i0", "i1", "i4") else "bad")
    judge_all(store, "bob", lambda e: "good" if e in ("i0", "i1", "i2") else "bad")
    with pytest.raises(
        ConfigError, match="binary project .* holds no pairs. Export it with format: unpaired"
    ):
        export_project(store, "thumbs", ExportSettings())
    rows, acct = export_project(store, "thumbs", ExportSettings(format="unpaired"))
    assert {r["item_id"]: r["label"] for r in rows} == {"i0": True, "i1": True, "i3": False}
    assert acct["items_dropped"] == {"tie": 2}
    assert acct["balance"] == {"desirable": 2, "undesirable": 1, "desirable_share": 0.6667}
    assert rows[0]["completion"] == [{"role": "assistant", "content": "answer 0"}]
    per_vote, acct = export_project(store, "thumbs", ExportSettings(format="unpaired", aggregate="per_vote"))
    assert len(per_vote) == 10
    assert acct["balance"]["desirable"] == 6


# -- unpaired export from other tasks (pure) ----------------------------------------------------------------


def item(iid, k=3, prompt="p"):
    return {
        "id": iid,
        "external_id": f"e{iid}",
        "prompt": prompt,
        "is_gold": False,
        "gold": None,
        "candidates": [{"id": iid * 10 + j, "text": f"t{iid}.{j}"} for j in range(k)],
    }


def vote(iid, who, vals, kind, payload=None):
    return {"item_id": iid, "assessor": who, "kind": kind, "values": vals, "payload": payload or {}}


def test_likert_thresholds_on_the_mean_score():
    anns = [vote(1, "a", {10: 7, 11: 4, 12: 1}, "likert"), vote(1, "b", {10: 5, 11: 4, 12: 4}, "likert")]
    rows, acct = export_unpaired([item(1)], anns, "likert", ExportSettings(format="unpaired"))
    assert {r["id"]: r["label"] for r in rows} == {"e1:10": True, "e1:12": False}  # means 6, 4, 2.5
    assert acct["answers_dropped"] == {"between thresholds": 1}
    assert acct["balance"]["desirable_share"] == 0.5
    with pytest.raises(ConfigError, match="'likert_undesirable_at' .* must be below 'likert_desirable_at'"):
        ExportSettings(likert_desirable_at=4, likert_undesirable_at=4)


def test_ranked_pairs_become_unpaired_only_when_asked(store):
    anns = [vote(1, "a", {10: 1, 11: 2, 12: 3}, "ranking"), vote(1, "b", {10: 1, 11: 3, 12: 2}, "ranking")]
    settings = ExportSettings(format="unpaired", unpaired_from_pairs=True)
    rows, acct = export_unpaired([item(1)], anns, "ranking", settings)
    # majority pairs: 10>11, 10>12 (11 vs 12: no majority): 10 desirable, 11 and 12 undesirable
    assert {r["id"]: r["label"] for r in rows} == {"e1:10": True, "e1:11": False, "e1:12": False}
    one = [vote(1, "a", {10: 1, 11: 2, 12: 3}, "ranking")]
    rows, acct = export_unpaired([item(1)], one, "ranking", settings)
    assert {r["id"]: r["label"] for r in rows} == {"e1:10": True, "e1:12": False}  # 11 is in the middle
    assert acct["answers_dropped"] == {"chosen in one pair, rejected in another": 1}
    store.create_project("rank", "ranking")
    with pytest.raises(ConfigError, match="Set unpaired_from_pairs: true"):
        export_project(store, "rank", ExportSettings(format="unpaired"))


def test_an_improved_response_is_desirable():
    edit = {"label": "bad", "edit": {"base": 10, "candidate": 11}}
    it = item(1, k=2)  # candidate 11 stands for the assessor's rewrite
    rows, _ = export_unpaired(
        [it], [vote(1, "a", {10: 0.0}, "binary", edit)], "binary", ExportSettings(format="unpaired")
    )
    assert {r["id"]: r["label"] for r in rows} == {"e1:10": False, "e1:11": True}


# -- rlhf generate opens a binary project --------------------------------------------------------------------


def test_generate_opens_a_binary_project_with_one_answer_per_item(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="a binary project judges one answer per item: set k=1"):
        load_config(generate.GenerateStageConfig, None, ["project.task=binary", "k=2"])
    with pytest.raises(ConfigError, match="a ranking project compares answers: k must be at least 2"):
        load_config(generate.GenerateStageConfig, None, ["project.task=ranking", "k=1"])
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "p1", "prompt": "the cat sat"}, {"id": "p2", "prompt": "hello"}]
    )
    db = str(tmp_path / "g.db")
    over = {
        "run.output_root": str(tmp_path / "runs"),
        "policies": f"[{tiny_model_dir}]",
        "data.prompts": prompts,
        "store": db,
        "k": 1,
        "project.name": "thumbs",
        "project.task": "binary",
        "project.overlap": 2,
        "sampling.max_new_tokens": 4,
    }
    run = generate.run(load_config(generate.GenerateStageConfig, None, [f"{k}={v}" for k, v in over.items()]))
    assert run.read_manifest()["result"]["candidates"] == 2
    from rlhf.store import Store

    with Store(db, create=False) as s:
        assert s.project("thumbs").task == "binary"
        assert [len(it["candidates"]) for it in s.items("thumbs")] == [1, 1]


# -- production feedback -------------------------------------------------------------------------------------


def conv(q, a):
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def test_rating_keys_and_one_row():
    assert [rating_key(v) for v in (True, 5, 5.0, 4.5, " Thumbs_Up ", "", None)] == [
        "true",
        "5",
        "5",
        "4.5",
        "thumbs_up",
        None,
        None,
    ]
    row, reason = feedback_to_unpaired({"messages": conv("hi", "hello"), "rating": "UP"}, {"up": "desirable"})
    assert reason is None
    assert row == {
        "prompt": conv("hi", "hello")[:1],
        "completion": conv("hi", "hello")[1:],
        "label": True,
        "rating": "up",
    }


def test_production_feedback_imports_with_every_row_accounted_for(tmp_path):
    rows = [
        {
            "id": "up",
            "messages": conv("how do I boil an egg?", "Boil it for 7 minutes."),
            "rating": "thumbs_up",
        },
        {"id": "down", "messages": conv("capital of France?", "Berlin."), "rating": "thumbs_down"},
        {"id": "star5", "messages": conv("name a colour", "Blue."), "rating": 5},
        {"id": "star3", "messages": conv("a joke?", "No."), "rating": 3},
        {"id": "bool", "messages": conv("2+2?", "5"), "rating": False},
        {"id": "meh", "messages": conv("hi", "hello"), "rating": "meh"},
        {"id": "no-rating", "messages": conv("hi", "hello")},
        {"id": "null-rating", "messages": conv("hi", "hello"), "rating": None},
        {"id": "no-answer", "messages": [{"role": "user", "content": "hi"}], "rating": "up"},
        {"id": "empty", "messages": conv("hi", "  "), "rating": "up"},
        {"id": "list-rating", "messages": conv("hi", "hello"), "rating": [1]},
    ]
    src = write_jsonl(tmp_path / "feedback.jsonl", [*rows, "{not json"])
    over = {"run.output_root": str(tmp_path / "runs"), "source": src, "kind": "feedback"}
    run = importer.run(load_config(importer.ImportStageConfig, None, [f"{k}={v}" for k, v in over.items()]))
    acct = run.read_manifest()["accounting"]
    assert acct["rows_in"] == 12 == acct["rows_kept"] + acct["rows_dropped_by_rule"] + acct["rows_rejected"]
    assert acct["rows_kept"] == 4
    assert acct["dropped_by_rule"] == {"rating 3 maps to drop": 1}
    assert acct["balance"] == {"desirable": 2, "undesirable": 2, "desirable_share": 0.5}
    rejected = {
        r["id"]: r["reason"] for r in map(json.loads, run.output("rejected").read_text().splitlines())
    }
    assert {k: v.split(":")[0] for k, v in rejected.items()} == {
        "meh": "unmapped rating",
        "no-rating": "missing columns",
        "null-rating": "missing rating",
        "no-answer": "bad messages",
        "empty": "empty content",
        "list-rating": "bad rating",
        "line 12": "invalid JSON",
    }
    assert "'meh' is in none of feedback.desirable / undesirable / drop" in rejected["meh"]
    assert [json.loads(x)["id"] for x in run.output("dropped").read_text().splitlines()] == ["star3"]
    kept, _ = import_unpaired(
        str(run.path)
    )  # the run declares its rows: `rlhf kto data.train=<run>` reads them
    assert [r["label"] for r in kept] == [True, False, True, False]


def test_feedback_lists_from_config_and_hf_dataset_rows(tmp_path):
    from datasets import Dataset

    Dataset.from_list(
        [
            {"conversation": conv("hi", "hello"), "stars": 1},
            {"conversation": conv("bye", "goodbye"), "stars": 2},
        ]
    ).save_to_disk(str(tmp_path / "ds"))
    over = {
        "run.output_root": str(tmp_path / "runs"),
        "source": str(tmp_path / "ds"),
        "kind": "feedback",
        "feedback.messages": "conversation",
        "feedback.rating": "stars",
        "feedback.desirable": "[2]",
        "feedback.undesirable": "[1]",
        "feedback.drop": "[]",
    }
    run = importer.run(load_config(importer.ImportStageConfig, None, [f"{k}={v}" for k, v in over.items()]))
    assert run.read_manifest()["accounting"]["balance"]["desirable"] == 1
    with pytest.raises(ConfigError, match="rating '1' is in both 'feedback.undesirable' and 'feedback.drop'"):
        load_config(importer.ImportStageConfig, None, ["source=x", "feedback.drop=[1.0]"])
    # YAML's `true` and `1` stay two ratings (in lists; as mapping keys Python would merge them)
    table = load_config(importer.ImportStageConfig, None, ["source=x"]).feedback.table
    assert (table["true"], table["1"]) == ("desirable", "undesirable")


def test_feedback_can_be_cleaned_of_pii_before_training(tmp_path):
    from rlhf.stages import clean

    rows = [
        {
            "id": "a",
            "messages": conv("My email is ann@example.org, reply there", "Sure, I will write."),
            "rating": "up",
        },
        {
            "id": "b",
            "messages": conv("What is the boiling point of water?", "Fifty degrees."),
            "rating": "down",
        },
    ]
    src = write_jsonl(tmp_path / "fb.jsonl", rows)
    imp = importer.run(
        load_config(
            importer.ImportStageConfig,
            None,
            [f"run.output_root={tmp_path / 'runs'}", f"source={src}", "kind=feedback"],
        )
    )
    over = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": "clean-fb",
        "data.source": str(imp.path),
        "dedup.fuzzy.enabled": False,
        "screening.enabled": False,
    }
    cleaned = clean.run(load_config(clean.CleanStageConfig, None, [f"{k}={v}" for k, v in over.items()]))
    kept, acct = import_unpaired(str(cleaned.path))
    assert acct.rows_kept == 2
    assert [r["label"] for r in kept] == [True, False]
    assert "[EMAIL]" in kept[0]["prompt"][0]["content"]
    assert "ann@example.org" not in json.dumps(kept)


def test_unpaired_import_refuses_bad_labels(tmp_path):
    src = write_jsonl(tmp_path / "u.jsonl", [{"prompt": "q", "completion": "a", "label": "yes"}])
    with pytest.raises(DataError, match="bad label: expected true .desirable. or false"):
        import_unpaired(src)


# -- acceptance: store API -> export -> KTO ------------------------------------------------------------------


def test_binary_judgements_by_two_assessors_export_and_kto_moves_the_weights(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rlhf.store import Store

    db = str(tmp_path / "labels.db")
    with Store(db) as s:
        s.create_project("thumbs", "binary", overlap=2)
        s.add_items(
            "thumbs",
            [
                {"external_id": f"g{i}", "prompt": f"question {i}", "candidates": [{"text": t}]}
                for i, t in enumerate(GOOD_WORDS + BAD_WORDS)
            ],
        )
        for u in ("ann", "bob"):
            s.add_user(u, PW)
        verdict = lambda e: "good" if int(e[1:]) < len(GOOD_WORDS) else "bad"  # noqa: E731
        for u in ("ann", "bob"):
            assert len(judge_all(s, u, verdict)) == 6
    exp_over = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": "exp",
        "store": db,
        "project": "thumbs",
        "format": "unpaired",
    }
    exp = export.run(load_config(export.ExportStageConfig, None, [f"{k}={v}" for k, v in exp_over.items()]))
    acct = exp.read_manifest()["accounting"]
    assert acct["balance"] == {"desirable": 3, "undesirable": 3, "desirable_share": 0.5}
    kto_over = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": "kto",
        "model.name": tiny_model_dir,
        "data.train": str(exp.path),
        "data.max_length": 64,
        "trainer.max_steps": 2,
        "trainer.per_device_train_batch_size": 3,
        "trainer.learning_rate": 1e-2,
        "trainer.save_strategy": "no",
        "trainer.gradient_checkpointing": False,
        "trainer.report_to": "none",
        "trainer.bf16": False,
        "drift.every_steps": 0,
    }
    run = kto.run(load_config(kto.KTOStageConfig, None, [f"{k}={v}" for k, v in kto_over.items()]))
    assert run.read_manifest()["data"]["train"]["rows_trained"] == 6
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(run.model_dir).state_dict()
    assert sum(not torch.equal(before[k], after[k]) for k in before) >= len(before) - 1
