import pytest

from rlhf.preferences import to_one_format
from rlhf.stages.export import ExportStageConfig
from rlhf.store.export import ExportSettings, export_rows
from rlhf.store.judgements import JudgementError, preferences, values
from rlhf.store.quality import gold_failures, top_choice


def item(iid, k=3, prompt="p", gold=None):
    return {
        "id": iid,
        "external_id": f"e{iid}",
        "prompt": prompt,
        "is_gold": gold is not None,
        "gold": gold,
        "candidates": [{"id": iid * 10 + j, "text": f"t{iid}.{j}"} for j in range(k)],
    }


def vote(iid, who, vals, kind="ranking", choice=None):
    return {"item_id": iid, "assessor": who, "kind": kind, "values": vals, "payload": {"choice": choice}}


def test_values_per_task():
    assert values("pairwise", {"choice": "B"}, [5, 6]) == {5: 2, 6: 1}
    assert values("pairwise", {"choice": "tie"}, [5, 6]) == {5: 1, 6: 1}
    assert values("ranking", {"ranking": [3, 1, 2]}, [1, 2, 3]) == {3: 1, 1: 2, 2: 3}
    assert values("likert", {"scores": {"1": 7, "2": 3}}, [1, 2]) == {1: 7.0, 2: 3.0}
    with pytest.raises(JudgementError, match="whole numbers 1..7"):
        values("likert", {"scores": {"1": 8, "2": 3}}, [1, 2])
    with pytest.raises(JudgementError, match="choose one of A, B, tie, both_bad"):
        values("pairwise", {"choice": "C"}, [1, 2])


def test_kwise_to_pairs_counts():
    ranks = {1: 1, 2: 2, 3: 3, 4: 4}
    pairs, ties = preferences("ranking", ranks)
    assert len(pairs) == 6
    assert ties == 0
    assert (1, 4) in pairs
    assert (4, 1) not in pairs
    pairs, _ = preferences("ranking", ranks, mode="best_vs_others")
    assert pairs == [(1, 2), (1, 3), (1, 4)]
    pairs, ties = preferences("likert", {1: 5.0, 2: 5.0, 3: 2.0})
    assert sorted(pairs) == [(1, 3), (2, 3)]
    assert ties == 1


def test_majority_margin_and_accounting():
    items = [item(1), item(2, k=2), item(3), item(4, gold={"best": 0})]
    anns = [
        vote(1, "a", {10: 1, 11: 2, 12: 3}),
        vote(1, "b", {10: 1, 11: 3, 12: 2}),
        vote(1, "c", {10: 2, 11: 1, 12: 3}),
        vote(2, "a", {20: 1, 21: 1}, kind="pairwise", choice="tie"),
        vote(4, "a", {40: 1, 41: 2, 42: 3}),
    ]
    rows, acct = export_rows(items, anns, "ranking", ExportSettings(margin=True))
    # item 1: 10>11 (2 of 3), 10>12 (3 of 3), 11 vs 12: 11>12 twice (a, c), 12>11 once (b)
    got = {(r["chosen"], r["rejected"]): r["margin"] for r in rows}
    assert got == {
        ("t1.0", "t1.1"): pytest.approx(1 / 3),
        ("t1.0", "t1.2"): 1.0,
        ("t1.1", "t1.2"): pytest.approx(1 / 3),
    }
    assert acct["items_in"] == 4
    assert acct["items_exported"] == 1
    assert acct["items_dropped"] == {"only ties": 1, "no annotations": 1, "gold item": 1}
    assert acct["items_in"] == acct["items_exported"] + sum(acct["items_dropped"].values())
    assert acct["pairs_dropped"] == {"tie": 1}
    assert acct["pairs_out"] == 3


def test_even_split_has_no_majority_and_per_vote_keeps_both():
    items = [item(1, k=2)]
    anns = [vote(1, "a", {10: 1, 11: 2}), vote(1, "b", {10: 2, 11: 1})]
    rows, acct = export_rows(items, anns, "ranking", ExportSettings())
    assert rows == []
    assert acct["items_dropped"] == {"no majority": 1}
    assert acct["pairs_dropped"] == {"no majority": 1}
    rows, acct = export_rows(items, anns, "ranking", ExportSettings(aggregate="per_vote"))
    assert [(r["chosen"], r["assessor"]) for r in rows] == [("t1.0", "a"), ("t1.1", "b")]
    rows, acct = export_rows(items, anns, "ranking", ExportSettings(exclude_assessors=["b"]))
    assert len(rows) == 1
    assert acct["votes_excluded_assessors"] == 1


def test_conversational_prompts_and_one_format():
    msgs = [{"role": "user", "content": "hi"}]
    rows, _ = export_rows(
        [item(1, k=2, prompt=msgs)], [vote(1, "a", {10: 1, 11: 2})], "ranking", ExportSettings()
    )
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "t1.0"}]
    mixed = to_one_format(rows + [{"prompt": "q", "chosen": "x", "rejected": "y"}])
    assert mixed[1]["prompt"] == [{"role": "user", "content": "q"}]
    assert mixed[1]["rejected"] == [{"role": "assistant", "content": "y"}]


def test_gold_failures_and_top_choice():
    items = [item(1, gold={"best": 0}), item(2, gold={"best": 2})]
    anns = [
        vote(1, "good", {10: 1, 11: 2, 12: 3}),
        vote(2, "good", {20: 3, 21: 2, 22: 1}),
        vote(1, "bad", {10: 3, 11: 1, 12: 2}),
        vote(2, "bad", {20: 1, 21: 2, 22: 3}),
    ]
    assert gold_failures(items, anns, 0.5) == {"bad": 0.0}
    assert top_choice(vote(1, "x", {10: 1, 11: 1}, kind="pairwise")) is None
    assert top_choice(vote(1, "x", {10: 2.0, 11: 6.0}, kind="likert")) == 11


def test_export_config_checks():
    from rlhf.config import load_config
    from rlhf.errors import ConfigError

    with pytest.raises(ConfigError, match="'aggregate' must be one of majority, per_vote"):
        load_config(ExportStageConfig, None, ["aggregate=mean"])


def test_two_admin_exports_in_the_same_second_do_not_collide(tmp_path):
    from labeling_ui.admin import export_to_run
    from rlhf.store.service import Store

    with Store(str(tmp_path / "e.db")) as s:
        s.create_project("p", "pairwise")
        s.add_items("p", [{"external_id": "x", "prompt": "q", "candidates": [{"text": "a"}, {"text": "b"}]}])
        s.add_user("ann", "password123")
        lease = s.next_item("p", "ann")
        s.submit("p", "ann", lease.item_id, {"choice": "A"}, client_token="t")
        first, second = (export_to_run(s, "p", str(tmp_path / "runs")) for _ in range(2))
    assert first.path != second.path
    assert (first.path / "COMPLETED").exists()
    assert (second.path / "COMPLETED").exists()
    assert first.output("preferences").read_text() == second.output("preferences").read_text() != ""


def test_items_flagged_unsafe_by_an_assessor_are_left_out_unless_asked():
    items = [item(1, k=2), item(2, k=2)]
    flagged = {**vote(1, "ann", {10: 1, 11: 2}, kind="pairwise", choice="A"), "flagged_unsafe": True}
    anns = [
        flagged,
        vote(1, "bob", {10: 1, 11: 2}, kind="pairwise", choice="A"),
        vote(2, "ann", {20: 2, 21: 1}, kind="pairwise", choice="B"),
    ]
    rows, acct = export_rows(items, anns, "pairwise", ExportSettings())
    assert [r["item_id"] for r in rows] == ["e2"]
    assert acct["items_dropped"] == {"flagged unsafe by an assessor": 1}
    assert acct["items_in"] == 2
    rows, acct = export_rows(items, anns, "pairwise", ExportSettings(include_flagged=True))
    assert len(rows) == 2
    assert acct["items_dropped"] == {}


def test_review_decisions_are_values_not_preferences():
    assert values("review", {"decision": "keep"}, [7]) == {7: 1.0}
    with pytest.raises(JudgementError, match="decide keep or drop"):
        values("review", {"decision": "maybe"}, [7])
