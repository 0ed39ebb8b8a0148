"""Claim: no acknowledged label is lost and no ranking is half-written when the writer is SIGKILLed.

    .venv/bin/python benchmarks/store_crash.py [--kills 1000]

A child process submits 4-way rankings into a SQLite store (WAL, synchronous=FULL) and prints each
annotation id after its commit; the parent SIGKILLs it at a random moment (5..80 ms in), --kills times.
Prints the counts and ends with `ratio lost/acknowledged <x>` (0 is the claim).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=1000)
    a = ap.parse_args()
    from rlhf.store import Store
    from rlhf.store.durability import check_sqlite, crash_loop

    with tempfile.TemporaryDirectory() as d:
        db = str(Path(d) / "crash.db")
        s = Store(db)
        s.create_project("p", "ranking", lease_ttl_s=3600)
        s.add_items(
            "p",
            [
                {"external_id": f"i{i}", "prompt": "q", "candidates": [{"text": f"a{j}"} for j in range(4)]}
                for i in range(60000)
            ],
        )
        users = [f"u{i}" for i in range(4)]
        for u in users:
            s.add_user(u, "password123")
        s.close()
        t0 = time.time()
        acked = crash_loop(db, "p", users, a.kills)
        state = check_sqlite(db, k=4)
    lost = len(acked - state["ids"])
    print(
        f"kills {a.kills} in {time.time() - t0:.0f} s; acknowledged {len(acked)}; stored {len(state['ids'])}; "
        f"lost {lost}; integrity_check {state['integrity']}; half-written rankings {state['half_written']}; "
        f"done assignments without annotation {state['done_without_annotation']}"
    )
    print(f"ratio lost/acknowledged {lost / max(len(acked), 1):.4f}")


if __name__ == "__main__":
    main()
