"""Concurrency and crash safety of the labeling store."""

import os
import random
import signal
import sqlite3
import threading
import time
import uuid

import pytest

from rlhf.store.service import Store

PW = "password123"


def seed_project(target, n_items, k, users, task="ranking"):
    s = Store(target)
    s.create_project("p", task, overlap=1, lease_ttl_s=3600)
    s.add_items(
        "p",
        [
            {
                "external_id": f"i{i}",
                "prompt": f"q{i}",
                "candidates": [{"text": f"a{i}.{j}"} for j in range(k)],
            }
            for i in range(n_items)
        ],
    )
    for u in users:
        s.add_user(u, PW)
    s.close()


@pytest.mark.slow
def test_20_assessors_x_200_submits_with_duplicates(store_target):
    users = [f"u{i:02d}" for i in range(20)]
    seed_project(store_target, 20 * 200, 3, users)
    store = Store(store_target)
    acked: dict[str, set[int]] = {u: set() for u in users}
    errors: list[str] = []
    dup_checks = [0]

    def worker(user):
        rng = random.Random(user)
        try:
            for _ in range(200):
                lease = store.next_item("p", user)
                ids = [c["id"] for c in lease.candidates]
                token = uuid.uuid4().hex
                ann = store.submit("p", user, lease.item_id, {"ranking": ids}, client_token=token)
                acked[user].add(ann)
                if rng.random() < 0.10:  # a client retrying the same submit
                    assert store.submit("p", user, lease.item_id, {"ranking": ids}, client_token=token) == ann
                    dup_checks[0] += 1
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            errors.append(f"{user}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    anns = store.annotations("p")
    stored = {a["id"] for a in anns}
    assert errors == []
    assert dup_checks[0] > 200
    assert len(anns) == 4000 == len(stored)  # 0 duplicates
    assert set().union(*acked.values()) == stored  # 0 lost
    assert len({a["item_id"] for a in anns}) == 4000
    assert all(len(a["values"]) == 3 for a in anns)
    store.close()


def _child(db: str, user: str, wfd: int) -> None:
    """Submit rankings forever; write each annotation id to the pipe only after its commit returned."""
    store = Store(db)
    out = os.fdopen(wfd, "w", buffering=1)
    while True:
        lease = store.next_item("p", user)
        if lease is None:
            os._exit(0)
        ann = store.submit(
            "p",
            user,
            lease.item_id,
            {"ranking": [c["id"] for c in lease.candidates]},
            client_token=uuid.uuid4().hex,
        )
        out.write(f"{ann}\n")


def crash_loop(db: str, kills: int, *, seed: int = 0) -> tuple[set[int], int]:
    """Fork a submitting child, SIGKILL it at a random moment, `kills` times. Returns acknowledged ids."""
    rng = random.Random(seed)
    acked: set[int] = set()
    done = 0
    while done < kills:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(r)
            try:
                _child(db, f"u{done % 4}", w)
            finally:
                os._exit(1)
        os.close(w)
        time.sleep(rng.uniform(0.005, 0.08))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with os.fdopen(r) as f:
            data = f.read()
        acked |= {int(x) for x in data.split("\n")[:-1] if x}  # only whole lines were acknowledged
        done += 1
    return acked, done


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_ranking(tmp_path):
    db = str(tmp_path / "crash.db")
    seed_project(db, 20000, 4, [f"u{i}" for i in range(4)])
    acked, kills = crash_loop(db, 200)
    assert kills == 200 and len(acked) > 50
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {row[0] for row in con.execute("SELECT id FROM annotations")}
    assert acked <= stored, f"{len(acked - stored)} acknowledged annotations lost"
    half = con.execute(
        "SELECT a.id FROM annotations a LEFT JOIN annotation_values v ON v.annotation_id = a.id "
        "GROUP BY a.id HAVING COUNT(v.id) != 4"
    ).fetchall()
    assert half == []
    orphans = con.execute(
        "SELECT COUNT(*) FROM assignments WHERE status = 'done' AND item_id NOT IN "
        "(SELECT item_id FROM annotations)"
    ).fetchone()[0]
    assert orphans == 0
    con.close()
