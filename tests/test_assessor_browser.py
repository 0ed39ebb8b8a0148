"""The assessor's experience in a real browser (Debian chromium + Playwright): ranking by click with undo,
pairwise by button, Likert rows, the keyboard, gold feedback, the difference view — and XSS payloads inert in
every new element. Each judgement is checked in the database."""

import pytest
from support.data import XSS

from labeling_ui.browser import free_port, login
from rlhf.stages.label import LabelStageConfig, launch
from rlhf.store.service import Store

pytestmark = pytest.mark.slow


def serve(tmp_path, task, items, **project):
    db = str(tmp_path / f"{task}.db")
    s = Store(db)
    s.create_project("p", task, priority="fifo", **project)
    s.add_items("p", items)
    s.add_user("ann", "password123")
    s.close()
    port = free_port()
    app, store = launch(LabelStageConfig(store=db, project="p", port=port), block=False)
    return app, store, port


def letters_of(page, texts: list[str]) -> dict[str, str]:
    """text -> the letter of the card showing it (the order is shuffled per assessor)."""
    out = {}
    for letter in "ABCD":
        if page.locator(f"#cand_{letter}").count() and page.locator(f"#cand_{letter}").is_visible():
            shown = page.inner_text(f"#cand_{letter}")
            out.update({t: letter for t in texts if t in shown})
    return out


def stored_values(store) -> dict[str, float]:
    """The one stored judgement's value per candidate text (then the store is closed)."""
    (ann,) = store.annotations("p")
    text_of = {c["id"]: c["text"] for c in store.items("p")[0]["candidates"]}
    store.close()
    return {text_of[c]: v for c, v in ann["values"].items()}


def wait_for_item(page, text: str):
    page.wait_for_function(
        f"document.querySelector('#prompt') && document.querySelector('#prompt').innerText.includes({text!r})",
        timeout=30_000,
    )


def test_rank_by_clicking_with_undo(tmp_path, browser):  # noqa: F811
    texts = ["Boil it six minutes.", "Eggs come from hens.", "I cannot help."]
    items = [
        {"external_id": "x", "prompt": "How do I boil an egg?", "candidates": [{"text": t} for t in texts]}
    ]
    app, store, port = serve(tmp_path, "ranking", items)
    try:
        page = login(browser, port, "ann", {"width": 1400, "height": 1200})
        wait_for_item(page, "boil an egg")
        letter = letters_of(page, texts)
        best, mid, worst = (letter[t] for t in texts)
        page.click(f"#cand_{mid}")
        page.click(f"#cand_{best}")
        page.click(f"#cand_{mid}")  # undo: mid leaves the ranking, best moves up to #1
        assert page.input_value("#rank_order textarea") == best
        page.click(f"#cand_{mid}")
        page.click(f"#cand_{worst}")
        assert page.input_value("#rank_order textarea") == f"{best},{mid},{worst}"
        page.wait_for_function(f"document.querySelector('#cand_{worst}').dataset.rank === '3'", timeout=5_000)
        assert page.get_attribute(f"#cand_{best}", "data-rank") == "1"
        page.click("#submit")
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('Saved')", timeout=30_000
        )
    finally:
        app.close()
    assert stored_values(store) == {
        t: float(rank) for rank, t in enumerate(texts, start=1)
    }  # ranks, 1 = best


def test_pairwise_by_button_and_by_key_and_gold_feedback(tmp_path, browser):  # noqa: F811
    items = [
        {
            "external_id": "g",
            "prompt": "Capital of France?",
            "candidates": [{"text": "Paris."}, {"text": "Lyon."}],
            "gold": {"best": 0, "note": "Paris is the capital."},
        },
        {"external_id": "k", "prompt": "Two plus two?", "candidates": [{"text": "Four."}, {"text": "Five."}]},
    ]
    app, store, port = serve(tmp_path, "pairwise", items)
    try:
        page = login(browser, port, "ann", {"width": 1400, "height": 1200})
        wait_for_item(page, "Capital of France")
        wrong = letters_of(page, ["Lyon."])["Lyon."]
        page.click(f"#pick_{wrong}")  # one click is the judgement
        wait_for_item(page, "Two plus two")
        status = page.inner_text("#status")
        assert "Gold check: the expected best answer was" in status
        assert "Paris is the capital." in status
        four = letters_of(page, ["Four."])["Four."]
        page.click("#prompt")
        page.keyboard.press(four.lower())  # the keyboard path: A / B pick at once
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('Nothing left')", timeout=30_000
        )
    finally:
        app.close()
    anns = store.annotations("p")
    items_by_id = {it["id"]: it for it in store.items("p")}
    winners = []
    for a in anns:
        text_of = {c["id"]: c["text"] for c in items_by_id[a["item_id"]]["candidates"]}
        winners.append(text_of[min(a["values"], key=a["values"].get)])
    assert winners == ["Lyon.", "Four."]
    store.close()


def test_likert_rows(tmp_path, browser):  # noqa: F811
    items = [
        {"external_id": "l", "prompt": "Say hi", "candidates": [{"text": "Hi there!"}, {"text": "Go away."}]}
    ]
    app, store, port = serve(tmp_path, "likert", items)
    try:
        page = login(browser, port, "ann", {"width": 1400, "height": 1200})
        wait_for_item(page, "Say hi")
        letter = letters_of(page, ["Hi there!", "Go away."])
        page.locator(f"#score_{letter['Hi there!']}").get_by_label("6").check()
        page.locator(f"#score_{letter['Go away.']}").get_by_label("2").check()
        page.click("#submit")
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('Saved')", timeout=30_000
        )
    finally:
        app.close()
    assert stored_values(store) == {"Hi there!": 6.0, "Go away.": 2.0}


def test_difference_view_marks_changed_words_and_xss_stays_inert(tmp_path, browser):  # noqa: F811
    a = "The quick brown fox jumps over the lazy dog. " + XSS
    b = "The quick red fox jumps over the lazy dog. " + XSS
    items = [
        {
            "external_id": "d",
            "prompt": [{"role": "user", "content": "Compare " + XSS}],
            "candidates": [{"text": a}, {"text": b}],
        }
    ]
    app, store, port = serve(tmp_path, "pairwise", items)
    try:
        page = login(browser, port, "ann", {"width": 1400, "height": 1200})
        wait_for_item(page, "Compare")
        page.check("#show_diff input")
        page.wait_for_selector("#diff_view mark", timeout=30_000)
        marked = page.locator("#diff_view mark").all_inner_texts()
        assert sorted(marked) == ["brown", "red"]  # the one word that differs, marked on each side
        assert "<script>" in page.inner_text("#diff_view")  # the payload shows as text
        assert page.evaluate("window.__xss") is None  # ... and runs nowhere: chat, cards, diff view
        assert "Use via API" not in page.inner_text("body")  # no API link for assessors
    finally:
        app.close()
        store.close()
