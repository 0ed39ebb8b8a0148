"""Pure handler tests: next item, submit, skip, validation errors, rendering safety (no Gradio)."""

import pytest

from labeling_ui import handlers
from labeling_ui.render import plain_markdown, render_prompt, safe_markdown
from rlhf.store.judgements import JudgementError
from rlhf.store.service import Store


@pytest.fixture
def ranking_store(tmp_path):
    s = Store(str(tmp_path / "l.db"))
    s.create_project("p", "ranking", overlap=1, rationale="optional")
    s.add_items(
        "p",
        [
            {
                "external_id": f"i{i}",
                "prompt": f"q{i}",
                "candidates": [{"text": f"c{i}{j}"} for j in range(3)],
            }
            for i in range(3)
        ],
    )
    s.add_user("ann", "password123")
    s.add_user("bob", "password123")
    yield s
    s.close()


def test_parse_ranking():
    assert handlers.parse_ranking("B, A,C", [10, 11, 12]) == [11, 10, 12]
    assert handlers.parse_ranking("b a c", [10, 11, 12]) == [11, 10, 12]
    with pytest.raises(JudgementError, match="only one rank"):
        handlers.parse_ranking("A,A,B", [10, 11, 12])
    with pytest.raises(JudgementError, match="rank all 3 candidates"):
        handlers.parse_ranking("A,B", [10, 11, 12])
    with pytest.raises(JudgementError, match="unknown candidate 'D'"):
        handlers.parse_ranking("A,B,D", [10, 11, 12])


def test_next_submit_next(ranking_store):
    v = handlers.next_view(ranking_store, "p", "ann")
    assert v.item_id
    assert len(v.candidates_md) == 3
    assert v.candidates_md[0].startswith("### A")
    after = handlers.submit(ranking_store, "p", "ann", v.item_id, client_token="t1", order="C,B,A")
    assert after.message == "Saved."
    assert after.item_id != v.item_id
    assert after.progress["done_total"] == 1
    (ann,) = ranking_store.annotations("p")
    assert ann["values"][v.candidate_ids[2]] == 1
    assert ann["assessor"] == "ann"


def test_submit_validation_keeps_the_item(ranking_store):
    v = handlers.next_view(ranking_store, "p", "ann")
    again = handlers.submit(ranking_store, "p", "ann", v.item_id, client_token="t1", order="A,A,B")
    assert again.message.startswith("Not saved: each candidate may have only one rank")
    assert again.item_id == v.item_id
    assert ranking_store.annotations("p") == []


def test_forged_submit_for_an_item_of_someone_else_is_refused(ranking_store):
    v = handlers.next_view(ranking_store, "p", "ann")
    forged = handlers.submit(ranking_store, "p", "bob", v.item_id, client_token="f1", order="A,B,C")
    assert forged.message.startswith("Not saved: item")
    assert "is not assigned to 'bob'" in forged.message
    assert ranking_store.annotations("p") == []


def test_skip_and_done(ranking_store):
    v = handlers.next_view(ranking_store, "p", "ann")
    nope = handlers.skip(ranking_store, "p", "ann", v.item_id, "")
    assert nope.message.startswith("Not skipped: say why")
    v2 = handlers.skip(ranking_store, "p", "ann", v.item_id, "off-topic")
    assert v2.message == "Skipped."
    assert v2.item_id != v.item_id
    while not v2.done:
        v2 = handlers.submit(
            ranking_store, "p", "ann", v2.item_id, client_token=f"t{v2.item_id}", order="A,B,C"
        )
    assert v2.done
    assert "Nothing left" in v2.message


def test_likert_and_pairwise_payloads():
    assert handlers.build_payload("likert", [1, 2], scores=[7, 3]) == {"scores": {"1": 7, "2": 3}}
    with pytest.raises(JudgementError, match="score all 2"):
        handlers.build_payload("likert", [1, 2], scores=[7])
    assert handlers.build_payload("pairwise", [1, 2], choice="tie") == {"choice": "tie"}


def test_untrusted_text_stays_inert():
    out = safe_markdown(
        "<script>alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1)) "
        "[ok](https://example.org) ![i](data:image/png;base64,AAA)"
    )
    assert "<script>" not in out
    assert "&lt;script&gt;" in out
    assert "<img" not in out
    assert "javascript:" not in out.split("link removed")[0]
    assert "(link removed: javascript:alert" in out
    assert "[ok](https://example.org)" in out
    assert "data:image" not in out.replace("link removed: data:image", "")
    conv = render_prompt([{"role": "user", "content": "hi <b>"}, {"role": "assistant", "content": "yo"}])
    assert "**User:**" in conv
    assert "**Assistant:**" in conv
    assert "&lt;b&gt;" in conv


def test_code_renders_faithfully_while_html_outside_code_stays_inert():
    text = (
        "Use this:\n```html\n<script>alert('&amp;')</script>\n```\nthen `<b>x</b>` and <b>bold</b> & co.\n"
        "[click][evil]\n\n[evil]: javascript:alert(1)\n[good]: https://example.org"
    )
    out = safe_markdown(text)
    assert (
        "```html\n<script>alert('&amp;')</script>\n```" in out
    )  # code block: verbatim, no &lt; or &amp;amp;
    assert "`<b>x</b>`" in out  # code span: verbatim
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co." in out  # outside code: escaped once
    assert "javascript:" not in out.replace("link definition removed: javascript:", "")
    assert "[good]: https://example.org" in out
    # an unterminated fence is closed, so it cannot swallow what follows it on the page
    assert safe_markdown("```\n<i>x").endswith("\n```")
    # a fence closes only with the same character, at least as long, alone on its line
    assert "&lt;u&gt;" in safe_markdown("~~~\ncode\n```\n~~~\n<u>")
    assert plain_markdown("**<b>eve</b>**") == "\\*\\*&lt;b&gt;eve&lt;/b&gt;\\*\\*"


def test_edit_to_improve_is_a_new_preferred_candidate_never_served(ranking_store):
    from rlhf.store.export import ExportSettings, export_rows

    v = handlers.next_view(ranking_store, "p", "ann")
    bad = handlers.submit(
        ranking_store, "p", "ann", v.item_id, client_token="e0", order="A,B,C", edit_text="better"
    )
    assert bad.message.startswith("Not saved: say which response you improved")
    ok = handlers.submit(
        ranking_store,
        "p",
        "ann",
        v.item_id,
        client_token="e1",
        order="A,B,C",
        edit_of="B",
        edit_text="A much better answer.",
    )
    assert ok.message == "Saved."
    item = next(it for it in ranking_store.items("p") if it["id"] == v.item_id)
    assert [c["text"] for c in item["candidates"]][-1] == "A much better answer."
    assert item["candidates"][-1]["source"] == {"edited_from": v.candidate_ids[1], "editor": "ann"}
    (ann,) = ranking_store.annotations("p")
    assert ann["payload"]["edit"]["base"] == v.candidate_ids[1]
    rows, acct = export_rows([item], [ann], "ranking", ExportSettings())
    assert (
        "A much better answer.",
        item["candidates"][[c["id"] for c in item["candidates"]].index(v.candidate_ids[1])]["text"],
    ) in {(r["chosen"], r["rejected"]) for r in rows}
    assert acct["pairs_out"] == 4  # 3 from the ranking + the edit


def test_review_items_take_keep_or_drop(tmp_path):
    s = Store(str(tmp_path / "r.db"))
    s.create_project("rev", "review", rationale="required")
    s.add_items(
        "rev", [{"external_id": "row1", "prompt": "Flagged: weapons", "candidates": [{"text": "some row"}]}]
    )
    s.add_user("ann", "password123")
    v = handlers.next_view(s, "rev", "ann")
    assert len(v.candidates_md) == 1
    nope = handlers.submit(s, "rev", "ann", v.item_id, client_token="t0", choice="keep")
    assert nope.outcome == "refused"
    assert "requires a rationale" in nope.message
    ok = handlers.submit(s, "rev", "ann", v.item_id, client_token="t1", choice="keep", rationale="medical")
    assert ok.outcome == "saved"
    assert s.annotations("rev")[0]["payload"] == {"decision": "keep"}
    s.close()


def test_binary_items_take_good_or_bad_with_a_reason_and_gold_feedback(tmp_path):
    s = Store(str(tmp_path / "b.db"))
    s.create_project("thumbs", "binary", priority="fifo")
    s.add_items(
        "thumbs",
        [
            {
                "external_id": "gold",
                "prompt": "capital of France?",
                "candidates": [{"text": "Berlin."}],
                "gold": {"label": "bad", "note": "It is Paris."},
            },
            {"external_id": "x", "prompt": "2+2?", "candidates": [{"text": "4"}]},
        ],
    )
    s.add_user("ann", "password123")
    v = handlers.next_view(s, "thumbs", "ann")
    assert v.task == "binary"
    assert len(v.candidates_md) == 1
    nope = handlers.submit(s, "thumbs", "ann", v.item_id, client_token="t0", choice="meh")
    assert nope.outcome == "refused"
    assert "judge the answer good or bad" in nope.message
    ok = handlers.submit(
        s, "thumbs", "ann", v.item_id, client_token="t1", choice="good", rationale="sounds right"
    )
    assert ok.outcome == "saved"
    assert ok.message == "Saved. Gold check: the expected answer was bad. It is Paris."
    (ann,) = s.annotations("thumbs")
    assert ann["payload"] == {"label": "good"}
    assert ann["rationale"] == "sounds right"
    done = handlers.submit(s, "thumbs", "ann", ok.item_id, client_token="t2", choice="good")
    assert done.done
    s.close()
