"""A real browser (Debian chromium driven by Playwright): log in, read the guidelines, rank with the
keyboard, submit, see the next item; then check the database. Also: `<script>` in a completion stays text.

Needs /usr/bin/chromium (scripts/setup.sh installs it with apt in CI) and the `playwright` package (dev
extra); never `playwright install` (no downloads here)."""

import os
from pathlib import Path

import pytest
from support.data import XSS

from labeling_ui.browser import free_port, login
from rlhf.stages.label import LabelStageConfig, launch
from rlhf.store.service import Store

pytestmark = pytest.mark.slow


def test_login_rank_with_keyboard_submit_and_xss_stays_text(tmp_path, browser):
    db = str(tmp_path / "b.db")
    s = Store(db)
    s.create_project(
        "demo",
        "ranking",
        overlap=1,
        priority="fifo",
        guidelines="## Guidelines\nRank the responses from **most** to least helpful.",
    )
    s.add_items(
        "demo",
        [
            {
                "external_id": "x1",
                "prompt": [
                    {"role": "user", "content": "How do I boil an egg?"},
                    {"role": "assistant", "content": "Soft or hard?"},
                    {"role": "user", "content": "Soft, please."},
                ],
                "candidates": [
                    {"text": "Boil it for 6 minutes, then cool it in cold water."},
                    {"text": XSS},
                    {"text": "Eggs are laid by hens."},
                ],
            },
            {
                "external_id": "x2",
                "prompt": "Name a primary colour.",
                "candidates": [{"text": "Red."}, {"text": "Purple."}, {"text": "Blue is one."}],
            },
        ],
    )
    s.add_user("ann", "password123")
    s.close()
    port = free_port()
    app, store = launch(LabelStageConfig(store=db, project="demo", port=port), block=False)
    try:
        page = login(browser, port, "ann", {"width": 1280, "height": 1100})
        page.wait_for_selector("#guidelines", timeout=30_000)
        assert "from most to least helpful" in page.inner_text("#guidelines")
        assert page.get_by_role("tab", name="Admin").count() == 0  # assessors do not see the Admin tab
        page.wait_for_function(
            "document.querySelector('#prompt').innerText.includes('Soft, please')", timeout=30_000
        )
        # the XSS candidate shows as text and runs nothing
        texts = {letter: page.inner_text(f"#cand_{letter}") for letter in "ABC"}
        xss_letter = next(k for k, v in texts.items() if "window.__xss = 1" in v)
        assert "<script>" in texts[xss_letter]
        assert page.evaluate("window.__xss") is None
        egg_letter = next(k for k, v in texts.items() if "6 minutes" in v)
        hen_letter = next(k for k, v in texts.items() if "laid by hens" in v)
        shot = (
            Path("docs/assessor_view.png")
            if os.environ.get("RLHF_UPDATE_SCREENSHOT")
            else tmp_path / "view.png"
        )
        page.screenshot(path=str(shot), full_page=True)
        # rank with the keyboard: best first, then Enter submits
        page.click("#prompt")
        for key in (egg_letter, hen_letter, xss_letter):
            page.keyboard.press(key.lower())
        assert page.input_value("#rank_order textarea") == f"{egg_letter},{hen_letter},{xss_letter}"
        page.keyboard.press("Enter")
        page.wait_for_function(
            "document.querySelector('#prompt').innerText.includes('primary colour')", timeout=30_000
        )
        assert "Saved." in page.inner_text("#status")
        assert page.evaluate("window.__xss") is None
    finally:
        app.close()
    (ann,) = store.annotations("demo")
    items = {it["id"]: it for it in store.items("demo")}
    text_of = {c["id"]: c["text"] for c in items[ann["item_id"]]["candidates"]}
    ranked = sorted(ann["values"], key=ann["values"].get)
    assert [text_of[c] for c in ranked] == [
        "Boil it for 6 minutes, then cool it in cold water.",
        "Eggs are laid by hens.",
        XSS,
    ]
    assert ann["assessor"] == "ann"
    store.close()


def test_admin_sees_the_admin_tab(tmp_path, browser):
    db = str(tmp_path / "a.db")
    s = Store(db)
    s.create_project("demo", "pairwise")
    s.add_items("demo", [{"external_id": "x", "prompt": "hi", "candidates": [{"text": "a"}, {"text": "b"}]}])
    s.add_user("lead", "password123", role="admin")
    s.close()
    port = free_port()
    app, store = launch(LabelStageConfig(store=db, project="demo", port=port), block=False)
    try:
        page = login(browser, port, "lead")
        page.wait_for_selector("#guidelines", timeout=30_000)
        page.get_by_role("tab", name="Admin").click(timeout=30_000)
        users_table = "document.querySelector('#admin_users').innerText"
        assert "active" not in page.evaluate(users_table)  # empty until refreshed
        page.click("#admin_refresh")
        page.wait_for_function(f"{users_table}.includes('active')", timeout=30_000)
        rows = page.evaluate(users_table)
        assert "lead" in rows
        assert "admin" in rows
    finally:
        app.close()
        store.close()


def test_long_candidates_scroll_in_their_card_and_code_shows_verbatim(tmp_path, browser):
    db = str(tmp_path / "long.db")
    s = Store(db)
    s.create_project("demo", "pairwise", priority="fifo")
    code = "Run this:\n```html\n<script>window.__xss = 4</script>\n```\nand `<b>x</b>` is fine."
    s.add_items(
        "demo",
        [{"external_id": "x", "prompt": "hi", "candidates": [{"text": code}, {"text": "word " * 10_000}]}],
    )
    s.add_user("ann", "password123")
    s.close()
    port = free_port()
    app, store = launch(LabelStageConfig(store=db, project="demo", port=port), block=False)
    try:
        page = login(browser, port, "ann", {"width": 1280, "height": 1000})
        page.wait_for_function(
            "document.querySelector('#cand_B') && document.querySelector('#cand_B').innerText.length > 40000",
            timeout=30_000,
        )
        box = page.locator("#pick_A").bounding_box()  # pairwise: the judging buttons
        assert box is not None and box["y"] < 2500, box  # 50,000 characters scroll inside their card
        card = next(k for k in "AB" if "Run this" in page.inner_text(f"#cand_{k}"))
        shown = page.inner_text(f"#cand_{card} pre")
        assert (
            "<script>window.__xss = 4</script>" in shown
        )  # the code block shows the code, not &lt;script&gt;
        assert page.inner_text(f"#cand_{card} code >> nth=-1") == "<b>x</b>"
        assert page.evaluate("window.__xss") is None
    finally:
        app.close()
        store.close()


def test_admin_leaderboard_panel_shows_the_checkpoints_in_order(tmp_path, browser):
    from rlhf.compare import arena

    db = str(tmp_path / "arena.db")
    s = Store(db)
    s.create_project("arena", "pairwise", priority="fifo")
    answers = {"good": ["fine answer"] * 12, "ok": ["so-so answer"] * 12, "bad": ["poor answer"] * 12}
    items = arena.battle_items(
        ["good", "ok", "bad"],
        [f"q{i}" for i in range(12)],
        [f"p{i}" for i in range(12)],
        answers,
        per_prompt=1,
        seed=0,
    )
    s.add_items("arena", items)
    s.add_user("lead", "password123", role="admin")
    rank = {"good": 2, "ok": 1, "bad": 0}
    for user in ("ann", "bob"):
        s.add_user(user, "password123")
        while (lease := s.next_item("arena", user)) is not None:
            src = s.candidate_sources(lease.item_id)
            a, b = (rank[src[c["id"]]["policy"]] for c in lease.candidates)
            s.submit(
                "arena",
                user,
                lease.item_id,
                {"choice": "A" if a > b else "B"},
                client_token=f"{user}{lease.item_id}",
            )
    s.close()
    port = free_port()
    app, store = launch(LabelStageConfig(store=db, project="arena", port=port), block=False)
    try:
        page = login(browser, port, "lead", {"width": 1280, "height": 1600})
        page.wait_for_selector("#guidelines", timeout=30_000)
        page.get_by_role("tab", name="Admin").click(timeout=30_000)
        board = "document.querySelector('#admin_leaderboard').innerText"
        page.click("#admin_refresh")
        page.wait_for_function(f"{board}.includes('good')", timeout=30_000)
        text = page.evaluate(board)
        assert text.index("good") < text.index("ok") < text.index("bad"), text
    finally:
        app.close()
        store.close()


def test_thumbs_with_the_keyboard_land_in_the_database(tmp_path, browser):
    db = str(tmp_path / "thumbs.db")
    s = Store(db)
    s.create_project("thumbs", "binary", priority="fifo", guidelines="Is the answer **right**?")
    s.add_items(
        "thumbs",
        [
            {"external_id": "x1", "prompt": "What is 2+2?", "candidates": [{"text": "It is 4."}]},
            {"external_id": "x2", "prompt": "Capital of France?", "candidates": [{"text": XSS}]},
            {"external_id": "x3", "prompt": "Name a colour.", "candidates": [{"text": "Blue."}]},
        ],
    )
    s.add_user("ann", "password123")
    s.close()
    port = free_port()
    app, store = launch(LabelStageConfig(store=db, project="thumbs", port=port), block=False)
    prompt_has = "document.querySelector('#prompt').innerText.includes('{}')"
    try:
        page = login(browser, port, "ann", {"width": 1280, "height": 1000})
        page.wait_for_selector("#guidelines", timeout=30_000)  # the page reloads after the login
        page.wait_for_function(prompt_has.format("2+2"), timeout=30_000)
        assert page.locator("#pick_good").is_visible()
        assert not page.locator("#pick_A").is_visible()  # the pairwise buttons are not shown
        assert not page.locator("#cand_B").is_visible()  # one answer per item
        page.fill("#rationale textarea", "correct sum")
        page.click("#prompt")  # out of the text box: the keys judge
        page.keyboard.press("g")
        page.wait_for_function(prompt_has.format("Capital of France"), timeout=30_000)
        assert "Saved." in page.inner_text("#status")
        assert page.evaluate("window.__xss") is None  # the answer's markup stays text
        page.click("#prompt")
        page.keyboard.press("b")
        page.wait_for_function(prompt_has.format("Name a colour"), timeout=30_000)
    finally:
        app.close()
    texts = {it["id"]: it["candidates"][0]["text"] for it in store.items("thumbs")}
    judged = [(texts[a["item_id"]], a["payload"], a["rationale"]) for a in store.annotations("thumbs")]
    assert judged == [("It is 4.", {"label": "good"}, "correct sum"), (XSS, {"label": "bad"}, "")]
    store.close()
