"""Honest effort and assessors who learn: the time each judgement took is stored, fast assessors are flagged,
judgements under a floor can be left out of exports (counted), and gold items give feedback."""

from datetime import timedelta

from labeling_ui import handlers
from rlhf.store.export import ExportSettings, export_rows
from rlhf.store.quality import gold_over_time, project_stats
from rlhf.store.service import Store, now_utc


def setup(tmp_path, gold=False):
    s = Store(str(tmp_path / "e.db"))
    s.create_project("p", "pairwise", priority="fifo")
    items = [
        {"external_id": f"i{k}", "prompt": f"q{k}", "candidates": [{"text": f"a{k}"}, {"text": f"b{k}"}]}
        for k in range(6)
    ]
    if gold:
        items[0]["gold"] = {"best": 1, "note": "b0 answers the question; a0 does not."}
    s.add_items("p", items)
    for u in ("ann", "bob"):
        s.add_user(u, "password123")
    return s


def judge(s, user, seconds, choice="A"):
    t0 = now_utc()
    lease = s.next_item("p", user, now=t0)
    s.submit(
        "p",
        user,
        lease.item_id,
        {"choice": choice},
        client_token=f"{user}{lease.item_id}",
        now=t0 + timedelta(seconds=seconds),
    )
    return lease


def test_durations_are_stored_and_fast_assessors_flagged(tmp_path):
    s = setup(tmp_path)
    for _ in range(3):
        judge(s, "ann", 20.0)
        judge(s, "bob", 1.5)
    anns = s.annotations("p")
    assert sorted({round(a["seconds"], 1) for a in anns}) == [1.5, 20.0]
    stats = project_stats(s.items("p"), anns, "pairwise", too_fast_ratio=0.25)
    assert stats["median_seconds"] == (1.5 + 20.0) / 2
    assert stats["assessors"]["bob"]["too_fast"]
    assert not stats["assessors"]["ann"]["too_fast"]
    assert stats["assessors"]["bob"]["median_seconds"] == 1.5
    rows, acct = export_rows(s.items("p"), anns, "pairwise", ExportSettings(min_seconds=3))
    assert acct["votes_too_fast"] == 3
    assert acct["votes_in"] == 6
    assert len(rows) == 3
    assert {r["item_id"] for r in rows} == {"i0", "i2", "i4"}  # ann's items (bob's 3 judged other items)
    s.close()


def test_gold_items_give_feedback_and_accuracy_over_time(tmp_path):
    s = setup(tmp_path, gold=True)
    view = handlers.next_view(s, "p", "ann")
    assert view.item_id is not None
    shown = s.shown_order("p", "ann", view.item_id)
    gold_item = next(it for it in s.items("p") if it["is_gold"])
    assert view.item_id == gold_item["id"]  # fifo: the gold item comes first
    best_letter = "AB"[shown.index(gold_item["candidates"][1]["id"])]
    wrong = "B" if best_letter == "A" else "A"
    out = handlers.submit(s, "p", "ann", view.item_id, client_token="t1", choice=wrong)
    assert out.outcome == "saved"
    assert f"Gold check: the expected best answer was {best_letter}." in out.message
    assert "b0 answers the question" in out.message
    view = handlers.next_view(s, "p", "bob")
    shown = s.shown_order("p", "bob", view.item_id)
    right = "AB"[shown.index(gold_item["candidates"][1]["id"])]
    out = handlers.submit(s, "p", "bob", view.item_id, client_token="t2", choice=right)
    assert f"Gold check: you matched the expected answer ({right})." in out.message
    plain = handlers.submit(s, "p", "bob", out.item_id, client_token="t3", choice="A")
    assert plain.message == "Saved."  # not a gold item: no feedback
    over = gold_over_time(s.items("p"), s.annotations("p"))
    assert over["ann"] == {"gold_seen": 1, "accuracy": 0.0, "last_10": 0.0}
    assert over["bob"]["accuracy"] == 1.0
    s.close()
