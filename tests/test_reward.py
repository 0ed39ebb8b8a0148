"""Reward stage on the tiny model: learns a marker preference, swap check flips (scored by RewardScorer),
rlhf_reward.json written once with its normalization, margin used, long rows cut from the left and
counted, report files complete, RewardScorer batched == one by one."""

import json
from pathlib import Path

import numpy as np
import pytest
from support.data import marker_rows, write_jsonl

from rlhf.config import load_config
from rlhf.errors import DataError
from rlhf.reward import META_FILE, RewardScorer, accuracy
from rlhf.stages import reward
from rlhf.train import tokenize_pairs


def cfg_for(tmp_path, model, data, **extra):
    over = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": "rm",
        "model.name": model,
        "data.train": data,
        "data.max_length": 48,
        "data.eval_fraction": 0.25,
        "report.bootstrap": 200,
        "trainer.num_train_epochs": 4,
        "trainer.per_device_train_batch_size": 8,
        "trainer.learning_rate": 3e-3,
        "trainer.logging_steps": 5,
        "trainer.save_strategy": "no",
        "trainer.gradient_checkpointing": False,
        "trainer.report_to": "none",
        "trainer.bf16": False,  # fp32 on every CPU; bf16 is tested on its own
        "trainer.dataloader_num_workers": 0,
        "trainer.warmup_steps": 0,
    }
    over.update(extra)
    return load_config(reward.RewardStageConfig, None, [f"{k}={v}" for k, v in over.items()])


@pytest.mark.slow
def test_reward_learns_marker_and_swap_check_flips(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "prefs.jsonl", marker_rows(160, long_prompt_every=10))
    run = reward.run(cfg_for(tmp_path, tiny_model_dir, data))
    report = json.loads((run.path / "rm_report.json").read_text())
    assert report["accuracy"]["value"] >= 0.85, report["accuracy"]
    lo, hi = report["accuracy"]["ci95"]
    assert lo <= report["accuracy"]["value"] <= hi
    assert report["swap_check"]["swapped_label_accuracy"] < 0.5
    assert report["swap_check"]["passed"]
    assert set(report["per_assessor"]) == {"ann", "bob"}
    assert set(report["per_slice"]) == {"long", "short"}
    assert 0 <= report["calibration"]["ece"] <= 1
    assert report["calibration"]["bins"]
    assert "baseline_accuracy" in report["length"]
    html = (run.path / "rm_report.html").read_text()
    for section in (
        "Pairwise accuracy",
        "baseline",
        "reliability diagram",
        "Swap check",
        "per assessor",
        "per slice",
    ):
        assert section.lower() in html.lower(), section
    m = run.read_manifest()
    assert m["data"]["train"]["rows_truncated_left"] > 0  # long prompts were cut from the left, not dropped
    assert m["data"]["train"]["rows_rejected_too_long"] == 0
    assert m["result"]["eval_accuracy"] == report["accuracy"]["value"]
    meta = json.loads((run.model_dir / "rlhf_reward.json").read_text())
    assert meta["max_length"] == 48
    assert meta["norm"]["std"] > 0


@pytest.fixture
def spied(monkeypatch):
    """Every RewardScorer score() call as (model dir, scores), and every write of an rlhf_reward.json."""
    seen = {"scores": [], "meta_writes": []}
    init, score, write_text = RewardScorer.__init__, RewardScorer.score, Path.write_text

    def spy_init(self, model_dir, **kw):
        init(self, model_dir, **kw)
        self.spied_dir = Path(model_dir)

    def spy_score(self, prompts, responses, **kw):
        out = score(self, prompts, responses, **kw)
        seen["scores"].append((self.spied_dir, out))
        return out

    def spy_write(self, *a, **kw):
        if self.name == META_FILE:
            seen["meta_writes"].append(self)
        return write_text(self, *a, **kw)

    monkeypatch.setattr(RewardScorer, "__init__", spy_init)
    monkeypatch.setattr(RewardScorer, "score", spy_score)
    monkeypatch.setattr(Path, "write_text", spy_write)
    return seen


def test_swap_check_scores_with_reward_scorer_and_meta_is_written_once(tmp_path, tiny_model_dir, spied):
    """The swap check scores the held-out rows with RewardScorer on the swapped model (saved in a scratch
    dir of the run, removed after), like the model itself; rlhf_reward.json is written once, its `norm`
    the mean and sample std of the held-out rewards the scorer gave, its `ensemble` the members."""
    data = write_jsonl(tmp_path / "prefs.jsonl", marker_rows(40))
    run = reward.run(
        cfg_for(tmp_path, tiny_model_dir, data, **{"trainer.num_train_epochs": 1, "ensemble": 2})
    )
    assert spied["meta_writes"] == [run.model_dir / META_FILE]
    scratch = run.path / "swap_check"
    assert not scratch.exists()
    by_dir = {}
    for model_dir, scores in spied["scores"]:
        by_dir.setdefault(model_dir, []).append(scores)
    assert set(by_dir) == {run.model_dir, scratch / "model"}
    (chosen, rejected), (swap_chosen, swap_rejected) = by_dir[run.model_dir], by_dir[scratch / "model"]
    report = json.loads((run.path / "rm_report.json").read_text())
    assert len(swap_chosen) == len(chosen) == report["pairs"] == 10
    assert report["swap_check"]["swapped_label_accuracy"] == accuracy(swap_chosen, swap_rejected)
    meta = json.loads((run.model_dir / META_FILE).read_text())
    held_out = chosen + rejected
    assert meta["norm"]["mean"] == pytest.approx(np.mean(held_out), abs=1e-9)
    assert meta["norm"]["std"] == pytest.approx(np.std(held_out, ddof=1), abs=1e-9)
    assert meta["norm"]["n"] == 20
    assert meta["ensemble"] == ["members/1"]
    assert meta["max_length"] == 48
    assert run.read_manifest()["result"]["ensemble"] == report["ensemble"]


def test_scorer_batched_equals_one_by_one_and_left_truncation(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.reward.scorer import META_FILE, RewardScorer, encode_pair

    d = tmp_path / "rm"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model.score.weight.data.normal_()
    model.save_pretrained(d)
    tok.save_pretrained(d)
    (d / META_FILE).write_text(json.dumps({"max_length": 24, "norm": {"mean": 1.0, "std": 2.0}}))
    scorer = RewardScorer(str(d), batch_size=4)
    rows = marker_rows(9, seed=3, long_prompt_every=4)
    prompts, responses = [r["prompt"] for r in rows], [r["chosen"] for r in rows]
    batched = scorer.score(prompts, responses)
    single = [scorer.score([p], [r])[0] for p, r in zip(prompts, responses, strict=True)]
    assert batched == pytest.approx(single, abs=1e-5)
    assert scorer.score(prompts[:1], responses[:1], normalize=True)[0] == pytest.approx(
        (single[0] - 1.0) / 2.0, abs=1e-5
    )
    ids, cut = encode_pair(tok, rows[0]["prompt"], "the marker", 24)
    assert cut
    assert len(ids) == 24
    from rlhf.reward.scorer import format_pair

    full = tok(format_pair(tok, rows[0]["prompt"], "the marker"), add_special_tokens=False)["input_ids"]
    assert len(full) > 24
    assert ids == full[-24:]  # cut from the left: the end (the response) is kept


def test_margin_column_reaches_the_trainer(tmp_path, tiny_model_dir):
    from rlhf.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    rows = [reward.normalize(r, True)[0] for r in marker_rows(4, margin=True)]
    pairs, acct = tokenize_pairs(rows, tok, 48)
    assert [p["margin"] for p in pairs] == [0.5] * 4
    from trl.trainer.reward_trainer import DataCollatorForPreference

    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(pairs)
    assert batch["margin"].tolist() == [0.5] * 4


def test_response_that_cannot_fit_is_rejected_and_reported(tmp_path, tiny_model_dir):
    from rlhf.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    rows = [reward.normalize(r, True)[0] for r in marker_rows(3)]
    rows[1]["chosen"] = [{"role": "assistant", "content": " ".join(["tree"] * 80)}]
    pairs, acct = tokenize_pairs(rows, tok, 48)
    assert len(pairs) == 2
    assert acct["rows_rejected_too_long"] == 1
    assert acct["rejected_too_long"][0]["id"] == "r1"


def test_score_cli_accuracy_and_rewards(tmp_path, tiny_model_dir, capsys):
    from support.tiny import build_tiny_reward_model

    from rlhf.cli import main

    d = build_tiny_reward_model(
        tmp_path / "rm", tiny_model_dir
    )  # with rlhf_reward.json, as `rlhf score` needs
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl", marker_rows(6) + [{"prompt": "q", "chosen": "a", "rejected": "a"}]
    )
    assert main(["score", "--model", d, "--input", pairs]) == 0
    out = capsys.readouterr().out
    assert "6 pairs scored (1 rows rejected {'identical responses': 1})" in out
    assert "accuracy" in out
    resp = write_jsonl(tmp_path / "resp.jsonl", [{"prompt": "the cat", "response": "sat on mat"}] * 2)
    assert main(["score", "--model", d, "--input", resp, "--output", str(tmp_path / "o.jsonl")]) == 0
    scored = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(scored) == 2
    assert scored[0]["reward"] == pytest.approx(scored[1]["reward"])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "x"}])
    assert main(["score", "--model", d, "--input", bad]) == 2
    assert "need 'chosen' and 'rejected'" in capsys.readouterr().err


def test_ensemble_scorer_mean_members_and_spread(tmp_path, tiny_model_dir):
    """An ensemble's score is its members' mean; score_with_spread gives the per-pair std over members."""
    import statistics

    from support.tiny import build_tiny_reward_model

    from rlhf.reward.scorer import RewardScorer

    main_dir = build_tiny_reward_model(tmp_path / "rm", tiny_model_dir, seed=1)
    build_tiny_reward_model(tmp_path / "rm" / "members" / "1", tiny_model_dir, seed=2)
    meta = json.loads((tmp_path / "rm" / "rlhf_reward.json").read_text())
    single = RewardScorer(main_dir)
    prompts, responses = ["tree house", "red marker"], ["marker marker", "no"]
    alone = single.score(prompts, responses)
    (tmp_path / "rm" / "rlhf_reward.json").write_text(json.dumps({**meta, "ensemble": ["members/1"]}))
    ens = RewardScorer(main_dir)
    members = ens.score_members(prompts, responses)
    assert len(ens.members) == 2
    assert members[0] == pytest.approx(alone, abs=1e-5)
    assert members[0] != pytest.approx(members[1], abs=1e-3)  # different heads, different scores
    mean, spread = ens.score_with_spread(prompts, responses)
    assert ens.score(prompts, responses) == pytest.approx(mean, abs=1e-6)
    for i in range(2):
        assert mean[i] == pytest.approx((members[0][i] + members[1][i]) / 2, abs=1e-6)
        assert spread[i] == pytest.approx(statistics.pstdev([members[0][i], members[1][i]]), abs=1e-6)
        assert spread[i] > 0
    assert single.score_with_spread(prompts, responses)[1] == [0.0, 0.0]


def test_no_pairs_left_to_train_on_is_a_clear_error_not_a_trainer_traceback(tmp_path, tiny_model_dir):
    """Two rows: one with an empty chosen answer (rejected), the other held out by eval_fraction — the
    stage says so, naming the data and what to do, before any trainer starts."""
    rows = marker_rows(2)
    rows[0]["chosen"] = ""
    data = write_jsonl(tmp_path / "two.jsonl", rows)
    cfg = cfg_for(tmp_path, tiny_model_dir, data, **{"data.eval_fraction": 0.5})
    with pytest.raises(DataError, match=r"no pairs to train on \(2 rows in, 1 rejected, 1 held out") as err:
        reward.run(cfg)
    assert "two.jsonl" in str(err.value) and "lower data.eval_fraction" in str(err.value)
