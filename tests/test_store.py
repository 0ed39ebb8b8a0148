import uuid
from datetime import timedelta

import pytest

from rlhf.store.judgements import JudgementError
from rlhf.store.service import StoreError, now_utc

PW = "password123"


def make_project(
    store, task="ranking", *, n_items=10, k=4, overlap=1, ttl=60, users=("a", "b", "c"), gold=None
):
    store.create_project("p", task, overlap=overlap, lease_ttl_s=ttl, guidelines="# Be fair")
    store.add_items(
        "p",
        [
            {
                "external_id": f"i{i}",
                "prompt": f"prompt {i}",
                "candidates": [{"text": f"answer {i}.{j}", "source": {"model": f"m{j}"}} for j in range(k)],
                "gold": (gold if i == 0 else None),
            }
            for i in range(n_items)
        ],
    )
    for u in users:
        store.add_user(u, PW)


def judge(task, lease):
    ids = [c["id"] for c in lease.candidates]
    if task == "ranking":
        return {"ranking": ids}
    if task == "pairwise":
        return {"choice": "A"}
    return {"scores": {str(c): 7 - i for i, c in enumerate(ids)}}


def label_all(store, user, task="ranking"):
    done = []
    while (lease := store.next_item("p", user)) is not None:
        store.submit("p", user, lease.item_id, judge(task, lease), client_token=uuid.uuid4().hex)
        done.append(lease.item_id)
    return done


def test_overlap_is_exact_and_never_repeats(store):
    users = [f"u{i}" for i in range(5)]
    make_project(store, overlap=3, users=users)
    per_user = {u: label_all(store, u) for u in users}
    for u, done in per_user.items():
        assert len(done) == len(set(done)), f"{u} got an item twice"
    anns = store.annotations("p")
    per_item = {}
    for a in anns:
        per_item.setdefault(a["item_id"], set()).add(a["assessor"])
    assert len(per_item) == 10
    assert all(len(v) == 3 for v in per_item.values())
    assert len(anns) == 30
    assert store.progress("p", "u0")["remaining"] == 0


def test_live_lease_is_returned_again_until_submitted(store):
    make_project(store)
    first = store.next_item("p", "a")
    assert store.next_item("p", "a").item_id == first.item_id
    assert [c["text"] for c in first.candidates] != []
    assert "source" not in first.candidates[0]


def test_expired_lease_is_reoffered_and_late_submit_refused(store):
    make_project(store, n_items=1, overlap=1, ttl=60)
    t0 = now_utc()
    lease = store.next_item("p", "a", now=t0)
    assert store.next_item("p", "b", now=t0 + timedelta(seconds=30)) is None
    later = t0 + timedelta(seconds=61)
    lease_b = store.next_item("p", "b", now=later)
    assert lease_b is not None
    assert lease_b.item_id == lease.item_id
    with pytest.raises(StoreError, match="expired and the item went to other assessors"):
        store.submit("p", "a", lease.item_id, judge("ranking", lease), client_token="late", now=later)
    store.submit("p", "b", lease_b.item_id, judge("ranking", lease_b), client_token="b1", now=later)
    assert store.next_item("p", "a", now=later) is None  # never the same item twice


def test_expired_lease_can_still_be_submitted_while_slot_free(store):
    make_project(store, n_items=1, overlap=1, ttl=60)
    t0 = now_utc()
    lease = store.next_item("p", "a", now=t0)
    store.submit(
        "p", "a", lease.item_id, judge("ranking", lease), client_token="t", now=t0 + timedelta(hours=1)
    )
    assert len(store.annotations("p")) == 1


def test_idempotent_resubmit_and_refusals(store):
    make_project(store)
    lease = store.next_item("p", "a")
    payload = judge("ranking", lease)
    first = store.submit("p", "a", lease.item_id, payload, client_token="tok-1")
    assert store.submit("p", "a", lease.item_id, payload, client_token="tok-1") == first
    assert len(store.annotations("p")) == 1
    with pytest.raises(StoreError, match="already submitted"):
        store.submit("p", "a", lease.item_id, payload, client_token="tok-2")
    with pytest.raises(StoreError, match="already used for another submit"):
        store.submit("p", "b", lease.item_id, payload, client_token="tok-1")
    with pytest.raises(StoreError, match="is not assigned to 'b'"):
        store.submit("p", "b", lease.item_id, payload, client_token="tok-3")


def test_ranking_must_be_a_permutation_and_is_atomic(store):
    make_project(store)
    lease = store.next_item("p", "a")
    ids = [c["id"] for c in lease.candidates]
    with pytest.raises(JudgementError, match="only one rank"):
        store.submit("p", "a", lease.item_id, {"ranking": [ids[0], ids[0], ids[1], ids[2]]}, client_token="x")
    with pytest.raises(JudgementError, match="rank all 4 candidates"):
        store.submit("p", "a", lease.item_id, {"ranking": ids[:3]}, client_token="y")
    assert store.annotations("p") == []
    store.submit("p", "a", lease.item_id, {"ranking": ids}, client_token="z")
    (ann,) = store.annotations("p")
    assert ann["values"] == {c: i + 1 for i, c in enumerate(ids)}


def test_skip_frees_the_slot_for_others(store):
    make_project(store, n_items=1, overlap=1)
    lease = store.next_item("p", "a")
    with pytest.raises(StoreError, match="say why"):
        store.skip("p", "a", lease.item_id, " ")
    store.skip("p", "a", lease.item_id, "not my language")
    assert store.next_item("p", "a") is None
    assert store.next_item("p", "b").item_id == lease.item_id


def test_gold_items_go_to_every_assessor(store):
    make_project(store, n_items=2, overlap=1, gold={"ranking": "first"}, users=("a", "b"))
    a_items, b_items = label_all(store, "a"), label_all(store, "b")
    gold_id = next(it["id"] for it in store.items("p") if it["is_gold"])
    assert gold_id in a_items
    assert gold_id in b_items
    assert len(a_items) + len(b_items) == 3


def test_users_passwords_and_disable(store):
    store.add_user("admin1", PW, role="admin")
    assert store.authenticate("admin1", PW) == {"username": "admin1", "role": "admin"}
    assert store.authenticate("admin1", "wrong-password") is None
    with pytest.raises(StoreError, match="already exists"):
        store.add_user("admin1", PW)
    with pytest.raises(StoreError, match="too short"):
        store.add_user("x", "short")
    store.set_password("admin1", "another-pass")
    assert store.authenticate("admin1", "another-pass")
    assert not store.authenticate("admin1", PW)
    store.set_disabled("admin1")
    assert store.authenticate("admin1", "another-pass") is None
    assert store.list_users() == [{"username": "admin1", "role": "admin", "disabled": True}]
    assert "scrypt$" in store.engine.connect().exec_driver_sql("SELECT password_hash FROM assessors").scalar()


def test_pairwise_project_needs_two_candidates(store):
    store.create_project("pw", "pairwise")
    with pytest.raises(StoreError, match="has 3 candidates, not 2"):
        store.add_items(
            "pw",
            [
                {
                    "external_id": "x",
                    "prompt": "p",
                    "candidates": [{"text": "a"}, {"text": "b"}, {"text": "c"}],
                }
            ],
        )


def test_free_text_over_its_limit_is_refused_naming_the_limit_and_nothing_is_stored(store_target):
    from rlhf.store import Store, TextLimits

    store = Store(store_target, limits=TextLimits(rationale=50, edit=80, skip_reason=20))
    try:
        make_project(store, n_items=2)
        lease = store.next_item("p", "a")
        payload = judge("ranking", lease)
        base = lease.candidates[0]["id"]
        with pytest.raises(StoreError, match=r"rationale is too long: 51 characters, the limit is 50 \("):
            store.submit("p", "a", lease.item_id, payload, client_token="t1", rationale="r" * 51)
        with pytest.raises(
            StoreError, match="improved response is too long: 5,000,000 characters, the limit"
        ):
            store.submit(
                "p",
                "a",
                lease.item_id,
                payload,
                client_token="t2",
                edit={"base": base, "text": "e" * 5_000_000},
            )
        with pytest.raises(StoreError, match="skip reason is too long: 21 characters, the limit is 20"):
            store.skip("p", "a", lease.item_id, "s" * 21)
        assert store.annotations("p") == []
        assert len(next(it for it in store.items("p") if it["id"] == lease.item_id)["candidates"]) == 4
        assert {a["status"] for a in store.assignments("p")} == {"leased"}
        # at the limit: stored
        store.submit(
            "p",
            "a",
            lease.item_id,
            payload,
            client_token="t3",
            rationale="r" * 50,
            edit={"base": base, "text": "e" * 80},
        )
        (ann,) = store.annotations("p")
        assert len(ann["rationale"]) == 50
    finally:
        store.close()


def test_free_text_loses_hiding_control_characters_and_must_be_text(store):
    make_project(store, n_items=2)
    lease = store.next_item("p", "a")
    sneaky = "ok\x00 \x1b[31mred\u202eevil\u2066iso\u2069 \ud800tab\tline\nend\x7f\x85"
    store.submit(
        "p",
        "a",
        lease.item_id,
        judge("ranking", lease),
        client_token="t",
        rationale=sneaky,
        edit={"base": lease.candidates[0]["id"], "text": "better " + sneaky},
    )
    (ann,) = store.annotations("p")
    assert ann["rationale"] == "ok [31mredeviliso tab\tline\nend"
    item = next(it for it in store.items("p") if it["id"] == lease.item_id)
    assert item["candidates"][-1]["text"] == "better ok [31mredeviliso tab\tline\nend"
    other = store.next_item("p", "a")
    with pytest.raises(StoreError, match="the skip reason must be text, got dict"):
        store.skip("p", "a", other.item_id, {"why": "x"})
    store.skip("p", "a", other.item_id, "\u202eoff-topic\x00")
    assert {a["skip_reason"] for a in store.assignments("p")} == {None, "off-topic"}


@pytest.mark.parametrize("flag", ["false", "0", "off", 0, 1, None])
def test_the_unsafe_flag_is_a_bool_never_coerced(store, flag):
    make_project(store, n_items=1)
    lease = store.next_item("p", "a")
    with pytest.raises(StoreError, match="the unsafe flag must be true or false, got"):
        store.submit("p", "a", lease.item_id, judge("ranking", lease), client_token="t", flagged_unsafe=flag)
    assert store.annotations("p") == []
    store.submit("p", "a", lease.item_id, judge("ranking", lease), client_token="t", flagged_unsafe=False)
    assert [a["flagged_unsafe"] for a in store.annotations("p")] == [False]


def test_only_the_tasks_own_payload_key_is_stored(store):
    make_project(store, n_items=1)
    lease = store.next_item("p", "a")
    payload = {**judge("ranking", lease), "note": "x" * 100_000}
    store.submit("p", "a", lease.item_id, payload, client_token="t")
    (ann,) = store.annotations("p")
    assert list(ann["payload"]) == ["ranking"]


def test_login_refuses_impossible_names_and_overlong_passwords_without_hashing(store):
    store.add_user("ann", PW)
    with pytest.raises(StoreError, match="too long: use at most 1024 characters"):
        store.set_password("ann", "p" * 1025)
    assert store.authenticate("ann", "p" * 5_000_000) is None
    assert store.authenticate("<b>ann</b>", PW) is None
    assert store.authenticate("ann", PW) == {"username": "ann", "role": "assessor"}
