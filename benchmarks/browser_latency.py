"""Claim: in a real browser, the next item is on screen within 300 ms (p95) of an assessor's click.

    .venv/bin/python benchmarks/browser_latency.py [--judgements 50] [--task pairwise|ranking]

Debian chromium driven by Playwright, one logged-in assessor, the app served by `rlhf label` on loopback
(SQLite store, fifo order). For each judgement: the timer starts at the click that submits (pairwise: the
"A is better" button; ranking: three card clicks, then Submit — only the Submit is timed) and stops when
the next item is fully rendered: its prompt in the conversation and every answer card showing its text
(polled on animation frames). The first 3 judgements are warm-up. Prints p50 / p95 / max and the last line
`ratio p95_ms/300 <x>` (goal < 1).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--judgements", type=int, default=50)
    ap.add_argument("--task", choices=["pairwise", "ranking"], default="pairwise")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from labeling_ui.browser import free_port, launch_chromium, login
    from rlhf.stages.label import LabelStageConfig, launch
    from rlhf.store import Store

    k = 2 if a.task == "pairwise" else 3
    n = a.judgements + 4
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "lat.db")
        with Store(db) as s:
            s.create_project("p", a.task, priority="fifo", rationale="off")
            s.add_items(
                "p",
                [
                    {
                        "external_id": f"i{i}",
                        "prompt": f"Question number {i}: explain something in a few sentences.",
                        "candidates": [
                            {"text": f"Answer {j} to question {i}. " + "Some words here. " * 40}
                            for j in range(k)
                        ],
                    }
                    for i in range(n)
                ],
            )
            s.add_user("ann", "password123")
        port = free_port()
        app, store = launch(LabelStageConfig(store=db, project="p", port=port), block=False)
        times = []
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                page = login(browser, port, "ann", {"width": 1400, "height": 1100})
                page.wait_for_function(
                    "document.querySelector('#prompt') && document.querySelector('#prompt').innerText.includes('number 0:')",
                    timeout=60_000,
                )
                for i in range(a.judgements + 3):
                    if a.task == "ranking":
                        for letter in "ABC":
                            page.click(f"#cand_{letter}")
                    button = "#pick_A" if a.task == "pairwise" else "#submit"
                    check = (
                        f"document.querySelector('#prompt').innerText.includes('number {i + 1}:') && "
                        + " && ".join(
                            f"document.querySelector('#cand_{L}').innerText.includes('question {i + 1}.')"
                            for L in "ABC"[:k]
                        )
                    )
                    t0 = time.perf_counter()
                    page.click(button)
                    page.wait_for_function(check, timeout=30_000, polling="raf")
                    if i >= 3:
                        times.append(1000 * (time.perf_counter() - t0))
                browser.close()
        finally:
            app.close()
            store.close()
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(f"{a.task}: {len(times)} judgements timed, click -> next item rendered")
    print(f"p50 {statistics.median(times):.0f} ms, p95 {p95:.0f} ms, max {times[-1]:.0f} ms")
    print(f"ratio p95_ms/300 {p95 / 300:.2f}")


if __name__ == "__main__":
    main()
