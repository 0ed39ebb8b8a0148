"""Crash check for the store: a child process submits k-wise rankings and reports each annotation id only
after its commit returned; the parent SIGKILLs it at random moments, again and again. Afterwards every
acknowledged id must be in the database, and no ranking may be half-written. Used by the test suite
(200 kills) and benchmarks/store_crash.py (1000 kills). POSIX only (fork)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
import uuid

from rlhf.store.service import Store


def _child(target: str, project: str, user: str, wfd: int) -> None:
    store = Store(target)
    out = os.fdopen(wfd, "w", buffering=1)
    while True:
        lease = store.next_item(project, user)
        if lease is None:
            os._exit(0)
        ann = store.submit(
            project,
            user,
            lease.item_id,
            {"ranking": [c["id"] for c in lease.candidates]},
            client_token=uuid.uuid4().hex,
        )
        out.write(f"{ann}\n")


def crash_loop(
    target: str, project: str, users: list[str], kills: int, *, seed: int = 0, max_alive_s: float = 0.08
) -> set[int]:
    """Fork, let the child submit for a random 5..max_alive_s ms, SIGKILL it; `kills` times.
    Returns the annotation ids the children acknowledged (whole lines only)."""
    rng = random.Random(seed)
    acked: set[int] = set()
    for n in range(kills):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                _child(target, project, users[n % len(users)], w)
            finally:
                os._exit(1)
        os.close(w)
        time.sleep(rng.uniform(0.005, max_alive_s))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with os.fdopen(r) as f:
            lines = f.read().split("\n")
        acked |= {int(x) for x in lines[:-1] if x}  # the last piece may be a torn line: not acknowledged
    return acked


def check_sqlite(path: str, k: int) -> dict:
    """integrity_check, annotations whose value count is not k, done assignments without annotation."""
    con = sqlite3.connect(path)
    try:
        return {
            "integrity": con.execute("PRAGMA integrity_check").fetchone()[0],
            "ids": {row[0] for row in con.execute("SELECT id FROM annotations")},
            "half_written": con.execute(
                "SELECT COUNT(*) FROM (SELECT a.id FROM annotations a LEFT JOIN annotation_values v "
                "ON v.annotation_id = a.id GROUP BY a.id HAVING COUNT(v.id) != ?)",
                (k,),
            ).fetchone()[0],
            "done_without_annotation": con.execute(
                "SELECT COUNT(*) FROM assignments s WHERE s.status = 'done' AND NOT EXISTS (SELECT 1 FROM "
                "annotations a WHERE a.item_id = s.item_id AND a.assessor_id = s.assessor_id)"
            ).fetchone()[0],
        }
    finally:
        con.close()
