"""`rlhf loop` on tiny models (fp32 on every CPU: each trainer sets bf16: false,
generate and compare sample with precision: float32): two rounds with simulated
assessors and an ensemble reward model, lineage, skipping by hash, resuming an interrupted round, and the
human mode that waits for votes and continues once they arrive through the store API."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.data import write_jsonl
from support.looping import TRAINER, loop_config, write_loop_files
from support.rewards import liking_marker
from support.tiny import WORDS

from rlhf.cli import main
from rlhf.compare.result import CompareResult, HumanAgreement, RateCI
from rlhf.config import load_config
from rlhf.loop import Loop, Waiting, judging
from rlhf.loop.config import LoopConfig
from rlhf.loop.evidence import promotion
from rlhf.loop.labels import LabelsRun, assemble, held_out
from rlhf.loop.lineage import lineage_text
from rlhf.loop.simulate import SimulatedAssessor, progress, vote
from rlhf.runs import RunDir, RunSettings
from rlhf.store.service import Store


@pytest.fixture
def loop_files(tmp_path):
    return write_loop_files(tmp_path)


def actions(loop: Loop) -> dict[str, str]:
    return {r.key: r.action for r in loop.records}


@pytest.mark.slow
def test_two_rounds_lineage_skip_and_resume(tmp_path, tiny_model_dir, loop_files, monkeypatch):
    cfg = loop_config(tmp_path, tiny_model_dir, *loop_files)
    real_finish = RunDir.finish

    def killed_in_round_2(self, **kw):
        if self.path.name == "r2-dpo":
            raise KeyboardInterrupt("killed")  # interrupted before the run could finish
        return real_finish(self, **kw)

    monkeypatch.setattr(RunDir, "finish", killed_in_round_2)
    first = Loop(cfg, source="test")
    with pytest.raises(KeyboardInterrupt):
        first.run()
    assert list(actions(first))[-1] == "r2-reward"  # r2-dpo was running when it was interrupted
    assert (first.dir / "r2-dpo" / "manifest.json").exists()
    assert not (first.dir / "r2-dpo" / "COMPLETED").exists()
    monkeypatch.setattr(RunDir, "finish", real_finish)

    again = Loop(cfg, source="test")
    state = again.run()
    done = actions(again)
    finished_before = [k for k in done if k.startswith(("r0-", "r1-")) and not k.endswith("collect")]
    assert finished_before == ["r0-sft", "r1-generate", "r1-export", "r1-reward", "r1-dpo", "r1-compare"]
    assert all(done[k] == "skipped" for k in finished_before + ["r2-generate", "r2-export", "r2-reward"])
    assert done["r2-dpo"] in ("resumed", "rerun")
    assert done["r2-compare"] == "ran"
    assert state["status"] == "completed"
    assert set(state["rounds"]) == {"1", "2"}

    # round 2 chose 5 of its 10 pooled prompts by ensemble disagreement; no prompt was used twice
    sel = state["rounds"]["2"]["selection"]
    assert sel["method"] == "disagreement"
    assert len(sel["picked"]) == 5
    assert len(sel["values"]) == 10
    r1, r2 = (set(state["rounds"][r]["prompt_ids"]) for r in ("1", "2"))
    assert len(r1) == 5
    assert len(r2) == 5
    assert not r1 & r2
    eval_ids = {json.loads(x)["id"] for x in (again.dir / "prompts" / "eval.jsonl").read_text().splitlines()}
    assert len(eval_ids) == 6
    assert not eval_ids & (r1 | r2)

    # simulated assessors voted through the store: overlap 2 on every item, 2 judgements each
    with Store(again.store, create=False) as store:
        for r in ("1", "2"):
            project = state["rounds"][r]["project"]
            assert project.startswith(f"lp-r{r}-")
            p = progress(store.items(project), store.annotations(project), overlap=2)
            assert p == {"items": 5, "complete": 5, "share": 1.0, "judgements": 10}
            assert state["rounds"][r]["agreement"]["pairs"] == 5
    # labels accumulate: round 2's reward model trains on rounds 1 and 2 (minus the human slice), DPO on
    # round 2's pairs plus a replay share of round 1's; the slice grows and is never trained on
    r1_counts, r2_counts = state["rounds"]["1"]["labels"], state["rounds"]["2"]["labels"]
    assert set(r2_counts["reward_train"]) == {"r1", "r2"}
    assert r2_counts["reward_train"]["r1"] == r1_counts["reward_train"]["r1"]
    rm2 = json.loads((again.dir / "r2-reward" / "manifest.json").read_text())
    by_round = rm2["data"]["train"]["rows_by_slice"]  # validated rows (a pair with equal answers is not)
    assert set(by_round) == {"r1", "r2"}
    assert all(0 < by_round[k] <= r2_counts["reward_train"][k] for k in by_round)
    assert r2_counts["dpo_train"]["r2"] == r2_counts["reward_train"]["r2"]
    assert r2_counts["dpo_train"].get("r1", 0) <= round(0.5 * r2_counts["dpo_train"]["r2"])
    assert sum(r2_counts["human_slice"].values()) >= sum(r1_counts["human_slice"].values())
    slice_rows = (again.dir / "r2-labels" / "human_slice.jsonl").read_text().splitlines()
    trained = (again.dir / "r2-labels" / "reward_train.jsonl").read_text() + (
        again.dir / "r2-labels" / "dpo_train.jsonl"
    ).read_text()
    for row in map(json.loads, slice_rows):
        assert row["item_id"] not in trained
    # the verdict rests on the held-out slice and names its strength
    verdict = state["rounds"]["2"]["verdict"]
    assert verdict["evidence"] == "human slice"
    assert verdict["n"] == len(slice_rows)
    assert "held-out human pairs" in verdict["text"]
    assert state["rounds"]["2"]["oracle"]["n"] == 6
    # the reward model is an ensemble of 2: members on disk, their mean and spread
    meta = json.loads((again.dir / "r1-reward" / "model" / "rlhf_reward.json").read_text())
    assert meta["ensemble"] == ["members/1"]
    rm = json.loads((again.dir / "r1-reward" / "manifest.json").read_text())["result"]["ensemble"]
    assert rm["members"] == 2
    assert len(rm["member_accuracy"]) == 2

    text = lineage_text(again.dir, again.dir)
    round2 = text.split("\n\n")[1]
    for stage in ("compare", "dpo", "reward", "export", "generate", "sft"):
        assert f"of {stage} " in round2 or round2.startswith(stage), (stage, round2)
    # round 2 starts from round 1's best (r1-dpo if it was promoted, else r0-sft) and compares against it
    assert Path(state["rounds"]["1"]["best"]).name in round2
    assert "r2-reward" in round2

    # a third run changes nothing: every step is skipped
    third = Loop(cfg, source="test")
    third.run()
    assert {a for k, a in actions(third).items() if not k.endswith("collect")} == {"skipped"}


@pytest.mark.slow
def test_human_mode_waits_then_continues(tmp_path, tiny_model_dir, loop_files, monkeypatch, capsys):
    prompts, sft = loop_files
    cfg_path = tmp_path / "human.yaml"
    cfg = loop_config(tmp_path, tiny_model_dir, prompts, sft, rounds=1, **{"assessors.source": "human"})
    cfg_path.write_text((tmp_path / "loop.yaml").read_text())
    with pytest.raises(Waiting, match=r"0/5 items of 'lp-r1-[0-9a-f]{8}' complete"):
        Loop(cfg, source="test").run()
    assert json.loads((tmp_path / "runs" / "lp" / "loop.json").read_text())["status"] == "waiting"
    # the CLI says the same and exits 0, naming the command that serves the app
    assert main(["loop", "--config", str(cfg_path), "assessors.source=human"]) == 0
    out = capsys.readouterr().out
    assert "waiting for labels: 0/5 items" in out
    project = json.loads((tmp_path / "runs" / "lp" / "loop.json").read_text())["rounds"]["1"]["project"]
    assert f"rlhf label store={tmp_path / 'runs' / 'lp' / 'labels.db'} project={project}" in out
    # people vote (here: through the same store API the app uses), then the loop goes on
    with Store(str(tmp_path / "runs" / "lp" / "labels.db"), create=False) as store:
        made = vote(
            store, project, [SimulatedAssessor("ann", 0.1), SimulatedAssessor("bob", 0.1)], liking_marker
        )
    assert sum(made.values()) == 10
    loop = Loop(cfg, source="test")
    state = loop.run()
    assert state["status"] == "completed"
    assert actions(loop)["r1-generate"] == "skipped"
    assert actions(loop)["r1-export"] == "ran"
    assert state["rounds"]["1"]["verdict"]["text"]


def test_loop_config_errors_are_named(tmp_path):
    from rlhf.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: sac\n")
    with pytest.raises(ConfigError, match="algorithm"):
        load_config(LoopConfig, bad)
    with pytest.raises(ConfigError, match="assessors.simulated"):
        load_config(LoopConfig, None, ["assessors.simulated=[]"])
    few = write_jsonl(tmp_path / "few.jsonl", [{"id": f"p{i}", "prompt": "hi"} for i in range(3)])
    cfg = load_config(LoopConfig, None, [f"prompts={few}", f"run.output_root={tmp_path}"])
    with pytest.raises(ConfigError, match="eval_prompts"):
        Loop(cfg).split_prompts()
    assert judging.checkpoint_name(str(tmp_path / "lp" / "r1-dpo"), tmp_path / "lp") == "r1-dpo"
    assert judging.checkpoint_name("smollm2-135m-instruct", tmp_path / "lp") == "start"
    # prompts without ids get the row ids rlhf reports them by, so rounds can tell which were used
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"prompt": f"question {i}"} for i in range(8)])
    cfg = load_config(LoopConfig, None, [f"prompts={bare}", f"run.output_root={tmp_path}", "eval_prompts=3"])
    eval_file, pool = Loop(cfg).split_prompts()
    eval_ids = [json.loads(x)["id"] for x in eval_file.read_text().splitlines()]
    assert len(eval_ids) == 3
    assert len(pool) == 5
    assert len(set(eval_ids) | {r["id"] for r in pool}) == 8
    assert all(isinstance(i, str) for i in eval_ids)


@pytest.mark.slow
def test_ppo_round_without_sft(tmp_path, tiny_model_dir, loop_files, monkeypatch):
    """algorithm: ppo, stages.sft: null — PPO against the round's reward model, from the policy itself."""
    ppo_settings = {
        "model": {"lora": None},
        "reward": {"missing_eos_penalty": None},
        "data": {"max_prompt_length": 32},
        "sampling": {"max_new_tokens": 6},
        "ppo": {
            "steps": 2,
            "rollout_batch_size": 4,
            "minibatch_size": 2,
            "learning_rate": 1e-2,
            "save_steps": 0,
            "bf16": False,
        },
    }
    cfg = loop_config(
        tmp_path,
        tiny_model_dir,
        *loop_files,
        rounds=1,
        algorithm="ppo",
        **{"stages.sft": None, "stages.ppo": ppo_settings},
    )
    loop = Loop(cfg, source="test")
    state = loop.run()
    assert list(actions(loop)) == [
        "r1-generate",
        "r1-collect",
        "r1-export",
        "r1-reward",
        "r1-ppo",
        "r1-compare",
    ]
    ppo_manifest = json.loads((loop.dir / "r1-ppo" / "manifest.json").read_text())
    assert ppo_manifest["status"] == "completed"
    assert ppo_manifest["inputs"]["reward.model"]["path"].startswith(str(loop.dir / "r1-reward"))
    result = json.loads((loop.dir / "r1-compare" / "compare.json").read_text())
    assert result["baseline"] == "start"
    assert set(result["names"]) == {"start", "r1-ppo"}
    assert state["rounds"]["1"]["verdict"]["text"]


@pytest.mark.slow
def test_stale_labels_never_reach_training_after_sft_changes(tmp_path, tiny_model_dir, loop_files):
    """SFT changes -> new candidates -> a new project version, a new export, and DPO's data holds votes on
    the new policy's answers only; lineage follows the new generate run."""
    prompts, sft = loop_files
    first = Loop(loop_config(tmp_path, tiny_model_dir, prompts, sft, rounds=1), source="test")
    old = first.run()["rounds"]["1"]
    changed = loop_config(
        tmp_path,
        tiny_model_dir,
        prompts,
        sft,
        rounds=1,
        **{"stages.sft.trainer": {**TRAINER, "learning_rate": 5e-2}},
    )
    again = Loop(changed, source="test")
    new = again.run()["rounds"]["1"]
    done = actions(again)
    assert done["r0-sft"] == "rerun"
    assert done["r1-generate"] == "rerun"
    assert done["r1-export"] == "rerun"
    assert new["project"] != old["project"]
    with Store(again.store, create=False) as store:
        new_items = {it["external_id"] for it in store.items(new["project"])}
        old_votes = len(store.annotations(old["project"]))
    assert old_votes == 10  # the old votes are kept in their own project, not deleted
    export = json.loads((again.dir / "r1-export" / "manifest.json").read_text())
    assert export["project"] == new["project"]
    dpo_rows = [json.loads(x) for x in (again.dir / "r1-labels" / "dpo_train.jsonl").read_text().splitlines()]
    assert dpo_rows
    assert {r["item_id"] for r in dpo_rows} <= new_items
    text = lineage_text(again.dir, again.dir)
    assert str(again.dir / "r1-generate") in text
    assert "r1-labels" in text


def test_promotion_rests_on_held_out_evidence_and_its_interval():
    def result(new_ci, best_rate=0.5):
        def agreement(rate, ci):
            r = RateCI(rate, ci, 180)
            return HumanAgreement(r, r, r, "ref", "run manifest")

        res = CompareResult(["r1-dpo", "r2-dpo"], "r1-dpo", "r1-dpo", prompts=64, checkpoints={})
        res.human_agreement = {
            "r1-dpo": agreement(best_rate, [best_rate - 0.07, best_rate + 0.07]),
            "r2-dpo": agreement(sum(new_ci) / 2, new_ci),
        }
        return res

    yes = promotion("human", 0.5, result([0.52, 0.64]), "r1-dpo", "r2-dpo")
    assert yes.promoted
    assert (
        yes.text
        == "r2-dpo agrees with 58% [52%, 64%] of 180 held-out human pairs vs 50% for r1-dpo — promoted"
    )
    wide = promotion("human", 0.5, result([0.45, 0.71]), "r1-dpo", "r2-dpo")
    assert not wide.promoted
    assert "lower bound 45% does not clear 50%" in wide.text
    behind = promotion("human", 0.5, result([0.52, 0.64], best_rate=0.62), "r1-dpo", "r2-dpo")
    assert not behind.promoted
    none = promotion("human", 0.5, CompareResult(["a", "b"], "a", "a", prompts=64, checkpoints={}), "a", "b")
    assert not none.promoted
    assert "no held-out human pairs" in none.text


@pytest.mark.slow
def test_sigkill_of_the_loop_process_loses_no_acknowledged_label(tmp_path, tiny_model_dir, loop_files):
    """`rlhf loop` as a real process, SIGKILLed while its simulated assessors vote: the rerun resumes, every
    judgement the store had acknowledged is still there and in the export, and nothing is counted twice."""
    prompts, sft = loop_files
    loop_config(
        tmp_path, tiny_model_dir, prompts, sft, rounds=1,
        **{"assessors.reward.function": "support.rewards:slow_liking_marker"},
    )  # fmt: skip
    cmd = [sys.executable, "-m", "rlhf", "loop", "--config", str(tmp_path / "loop.yaml")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "HF_HUB_OFFLINE": "1"}
    db = tmp_path / "runs" / "lp" / "labels.db"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    acknowledged: set = set()
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                with sqlite3.connect(db) as con:
                    try:
                        acknowledged = {
                            row for row in con.execute("SELECT item_id, assessor_id FROM annotations")
                        }
                    except sqlite3.OperationalError:
                        acknowledged = set()
                if len(acknowledged) >= 3:
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.05)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the loop finished before it could be killed mid-vote"
    assert 3 <= len(acknowledged) < 10
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    with sqlite3.connect(db) as con:
        after = list(con.execute("SELECT item_id, assessor_id FROM annotations"))
    assert acknowledged <= set(after)
    assert len(after) == len(set(after)) == 10  # 5 items x overlap 2, none twice
    state = json.loads((tmp_path / "runs" / "lp" / "loop.json").read_text())
    assert state["status"] == "completed"
    export = json.loads((tmp_path / "runs" / "lp" / "r1-export" / "manifest.json").read_text())
    assert export["accounting"]["votes_in"] == 10


def test_labels_split_by_item_accumulate_and_drop_evaluation_texts(tmp_path):
    """The labels run: held-out items never train, earlier rounds accumulate for the reward model and
    replay for DPO, and a training pair that contains a held-out evaluation prompt is dropped and counted."""

    def pairs(r, n):
        return [
            {"id": f"r{r}-{i}", "item_id": f"r{r}-item{i // 2}", "prompt": f"round {r} question {i} about {WORDS[i]} {WORDS[i + 1]} and more",
             "chosen": f"a good answer {i} number {r} with words", "rejected": f"a bad answer {i} number {r} with words"}
            for i in range(n)
        ]  # fmt: skip

    leaked = "please tell me everything about the blue river stone today"
    trained_item = next(f"leak{k}" for k in range(100) if not held_out(f"leak{k}", 0.25, 0))
    e1 = write_jsonl(tmp_path / "e1.jsonl", pairs(1, 20))
    e2 = write_jsonl(
        tmp_path / "e2.jsonl",
        pairs(2, 20) + [{**pairs(2, 1)[0], "id": "leak", "item_id": trained_item, "prompt": leaked}],
    )
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"id": "e", "prompt": leaked}])
    run = RunSettings(name="r2-labels", output_root=str(tmp_path / "runs"), seed=0)
    data = assemble(LabelsRun(run, [e1, e2], evals, 0.25, True, 0.5), seed=0)
    c = data.counts
    assert c["decontaminated"]["reward_train"] == 1
    assert set(c["reward_train"]) == {"r1", "r2"}
    held = {json.loads(x)["item_id"] for x in data.human_slice.read_text().splitlines()}
    trained = [json.loads(x) for x in data.reward_train.read_text().splitlines()]
    assert held
    assert not held & {r["item_id"] for r in trained}
    assert sum(c["reward_train"].values()) + sum(c["human_slice"].values()) == 40  # 41 in, 1 contaminated
    before_cleaning = c["dpo_train"]["r2"] + c["decontaminated"]["dpo_train"]
    assert c["dpo_train"]["r1"] == round(0.5 * before_cleaning)  # replay: half as many earlier pairs
    assert leaked not in data.policy_train.read_text()
    manifest = json.loads((tmp_path / "runs" / "r2-labels" / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"export[r1]", "export[r2]", "eval_prompts"}


def test_labels_keep_prompts_that_only_share_a_template_with_held_out_ones(tmp_path):
    """Prompts written from one template are not copies of each other: a training pair whose prompt shares
    the template's words with a held-out prompt trains (8-grams flagged a third of the demo's pairs); a
    copy of a held-out prompt with other case and spacing is still dropped."""
    template = "Explain {} to a friend who has never tried it, in a short paragraph."
    topics = ["baking bread", "running a marathon", "growing tomatoes", "knitting a scarf", "fixing a bike"]
    rows = [
        {"id": f"p{i}", "item_id": f"item{i}", "prompt": template.format(t), "chosen": f"yes {i} indeed",
         "rejected": f"no {i} not really"}
        for i, t in enumerate(topics[1:])
    ]  # fmt: skip
    copy = "EXPLAIN baking   bread to a friend who has never tried it, in a short paragraph."
    rows.append({**rows[0], "id": "copy", "item_id": "item-copy", "prompt": copy})
    e1 = write_jsonl(tmp_path / "e1.jsonl", rows)
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"id": "e", "prompt": template.format(topics[0])}])
    run = RunSettings(name="r1-labels", output_root=str(tmp_path / "runs"), seed=0)
    data = assemble(LabelsRun(run, [e1], evals, 0.0, True, 0.0), seed=0)
    assert data.counts["decontaminated"] == {"reward_train": 1, "dpo_train": 1}
    trained = {json.loads(x)["id"] for x in data.reward_train.read_text().splitlines()}
    assert trained == {"p0", "p1", "p2", "p3"}
