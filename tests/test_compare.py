"""`rlhf compare` on tiny models: every report section, the generation cache (a re-run generates nothing, a
new checkpoint only its own answers), human agreement, the judge, and the arena end to end."""

import json
import shutil

import pytest
import torch
from support.data import write_jsonl
from support.tiny import WORDS, build_tiny_reward_model

from rlhf.cli import main
from rlhf.compare import arena, read_result
from rlhf.config import load_config
from rlhf.stages import compare
from rlhf.store.export import ExportSettings, export_rows
from rlhf.store.service import Store


@pytest.fixture(scope="module")
def three_checkpoints(tiny_model_dir, tmp_path_factory):
    """base, and two perturbed copies (the same tokenizer, different weights)."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("ckpts")
    out = {"base": tiny_model_dir}
    for k, name in enumerate(("warm", "hot"), start=1):
        d = root / name
        shutil.copytree(tiny_model_dir, d)
        m = AutoModelForCausalLM.from_pretrained(d)
        torch.manual_seed(k)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * k * torch.randn_like(p))
        m.save_pretrained(d)
        out[name] = str(d)
    out["rm"] = build_tiny_reward_model(root / "rm", tiny_model_dir)
    return out


@pytest.fixture
def prompts(tmp_path):
    return write_jsonl(
        tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": " ".join(WORDS[i : i + 3])} for i in range(20)]
    )


def cfg_for(tmp_path, ckpts, prompts, names=("base", "warm", "hot"), name="cmp", **extra):
    over = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": name,
        "checkpoints": "[" + ", ".join(f"{{name: {n}, model: '{ckpts[n]}'}}" for n in names) + "]",
        "data.prompts": prompts,
        "data.max_prompt_length": 32,
        "sampling.max_new_tokens": 6,
        "batch_size": 8,
        "reward.model": ckpts["rm"],
        "bootstrap": 100,
        "cache": str(tmp_path / "cache"),
    }
    over.update(extra)
    return load_config(compare.CompareStageConfig, None, [f"{k}={v}" for k, v in over.items()])


def test_compare_three_checkpoints_report_and_cache(tmp_path, three_checkpoints, prompts):
    held_out = write_jsonl(
        tmp_path / "held.jsonl",
        [
            {"id": f"h{i}", "prompt": f"{WORDS[i]} {WORDS[i + 1]}", "chosen": "yes thanks", "rejected": "no"}
            for i in range(8)
        ],
    )
    run = compare.run(cfg_for(tmp_path, three_checkpoints, prompts, **{"human.preferences": held_out}))
    m = run.read_manifest()
    assert m["result"] == {
        n: {"cached": 0, "generated": 20, "seconds": m["result"][n]["seconds"]}
        for n in ("base", "warm", "hot")
    }
    result = json.loads(run.output("compare_json").read_text())
    typed = read_result(run.output("compare_json"))  # the file is the typed result, and reads back as one
    assert typed.to_dict() == result
    assert (
        typed.checkpoints["hot"].vs_baseline.win_rate
        == result["checkpoints"]["hot"]["vs_baseline"]["win_rate"]
    )
    assert (
        typed.bradley_terry.checkpoints[0].checkpoint
        == result["bradley_terry"]["checkpoints"][0]["checkpoint"]
    )
    assert "judge" not in result  # what was not measured is left out of the file
    assert result["prompts"] == 20
    assert result["baseline"] == "base"
    for name, c in result["checkpoints"].items():
        assert c["reward"]["n"] == 20
        assert c["reward"]["ci95"][0] <= c["reward"]["mean"] <= c["reward"]["ci95"][1]
        assert len(c["length"]["tokens"]) == 20
        assert c["kl"]["n"] == 20
        if name != "base":
            assert {"win_rate", "lc_win_rate", "win_rate_ci95", "lc_win_rate_ci95"} <= set(c["vs_baseline"])
    assert result["checkpoints"]["base"]["kl"]["mean"] == pytest.approx(0.0, abs=1e-4)  # the reference itself
    assert result["checkpoints"]["hot"]["kl"]["mean"] > 0.01
    board = result["bradley_terry"]["checkpoints"]
    assert {r["checkpoint"] for r in board} == {"base", "warm", "hot"}
    assert result["bradley_terry"]["battles"] == 60
    assert sum(r["p_best"] for r in board) == pytest.approx(1.0)
    assert next(r for r in board if r["checkpoint"] == "base")["rating"] == pytest.approx(1000.0)
    human = result["human_agreement"]
    assert set(human) == {"base", "warm", "hot"}
    assert human["base"]["implicit_reward"]["rate"] == 0.5  # all ties
    assert 0 <= human["hot"]["logprob"]["rate"] <= 1
    html = run.output("report").read_text()
    for section in (
        "Flags",
        "Leaderboard",
        "Pairwise win rates",
        "Reward vs KL",
        "Response lengths",
        "Agreement with held-out",
        "Against the baseline",
    ):
        assert section in html, section
    assert "<svg" in html
    assert "http" not in html.split("<svg", 1)[0].replace("http://www.w3.org", "")  # self-contained
    answers = [json.loads(x) for x in run.output("answers").read_text().splitlines()]
    assert len(answers) == 20
    assert set(answers[0]["answers"]) == {"base", "warm", "hot"}

    again = compare.run(cfg_for(tmp_path, three_checkpoints, prompts, name="cmp2"))
    assert {n: g["generated"] for n, g in again.read_manifest()["result"].items()} == {
        "base": 0,
        "warm": 0,
        "hot": 0,
    }
    assert json.loads(again.output("answers").read_text().splitlines()[0]) == answers[0]

    four = dict(three_checkpoints, copy=three_checkpoints["hot"] + "-copy")
    shutil.copytree(three_checkpoints["hot"], four["copy"])
    with open(f"{four['copy']}/extra.txt", "w") as f:
        f.write("a different checkpoint: other content, other hash")
    more = compare.run(cfg_for(tmp_path, four, prompts, names=("base", "warm", "hot", "copy"), name="cmp3"))
    gen = {n: g["generated"] for n, g in more.read_manifest()["result"].items()}
    assert gen == {"base": 0, "warm": 0, "hot": 0, "copy": 20}


def test_judge_and_flags(tmp_path, three_checkpoints, prompts):
    cfg = cfg_for(
        tmp_path,
        three_checkpoints,
        prompts,
        names=("base", "hot"),
        **{"judge.model": three_checkpoints["base"], "kl_threshold": 1e-6},
    )
    result = json.loads(compare.run(cfg).output("compare_json").read_text())
    j = result["judge"]["hot"]
    assert 0 <= j["win_rate"] <= 1
    assert 0 <= j["position_bias"] <= 1
    assert any("far from the reference" in f for f in result["flags"])


def test_config_errors(three_checkpoints, tmp_path, prompts):
    from rlhf.errors import ConfigError

    with pytest.raises(ConfigError, match="at least two, with distinct names"):
        cfg_for(tmp_path, three_checkpoints, prompts, names=("base", "base"))
    with pytest.raises(ConfigError, match="'baseline' must name one of the checkpoints"):
        cfg_for(tmp_path, three_checkpoints, prompts, baseline="nope")


def test_arena_battles_votes_leaderboard_and_export(tmp_path, three_checkpoints, prompts, capsys):
    store_path = str(tmp_path / "arena.db")
    cfg = cfg_for(
        tmp_path,
        three_checkpoints,
        prompts,
        **{"arena.project": "arena", "arena.store": store_path, "arena.overlap": 2},
    )
    result = json.loads(compare.run(cfg).output("compare_json").read_text())
    assert result["arena"]["battles"] == 20
    with Store(store_path) as s:
        items = s.items("arena")
        pairs = [frozenset(c["source"]["policy"] for c in it["candidates"]) for it in items]
        assert all(len(p) == 2 for p in pairs)
        assert {len(pairs) // 3, len(pairs) // 3 + 1} >= {pairs.count(p) for p in set(pairs)}
        firsts = [it["candidates"][0]["source"]["policy"] for it in items]
        assert len(set(firsts)) == 3  # sides randomised
        for user in ("ann", "bob"):
            s.add_user(user, "password123")
            while (lease := s.next_item("arena", user)) is not None:
                policies = [
                    next(c["source"]["policy"] for c in it["candidates"] if c["id"] == cand["id"])
                    for cand in lease.candidates
                    for it in items
                    if it["id"] == lease.item_id
                ]
                # both assessors prefer "hot" > "warm" > "base" (ties when equal)
                rank = {"hot": 2, "warm": 1, "base": 0}
                a, b = rank[policies[0]], rank[policies[1]]
                s.submit(
                    "arena",
                    user,
                    lease.item_id,
                    {"choice": "A" if a > b else "B" if b > a else "tie"},
                    client_token=f"{user}{lease.item_id}",
                )
        board = arena.leaderboard(s.items("arena"), s.annotations("arena"), bootstrap=100)
        assert [r["checkpoint"] for r in board["checkpoints"]] == ["hot", "warm", "base"]
        assert board["battles"] == 40
        assert sum(board["votes_per_pair"].values()) == 40
        rows, acct = export_rows(s.items("arena"), s.annotations("arena"), "pairwise", ExportSettings())
        assert acct["items_in"] == 20
        assert acct["items_exported"] == 20
        assert acct["pairs_out"] == len(rows) == 20
    capsys.readouterr()  # forget the compare run's own output
    assert main(["compare", "--leaderboard", "arena", "--store", store_path]) == 0
    out = capsys.readouterr().out
    assert out.index("hot") < out.index("warm") < out.index("base")
    assert "40 votes" in out


def hand_built_result(*, win=0.8, lc=0.6, implicit=0.3, chars=(10.0, 25.0), kl=30.0, ci=(990.0, 1040.0)):
    from rlhf.compare import (
        KL,
        CheckpointResult,
        CompareResult,
        Generation,
        HumanAgreement,
        Leaderboard,
        Lengths,
        RateCI,
        Rating,
        VsBaseline,
    )

    def entry(mean_chars):
        return CheckpointResult(Generation(0, 4, 0.1), Lengths([3, 3, 3, 3], 3.0, mean_chars, 1.0))

    base, new = entry(chars[0]), entry(chars[1])
    new.kl = KL(kl, [kl - 1, kl + 1], 4, per_token=kl / 3)
    new.vs_baseline = VsBaseline(
        win, lc, 1.0, win_rate_ci95=[win - 0.1, win], lc_win_rate_ci95=[lc - 0.1, lc]
    )
    agreement = HumanAgreement(RateCI(implicit, [0, 1], 4), RateCI(0.5, [0, 1], 4))
    board = Leaderboard(
        [Rating("new", 1020.0, list(ci), 0.7), Rating("base", 1000.0, [980.0, 1010.0], 0.3)], 8, "base"
    )
    return CompareResult(
        ["base", "new"],
        "base",
        "base",
        4,
        {"base": base, "new": new},
        human_agreement={"new": agreement},
        bradley_terry=board,
    )


def test_flags_read_the_typed_result():
    from rlhf.compare import flags, terminal_table

    out = flags(hand_built_result(), kl_threshold=20.0)
    assert len(out) == 5, out
    assert out[0].startswith("Possible reward hacking: new beats base by the reward model (80% win rate)")
    assert "implicit reward orders 30%" in out[0]
    assert out[1] == "Length drift: new's answers are 2.5x as long as base's on average."
    assert "falls from 80% to 60% once length is controlled" in out[2]
    assert "KL 30.0 nats per response > threshold 20.0" in out[3]
    assert out[4].startswith("No significant difference between new and base")
    quiet = hand_built_result(
        win=0.55, lc=0.55, implicit=0.6, chars=(10.0, 11.0), kl=1.0, ci=(1015.0, 1030.0)
    )
    assert flags(quiet, kl_threshold=20.0) == []
    table = terminal_table(quiet).splitlines()
    assert table[0].split()[:2] == ["checkpoint", "RM"]
    assert table[2].split() == ["new", "-", "-", "1020", "0.70", "0.55", "0.55", "1.00", "3.0", "0.60"]
