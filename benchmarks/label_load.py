"""Claim: the labeling app serves 20 concurrent assessors with p95 submit->next-item latency < 150 ms,
losing and duplicating nothing.

    .venv/bin/python benchmarks/label_load.py [--assessors 20] [--submits 15] [--think-ms 500]

Starts `rlhf label` on a fresh SQLite store (a ranking project, 3 candidates per item) on loopback, then
20 client processes (as 20 browsers would be: they do not share the server's interpreter), each a
`gradio_client.Client` logged in as its own assessor, each doing --submits submits
through the app's /submit endpoint (the same call the browser makes: it stores the judgement and returns
the next item). Between submits each waits 0..2x --think-ms (still far faster than people). Prints
p50/p95/max latency, submits/s, and checks stored annotations == acknowledged submits, with no duplicate.
Last line: `ratio p95_ms/150 <x>` (below 1 meets the goal).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import socket
import statistics
import tempfile
import time
from pathlib import Path


def assessor(url: str, w: int, submits: int, think_ms: float, start: float, q) -> None:
    from gradio_client import Client

    rng = random.Random(w)
    lat, acked, errors = [], 0, []
    try:
        c = Client(url, auth=(f"w{w}", "password123"), verbose=False)
        c.predict(api_name="/load")
        while time.time() < start:
            time.sleep(0.01)
        for _ in range(submits):
            time.sleep(rng.uniform(0, 2 * think_ms) / 1000)
            t0 = time.perf_counter()
            out = c.predict(None, "A,B,C", "", False, None, "", api_name="/submit")
            lat.append((time.perf_counter() - t0) * 1000)
            if "Saved." in out[2]:
                acked += 1
            else:
                errors.append(out[2])
    except Exception as e:  # noqa: BLE001 - counted
        errors.append(f"w{w}: {type(e).__name__}: {e}")
    q.put((lat, acked, errors))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assessors", type=int, default=20)
    ap.add_argument("--submits", type=int, default=15)
    ap.add_argument("--think-ms", type=float, default=500)
    a = ap.parse_args()
    from rlhf.stages.label import LabelStageConfig, launch
    from rlhf.store import Store

    with tempfile.TemporaryDirectory() as d:
        db = str(Path(d) / "load.db")
        s = Store(db)
        s.create_project("load", "ranking", overlap=1)
        s.add_items(
            "load",
            [
                {
                    "external_id": f"i{i}",
                    "prompt": f"question {i}",
                    "candidates": [{"text": f"answer {i}.{j}"} for j in range(3)],
                }
                for i in range(a.assessors * (a.submits + 2))
            ],
        )
        for w in range(a.assessors):
            s.add_user(f"w{w}", "password123")
        s.close()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        app, store = launch(LabelStageConfig(store=db, project="load", port=port), block=False)
        url = f"http://127.0.0.1:{port}/"
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        t_start = time.time() + 10.0  # every client logged in before the clock starts
        procs = [
            ctx.Process(target=assessor, args=(url, w, a.submits, a.think_ms, t_start, q))
            for w in range(a.assessors)
        ]
        for p in procs:
            p.start()
        results = [q.get() for _ in procs]
        for p in procs:
            p.join()
        wall = time.time() - t_start
        lat = [x for r in results for x in r[0]]
        acked = [sum(r[1] for r in results)]
        errors = [e for r in results for e in r[2]]
        anns = store.annotations("load")
        app.close()
        store.close()
    lat.sort()
    p95 = lat[int(0.95 * (len(lat) - 1))]
    keys = [(x["item_id"], x["assessor"]) for x in anns]
    print(
        f"{a.assessors} assessors x {a.submits} submits via gradio_client, think 0..{2 * a.think_ms:.0f} ms"
    )
    print(
        f"submit->next-item latency p50 {statistics.median(lat):.1f} ms  p95 {p95:.1f} ms  max {lat[-1]:.1f} ms; "
        f"{len(lat) / wall:.1f} submits/s"
    )
    print(
        f"acknowledged {acked[0]}  stored {len(anns)}  lost {max(0, acked[0] - len(anns))}  "
        f"duplicates {len(keys) - len(set(keys))}  errors {len(errors)} {errors[:3]}"
    )
    print(f"ratio p95_ms/150 {p95 / 150:.2f}")


if __name__ == "__main__":
    main()
