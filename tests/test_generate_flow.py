"""generate -> store -> judgements -> export -> stats, on the tiny model, and the users/stats/import CLIs."""

import io
import json
import uuid

import pytest
from support.data import write_jsonl

from rlhf.cli import main
from rlhf.config import load_config
from rlhf.stages import export, generate, importer
from rlhf.store.service import Store


def gen_cfg(tmp_path, model, store, **extra):
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"id": "p1", "prompt": "the cat sat"},
            {
                "id": "p2",
                "prompt": [
                    {"role": "user", "content": "hello"},
                    {"role": "assistant", "content": "yes"},
                    {"role": "user", "content": "big red apple"},
                ],
            },
            {"id": "p3", "prompt": "  "},
            {"id": "p4", "prompt": " ".join(["tree"] * 80)},
            {"id": "p5", "prompt": "one two three"},
        ],
    )
    over = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": "gen",
        "policies": f"[{model}, {model}]",
        "data.prompts": prompts,
        "store": store,
        "k": 4,
        "project.task": "ranking",
        "project.overlap": 2,
        "sampling.max_new_tokens": 6,
        "batch_size": 2,
        "data.max_prompt_length": 40,
        "data.limit": "null",
    }
    over.update(extra)
    return load_config(generate.GenerateStageConfig, None, [f"{k}={v}" for k, v in over.items()])


def test_generate_label_export_stats(tmp_path, tiny_model_dir, store_target, capsys):
    run = generate.run(gen_cfg(tmp_path, tiny_model_dir, store_target))
    m = run.read_manifest()
    acct = m["data"]["prompts"]
    assert acct["rows_in"] == 5
    assert acct["rows_rejected"] == 2
    assert acct["rejected_by_reason"] == {"empty prompt": 1, "too long": 1}
    assert m["result"]["items_added"] == 3
    assert m["result"]["candidates"] == 12
    assert m["result"]["new_tokens"] > 0
    store = Store(store_target)
    items = store.items("demo")
    assert len(items) == 3
    assert all(len(it["candidates"]) == 4 for it in items)
    src = items[0]["candidates"][0]["source"]
    assert src["policy"] == tiny_model_dir
    assert src["sampling"]["max_new_tokens"] == 6
    assert src["seed"] == 42
    assert [c["source"]["policy_index"] for c in items[0]["candidates"]] == [0, 1, 0, 1]
    assert isinstance(next(it for it in items if it["external_id"] == "p2@gen")["prompt"], list)
    for user in ("ann", "bob"):
        store.add_user(user, "password123")
        while (lease := store.next_item("demo", user)) is not None:
            ranking = sorted(c["id"] for c in lease.candidates)  # both rank by candidate id: full agreement
            store.submit("demo", user, lease.item_id, {"ranking": ranking}, client_token=uuid.uuid4().hex)
    store.close()
    cfg = load_config(
        export.ExportStageConfig,
        None,
        [f"run.output_root={tmp_path / 'runs'}", f"store={store_target}", "margin=true"],
    )
    out = export.run(cfg)
    acct = out.read_manifest()["accounting"]
    assert acct["items_in"] == 3
    assert acct["items_exported"] == 3
    assert acct["pairs_out"] == 18
    rows = [json.loads(x) for x in (out.path / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 18
    assert all(r["margin"] == 1.0 for r in rows)
    assert all(isinstance(r["prompt"], list) for r in rows)  # one format: conversational
    from datasets import load_from_disk

    assert len(load_from_disk(str(out.path / "dataset"))) == 18
    capsys.readouterr()
    assert main(["stats", "demo", "--store", store_target, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["alpha"] == {"level": "ordinal", "value": 1.0}
    assert stats["assessors"]["ann"]["annotations"] == 3


def test_users_cli_and_errors(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "u.db")
    monkeypatch.setattr("sys.stdin", io.StringIO("secret-pass\n"))
    assert main(["users", "add", "lead", "--role", "admin", "--store", db, "--password-stdin"]) == 0
    assert main(["users", "list", "--store", db]) == 0
    assert "lead" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "add", "x", "--store", db, "--password-stdin"]) == 2
    assert "too short" in capsys.readouterr().err
    assert main(["users", "disable", "nobody", "--store", db]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    assert main(["stats", "nope", "--store", db]) == 2
    assert "no project 'nope'" in capsys.readouterr().err
    assert Store(db).authenticate("lead", "secret-pass") == {"username": "lead", "role": "admin"}


def test_import_reports_each_reject(tmp_path):
    src = write_jsonl(
        tmp_path / "prefs.jsonl",
        [
            {"prompt": "q", "chosen": "good", "rejected": "bad"},
            {"prompt": "q", "chosen": "same", "rejected": "same"},
            {
                "chosen": "\n\nHuman: hi\n\nAssistant: hello",
                "rejected": "\n\nHuman: hi\n\nAssistant: go away",
            },
            {"prompt": "q", "chosen": ""},
        ],
    )
    cfg = load_config(importer.ImportStageConfig, None, [f"run.output_root={tmp_path}", f"source={src}"])
    run = importer.run(cfg)
    acct = run.read_manifest()["accounting"]
    assert acct["rows_in"] == 4
    assert acct["rows_kept"] == 2
    assert acct["rows_rejected"] == 2
    rejected = [json.loads(x) for x in (run.path / "rejected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejected] == ["line 2", "line 4"]


def test_generate_config_errors():
    from rlhf.errors import ConfigError

    with pytest.raises(ConfigError, match="a pairwise project needs k=2"):
        load_config(generate.GenerateStageConfig, None, ["k=3"])
