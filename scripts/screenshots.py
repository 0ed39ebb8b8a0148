"""Regenerate the screenshots under docs/ (Debian chromium + Playwright, offline):

    .venv/bin/python scripts/screenshots.py [--report runs/compare-demo/report.html]

docs/pairwise_view.png, docs/ranking_view.png, docs/admin_view.png from a throwaway store with a few
items and votes, and docs/compare_report.png from a comparison report when --report is given.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONVERSATION = [
    {"role": "user", "content": "I want to start running. How should I begin?"},
    {"role": "assistant", "content": "Great goal! Do you have any injuries or health conditions?"},
    {"role": "user", "content": "No, I'm healthy, just out of shape."},
]
ANSWERS = [
    "Start with a **run-walk plan**: 1 minute running, 2 minutes walking, for 20 minutes, three times a week.\n\n"
    "- Add a minute of running each week\n- Keep an easy pace: you should be able to talk\n- Rest days matter",
    "Start with a run-walk plan: 1 minute running, 2 minutes walking, for 30 minutes, five times a week.\n\n"
    "- Add a minute of running each week\n- Push the pace: running should feel hard\n- Rest days are optional",
    "Just run every day as far as you can.",
]


def shoot(task: str, db: str, shots: dict) -> None:
    from playwright.sync_api import sync_playwright

    from labeling_ui.browser import free_port, launch_chromium, login
    from rlhf.stages.label import LabelStageConfig, launch

    port = free_port()
    app, store = launch(
        LabelStageConfig(store=db, project=task, port=port, title="Acme assistant feedback"), block=False
    )
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = login(browser, port, "lead", {"width": 1400, "height": 1250})
            page.wait_for_function(
                "document.querySelector('#prompt') && document.querySelector('#prompt').innerText.includes('start running')",
                timeout=60_000,
            )
            if task == "ranking":
                for letter in "BA":
                    page.click(f"#cand_{letter}")
            if task == "pairwise":
                page.check("#show_diff input")
                page.wait_for_selector("#diff_view mark", timeout=30_000)
            page.screenshot(path=str(shots["view"]), full_page=True)
            if "admin" in shots:
                page.get_by_role("tab", name="Admin").click()
                page.click("#admin_refresh")
                page.wait_for_function(
                    "document.querySelector('#admin_users').innerText.includes('active')", timeout=30_000
                )
                page.screenshot(path=str(shots["admin"]), full_page=True)
            browser.close()
    finally:
        app.close()
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--report")
    a = ap.parse_args()
    from rlhf.store import Store

    docs = ROOT / "docs"
    with tempfile.TemporaryDirectory() as tmp:
        for task, k in (("pairwise", 2), ("ranking", 3)):
            db = str(Path(tmp) / f"{task}.db")
            with Store(db) as s:
                s.create_project(
                    task, task, priority="fifo", guidelines="Prefer the **safe, specific and kind** answer."
                )
                s.add_items(
                    task,
                    [
                        {
                            "external_id": f"i{n}",
                            "prompt": CONVERSATION,
                            "candidates": [{"text": t} for t in ANSWERS[:k]],
                        }
                        for n in range(3)
                    ],
                )
                s.add_user("lead", "password123", role="admin")
                for who in ("ann", "bob"):
                    s.add_user(who, "password123")
                    lease = s.next_item(task, who)
                    payload = (
                        {"choice": "A"}
                        if task == "pairwise"
                        else {"ranking": [c["id"] for c in lease.candidates]}
                    )
                    s.submit(task, who, lease.item_id, payload, client_token=f"{who}-{task}")
            shots = {"view": docs / f"{task}_view.png"}
            if task == "pairwise":
                shots["admin"] = docs / "admin_view.png"
            shoot(task, db, shots)
    if a.report:
        from playwright.sync_api import sync_playwright

        from labeling_ui.browser import launch_chromium

        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.goto(Path(a.report).resolve().as_uri())
            page.screenshot(path=str(docs / "compare_report.png"), full_page=False)
            browser.close()
    print("screenshots written to docs/")


if __name__ == "__main__":
    main()
