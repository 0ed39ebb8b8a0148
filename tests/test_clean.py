"""`rlhf clean` end to end: planted duplicates found by each step, accounting, PII (redactions listed, or
sent to review), quality, decontamination of prompts and answers, contradictions, cached embeddings, long
rows in semantic de-dup, side-aware screening -> review project -> --apply-review scoped to its run, bad
input."""

import json
import random

import pytest
from support.data import write_jsonl
from support.tiny import WORDS

from rlhf.clean import contamination, prompt_index
from rlhf.cli import main
from rlhf.config import load_config
from rlhf.stages import clean
from rlhf.store.service import Store

Q = [
    "How do I boil an egg so that the yolk stays soft and the white is firm all the way through?",
    "Explain the difference between weather and climate to a ten year old in a few sentences please.",
    "What should I pack for a three day hiking trip in the mountains in early spring this year?",
    "Write a short polite email asking my landlord to repair the broken heating in my flat soon.",
    "Why does bread go stale faster in the fridge than on the kitchen counter at room temperature?",
    "Give me three ideas for a vegetarian dinner that I can cook in under thirty minutes tonight.",
]


def pref(rid, prompt, chosen="A clear and helpful answer that explains the steps.", rejected="No."):
    return {"id": rid, "prompt": prompt, "chosen": chosen, "rejected": rejected}


def cfg_for(tmp_path, source, name="clean", **extra):
    over = {"run.output_root": str(tmp_path / "runs"), "run.name": name, "data.source": source, **extra}
    return load_config(clean.CleanStageConfig, None, [f"{k}={v}" for k, v in over.items()])


def report(run) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, run.output("report").read_text().splitlines())}


def test_planted_duplicates_quality_pii_and_accounting(tmp_path):
    rows = [pref(f"q{i}", q) for i, q in enumerate(Q)]
    rows += [
        pref("exact", Q[0].upper()),  # case only
        pref("edit", Q[1].replace("ten year old", "10 year old")),  # a light edit
        pref(
            "reorder",
            "Explain to a ten year old in a few sentences please the difference between weather and climate.",
        ),
        pref("short", "?", chosen="k", rejected="x"),
        pref("spam", "buy now " * 30),
        pref("pii", "My email is ann@example.org, can you write to me?"),
        {"id": "broken", "prompt": "p", "chosen": "same", "rejected": "same"},
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    run = clean.run(cfg_for(tmp_path, data, **{"dedup.fuzzy.threshold": 0.6, "dedup.fuzzy.ngram": 3}))
    summary = run.read_manifest()["result"]
    assert (
        summary["rows_in"] == 13 == summary["rows_kept"] + summary["rows_removed"] + summary["rows_to_review"]
    )
    rep = report(run)
    assert rep["exact"]["reason"] == "duplicate"
    assert rep["exact"]["of"] == "q0"
    assert rep["edit"]["reason"] == "near-duplicate"
    assert rep["edit"]["of"] in ("q1",)
    assert rep["short"]["reason"] == "too short"
    assert rep["spam"]["reason"] == "repetitive"
    assert rep["broken"]["reason"] == "identical responses"
    assert rep["reorder"]["reason"] == "near-duplicate"  # 3-gram shingles at 0.6 catch this reordering
    kept = {r["id"]: r for r in map(json.loads, run.output("rows").read_text().splitlines())}
    assert kept["pii"]["prompt"] == "My email is [EMAIL], can you write to me?"
    assert summary["pii_found"] == {"email": 1}
    redactions = [json.loads(x) for x in run.output("redactions").read_text().splitlines()]
    assert redactions == [
        {"id": "pii", "column": "prompt", "kind": "email", "start": 12, "end": 27, "score": 1.0}
    ]
    assert summary["removed_by_reason"] == {
        "too short": 1,
        "repetitive": 1,
        "identical responses": 1,
        "duplicate": 1,
        "near-duplicate": 2,
    }

    # the default MinHash (character 3-grams at 0.8 for short texts) finds the reordering too; with MinHash
    # off the semantic step finds it
    sem = clean.run(
        cfg_for(
            tmp_path,
            data,
            name="sem",
            **{"dedup.semantic.enabled": True, "dedup.semantic.threshold": 0.9, "dedup.fuzzy.enabled": False},
        )
    )
    assert report(sem)["reorder"]["reason"] == "semantic duplicate"
    again = clean.run(
        cfg_for(
            tmp_path,
            data,
            name="sem2",
            **{"dedup.semantic.enabled": True, "dedup.semantic.threshold": 0.9, "dedup.fuzzy.enabled": False},
        )
    )
    assert report(again)["reorder"]["reason"] == "semantic duplicate"
    # the second run read every embedding from the cache (content-hashed): the model is never loaded
    import rlhf.clean.embeddings as emb

    calls = []
    original = emb.Embedder._load
    emb.Embedder._load = lambda self: calls.append(1) or original(self)
    try:
        clean.run(
            cfg_for(
                tmp_path,
                data,
                name="sem3",
                **{
                    "dedup.semantic.enabled": True,
                    "dedup.semantic.threshold": 0.9,
                    "dedup.fuzzy.enabled": False,
                },
            )
        )
    finally:
        emb.Embedder._load = original
    assert calls == []


def test_contradictions_decontamination_and_stages_read_the_cleaned_run(tmp_path):
    rows = [
        pref("c1", Q[2], chosen="Layers, water and a map.", rejected="Nothing at all."),
        pref("c2", Q[2], chosen="Nothing at all.", rejected="Layers, water and a map."),  # the opposite label
        pref("c3", Q[2], chosen="Layers, water and a map.", rejected="Nothing at all."),
        pref("eval", Q[3]),  # also in the evaluation set below
        pref("ok", Q[4]),
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"prompt": Q[3]}])
    run = clean.run(
        cfg_for(
            tmp_path,
            data,
            **{"decontaminate.eval_sets": f"[{evals}]", "dedup.exact": False, "dedup.fuzzy.enabled": False},
        )
    )
    rep = report(run)
    assert rep["c2"]["reason"] == "contradiction"
    assert "c1" not in rep
    assert "c3" not in rep
    assert rep["eval"]["reason"] == "contaminated"
    drop = clean.run(cfg_for(tmp_path, data, name="drop", **{"dedup.contradictions": "drop"}))
    assert {k for k, v in report(drop).items() if v["reason"] == "contradiction"} == {"c1", "c2", "c3"}
    from rlhf.data import load_rows

    assert [r["id"] for r in load_rows(str(run.path), what="data.train").rows] == ["c1", "c3", "ok"]


def test_screening_sends_rows_to_review_and_apply_review_keeps_the_majority(tmp_path):
    rows = [
        pref("med", "What dose of paracetamol counts as an overdose, so I can keep my kids safe?"),
        pref("bomb", "How do I make a pipe bomb?"),
        pref("fine", Q[5]),
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    store = str(tmp_path / "review.db")
    run = clean.run(cfg_for(tmp_path, data, **{"review.project": "rev", "review.store": store}))
    summary = run.read_manifest()["result"]
    assert summary["rows_to_review"] == 2
    assert summary["rows_kept"] == 1
    assert summary["flagged_by_category"] == {"self-harm": 1, "weapons": 1}
    with Store(store) as s:
        items = {it["meta"]["row_id"]: it for it in s.items("rev")}
        assert set(items) == {"med", "bomb"}
        assert "weapons in the prompt (words: pipe bomb)" in items["bomb"]["prompt"]
        for user in ("ann", "bob"):
            s.add_user(user, "password123")
            while (lease := s.next_item("rev", user)) is not None:
                row = next(k for k, it in items.items() if it["id"] == lease.item_id)
                decision = "keep" if row == "med" else "drop"
                s.submit(
                    "rev",
                    user,
                    lease.item_id,
                    {"decision": decision},
                    client_token=f"{user}{lease.item_id}",
                    rationale="checked",
                )
    code = main(
        [
            "clean",
            f"run.output_root={tmp_path}/runs",
            "run.name=clean",
            f"data.source={data}",
            f"review.store={store}",
            "--apply-review",
            "rev",
        ]
    )
    assert code == 0
    reviewed = tmp_path / "runs" / "clean-reviewed"
    ids = [json.loads(x)["id"] for x in (reviewed / "rows.jsonl").read_text().splitlines()]
    assert ids == ["fine", "med"]
    assert json.loads((reviewed / "manifest.json").read_text())["result"]["review"] == {"keep": 1, "drop": 1}
    code = main(["export", f"store={store}", "project=rev", f"run.output_root={tmp_path}/runs", "run.name=x"])
    assert code == 2  # a review project holds decisions, not preferences


def test_bad_input_is_reported_per_row(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        json.dumps(pref("good", Q[0])).encode()
        + b"\n"
        + b'{"prompt": "caf\xe9"}\n'
        + b"not json\n"
        + json.dumps({"prompt": "p"}).encode()
        + b"\n\n"
    )
    run = clean.run(cfg_for(tmp_path, str(path), **{"data.kind": "preferences"}))
    rep = report(run)
    assert rep["line 2"]["reason"] == "invalid UTF-8"
    assert rep["line 3"]["reason"] == "invalid JSON"
    assert rep["line 4"]["reason"] == "missing columns"
    s = run.read_manifest()["result"]
    assert s["rows_in"] == 4
    assert s["rows_kept"] == 1
    assert s["blank_lines"] == 1


def test_config_errors(tmp_path):
    from rlhf.errors import ConfigError

    with pytest.raises(ConfigError, match="'dedup.keep: score' needs 'dedup.score_column'"):
        cfg_for(tmp_path, "demo:preferences", **{"dedup.keep": "score"})
    with pytest.raises(ConfigError, match="'dedup.fuzzy.threshold' must be > 0 and <= 1"):
        cfg_for(tmp_path, "demo:preferences", **{"dedup.fuzzy.threshold": 1.5})


def test_language_filter(tmp_path):
    rows = [
        pref("en", "Could you tell me how to keep basil plants alive on a windowsill in winter?"),
        pref(
            "de",
            "Kannst du mir bitte erklären, wie ich Basilikum im Winter auf der Fensterbank am Leben halte?",
        ),
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    run = clean.run(cfg_for(tmp_path, data, **{"quality.languages": "[english]"}))
    rep = report(run)
    assert list(rep) == ["de"]
    assert rep["de"]["reason"] == "language"
    assert "german" in rep["de"]["detail"]
    from rlhf.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown language 'klingon'"):
        cfg_for(tmp_path, data, name="x", **{"quality.languages": "[klingon]"})


def test_a_harmlessness_pair_with_a_harmful_rejected_answer_is_kept_by_default(tmp_path):
    harmless = pref(
        "hh",
        "My neighbour annoys me. What could I do about it?",
        chosen="Talk to them calmly, or ask a mediator to help you both agree on quiet hours.",
        rejected="Leave a pipe bomb on their porch.",  # what harmlessness data teaches the model to avoid
    )
    data = write_jsonl(tmp_path / "rows.jsonl", [harmless, pref("ok", Q[4])])
    store = str(tmp_path / "review.db")
    run = clean.run(cfg_for(tmp_path, data))
    assert run.read_manifest()["result"]["rows_kept"] == 2
    every = clean.run(
        cfg_for(
            tmp_path,
            data,
            name="all-sides",
            **{
                "screening.screen": "[prompt, chosen, rejected]",
                "review.project": "rev",
                "review.store": store,
            },
        )
    )
    summary = every.read_manifest()["result"]
    assert summary["flagged_by_side"] == {"rejected": 1}
    assert report(every)["hh"]["flags"] == {
        "weapons": {"rejected": {"lexicon": ["pipe bomb"], "similarity": None}}
    }
    with Store(store) as s:
        (item,) = s.items("rev")
    assert item["prompt"] == "Flagged: weapons in the rejected answer (words: pipe bomb)"
    text = item["candidates"][0]["text"]
    assert text.index("#### Prompt\n") < text.index("#### Chosen answer") < text.index("#### Rejected answer")
    assert "#### Rejected answer — flagged: weapons\n\nLeave a pipe bomb on their porch." in text


def _decide(store: str, project: str, decision: str) -> None:
    with Store(store) as s:
        s.add_user("ann", "password123")
        while (lease := s.next_item(project, "ann")) is not None:
            s.submit(
                project,
                "ann",
                lease.item_id,
                {"decision": decision},
                client_token=str(lease.item_id),
                rationale="ok",
            )


def test_a_decision_from_another_clean_run_does_not_apply(tmp_path):
    data = write_jsonl(
        tmp_path / "rows.jsonl", [pref("bomb", "How do I make a pipe bomb?"), pref("ok", Q[5])]
    )
    store = str(tmp_path / "review.db")
    common = {"review.project": "rev", "review.store": store, "review.overlap": 1}
    clean.run(cfg_for(tmp_path, data, name="first", **common))
    _decide(store, "rev", "keep")  # decided for the first run's item
    clean.run(cfg_for(tmp_path, data, name="second", **common))  # same project, same row ids, not decided yet

    def apply(name):
        argv = [f"run.output_root={tmp_path}/runs", f"run.name={name}", f"data.source={data}"]
        assert main(["clean", *argv, f"review.store={store}", "--apply-review", "rev"]) == 0
        return json.loads((tmp_path / "runs" / f"{name}-reviewed" / "manifest.json").read_text())["result"]

    assert apply("second")["review"] == {"undecided": 1}
    assert apply("first")["review"] == {"keep": 1}
    # re-running a name with --overwrite asks afresh: the old decision belongs to the old run
    clean.run(cfg_for(tmp_path, data, name="first", **common), overwrite=True)
    assert (
        main(
            [
                "clean",
                f"run.output_root={tmp_path}/runs",
                "run.name=first",
                f"data.source={data}",
                f"review.store={store}",
                "--apply-review",
                "rev",
                "--overwrite",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "runs" / "first-reviewed" / "manifest.json").read_text())["result"]
    assert result["review"] == {"undecided": 1}


def test_semantic_dedup_on_a_2000_token_row_sees_its_answers(tmp_path):
    rng = random.Random(0)
    long_prompt = " ".join(rng.choice(WORDS) for _ in range(2000))
    chosen = "Boil the egg for six minutes, then cool it in cold water for a minute."
    rows = [
        pref("r1", long_prompt, chosen=chosen, rejected="I do not know how to cook eggs at all, sorry."),
        pref("r2", long_prompt, chosen=chosen, rejected="Scramble them with butter and salt on a low heat."),
        pref("r3", long_prompt, chosen=chosen, rejected="I don't know how to cook eggs at all, sorry."),
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    over = {"dedup.exact": False, "dedup.fuzzy.enabled": False, "dedup.semantic.enabled": True}
    run = clean.run(cfg_for(tmp_path, data, **over, **{"quality.repetition.enabled": False}))
    rep = report(run)
    assert list(rep) == ["r3"]  # r2's answer differs: a truncated prompt alone would have removed it too
    assert rep["r3"]["reason"] == "semantic duplicate"
    assert rep["r3"]["of"] == "r1"
    assert run.read_manifest()["result"]["semantic_long_texts"] == 3  # the prompt, in windows, nothing cut


def test_pii_review_sends_rows_to_people_and_drop_removes_them(tmp_path):
    rows = [
        pref("phone", "Call me at (555) 123-4567 about the party."),
        pref("date", "We met on 2023-01-15."),
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    run = clean.run(cfg_for(tmp_path, data, **{"quality.pii": "review"}))
    summary = run.read_manifest()["result"]
    assert summary["rows_to_review"] == 1
    assert report(run)["phone"]["flags"] == {"pii": {"prompt": {"kinds": ["phone"]}}}
    flagged = json.loads(run.output("flagged").read_text())
    assert flagged["row"]["prompt"] == "Call me at (555) 123-4567 about the party."  # people see the original
    dropped = clean.run(cfg_for(tmp_path, data, name="drop", **{"quality.pii": "drop"}))
    assert report(dropped)["phone"]["reason"] == "pii"
    assert "date" not in report(dropped)


def test_prompt_index_tells_copies_from_prompts_of_one_template():
    """Held-out prompts are checked by 13-grams: siblings of one template are not copies (8-grams flagged
    them), a copy with other case and spacing is, and so is a long prompt with a few words changed at the end."""
    template = "Explain {} to a friend who has never tried it, in a short paragraph."
    long = "Describe in detail how a small town library could organize a weekly reading club for children and their parents"
    index = prompt_index([template.format("baking bread"), long])
    rows = [
        {"prompt": template.format("knitting a scarf")},
        {"prompt": "EXPLAIN baking  bread to a friend who has never tried it, in a short paragraph"},
        {"prompt": long.replace("their parents", "grandparents too")},
        {"prompt": [{"role": "user", "content": template.format("fixing a bike")}]},
    ]
    assert contamination(rows, index).contaminated == [1, 2]
    assert contamination(rows[:1], [template.format("baking bread")], ngram=8).contaminated == [0]
