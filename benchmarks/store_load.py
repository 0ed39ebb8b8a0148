"""Claim: the labeling store serves 50 concurrent assessors with p95 next-item+submit latency < 150 ms.

    .venv/bin/python benchmarks/store_load.py [--writers 50] [--cycles 40] [--think-ms 1000]

50 writer *processes* (each its own connection pool, as 50 app workers would be), each running
`next_item` + `submit` (a 4-way ranking) cycles against one store, on SQLite (WAL file) and on PostgreSQL
(a throwaway local server, or $RLHF_TEST_PG_URL). Two load shapes:
  saturating  every writer loops with no pause: the worst case, far beyond human speed
  paced       each writer pauses a random 0..2x --think-ms between cycles (still ~50x faster than people,
              who take tens of seconds per ranking)
Prints p50/p95/max latency and submissions/s per database and shape, checks 0 lost / 0 duplicate, and
ends with `ratio p95_ms/150 <worst paced p95 / 150>` (below 1 meets the goal).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def seed(target: str, n_items: int, writers: int) -> None:
    from rlhf.store import Store

    s = Store(target)
    s.create_project("load", "ranking", overlap=1, lease_ttl_s=3600)
    s.add_items(
        "load",
        [
            {
                "external_id": f"i{i}",
                "prompt": f"q{i}",
                "candidates": [{"text": f"a{i}.{j}"} for j in range(4)],
            }
            for i in range(n_items)
        ],
    )
    for w in range(writers):
        s.add_user(f"w{w}", "password123")
    s.close()


def writer(target: str, w: int, cycles: int, think_ms: float, start: float, q) -> None:
    from rlhf.store import Store

    s = Store(target)
    rng = random.Random(w)
    lat, acked, errors = [], [], 0
    while time.time() < start:
        time.sleep(0.001)
    for _ in range(cycles):
        if think_ms:
            time.sleep(rng.uniform(0, 2 * think_ms) / 1000)
        t0 = time.perf_counter()
        try:
            lease = s.next_item("load", f"w{w}")
            acked.append(
                s.submit(
                    "load",
                    f"w{w}",
                    lease.item_id,
                    {"ranking": [c["id"] for c in lease.candidates]},
                    client_token=uuid.uuid4().hex,
                )
            )
        except Exception:  # noqa: BLE001 - counted
            errors += 1
        lat.append((time.perf_counter() - t0) * 1000)
    s.close()
    q.put((lat, acked, errors))


def measure(target: str, writers: int, cycles: int, think_ms: float) -> dict:
    from rlhf.store import Store

    seed(target, writers * cycles, writers)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start = time.time() + 2.0
    procs = [ctx.Process(target=writer, args=(target, w, cycles, think_ms, start, q)) for w in range(writers)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.time() - start
    lat = sorted(x for r in results for x in r[0])
    acked = [a for r in results for a in r[1]]
    s = Store(target)
    stored = [a["id"] for a in s.annotations("load")]
    s.close()
    return {
        "p50_ms": statistics.median(lat),
        "p95_ms": lat[int(0.95 * (len(lat) - 1))],
        "max_ms": lat[-1],
        "submits_per_s": len(acked) / wall,
        "errors": sum(r[2] for r in results),
        "lost": len(set(acked) - set(stored)),
        "duplicates": len(stored) - len(set(stored)),
        "stored": len(stored),
        "acked": len(acked),
    }


def fresh_pg(url: str) -> str:
    from sqlalchemy import create_engine

    from rlhf.store.schema import Base

    e = create_engine(url)
    Base.metadata.drop_all(e)
    e.dispose()
    return url


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=50)
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument("--think-ms", type=float, default=1000)
    a = ap.parse_args()
    pg_url, pg_dir = os.environ.get("RLHF_TEST_PG_URL"), None
    if not pg_url:
        pg_dir = tempfile.mkdtemp(prefix="rlhf-bench-pg-")
        out = subprocess.run(
            ["bash", str(ROOT / "scripts/pg_test_server.sh"), "start", pg_dir],
            capture_output=True,
            text=True,
            env={**os.environ, "RLHF_PG_PORT": "54331"},
        )
        if out.returncode:
            sys.exit(f"could not start PostgreSQL: {out.stderr}")
        pg_url = out.stdout.strip().split("=", 1)[1]
    print(
        f"{a.writers} writer processes x {a.cycles} cycles (next_item + submit of a 4-way ranking)",
        flush=True,
    )
    paced_p95 = []
    try:
        for shape, think in (("saturating", 0.0), ("paced", a.think_ms)):
            for db in ("sqlite", "postgresql"):
                with tempfile.TemporaryDirectory() as d:
                    target = str(Path(d) / "load.db") if db == "sqlite" else fresh_pg(pg_url)
                    r = measure(target, a.writers, a.cycles, think)
                print(
                    f"{db:10s} {shape:10s} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  max "
                    f"{r['max_ms']:7.1f} ms  {r['submits_per_s']:6.1f} submits/s  acked {r['acked']} stored "
                    f"{r['stored']} lost {r['lost']} duplicates {r['duplicates']} errors {r['errors']}",
                    flush=True,
                )
                if shape == "paced":
                    paced_p95.append(r["p95_ms"])
    finally:
        if pg_dir:
            subprocess.run(["bash", str(ROOT / "scripts/pg_test_server.sh"), "stop", pg_dir])
    print(f"ratio p95_ms/150 {max(paced_p95) / 150:.2f}")


if __name__ == "__main__":
    main()
