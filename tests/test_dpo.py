"""DPO on the tiny model: every loss type changes the weights; LoRA-DPO keeps no reference copy."""

import json

import pytest
import torch
from support.data import marker_rows, write_jsonl
from support.tiny import stage_config

from rlhf.stages import dpo


def weights(path):
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def cfg_for(tmp_path, model, data, name, **extra):
    return stage_config(dpo.DPOStageConfig, tmp_path, model, data, name, **{**extra})


@pytest.fixture
def prefs(tmp_path):
    rows = marker_rows(12)
    rows.append({"id": "too-long", "prompt": " ".join(["tree"] * 90), "chosen": "yes", "rejected": "no"})
    return write_jsonl(tmp_path / "prefs.jsonl", rows)


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge", "robust"])
def test_each_loss_type_changes_weights(tmp_path, tiny_model_dir, prefs, loss):
    run = dpo.run(cfg_for(tmp_path, tiny_model_dir, prefs, f"dpo-{loss}", **{"trainer.loss_type": loss}))
    before, after = weights(tiny_model_dir), weights(run.model_dir)
    assert sum(not torch.equal(before[k], after[k]) for k in before) >= len(before) - 1
    m = run.read_manifest()
    assert m["result"]["global_step"] == 2
    assert m["result"]["reference"] == "frozen copy"
    acct = m["data"]["train"]
    assert acct["rows_in"] == 13
    assert acct["rows_rejected"] == 1
    assert acct["rejected_examples"][0]["id"] == "too-long"
    logged = [r for r in run.read_metrics() if "loss" in r]
    assert logged
    assert any(k.startswith("rewards/margins") for k in logged[-1])


def test_lora_dpo_holds_no_reference_copy(tmp_path, tiny_model_dir, prefs, monkeypatch):
    from trl import DPOTrainer

    seen = {}
    original = DPOTrainer.train

    def spy(self, *a, **kw):
        seen["ref_model"] = self.ref_model
        return original(self, *a, **kw)

    monkeypatch.setattr(DPOTrainer, "train", spy)
    run = dpo.run(cfg_for(tmp_path, tiny_model_dir, prefs, "dpo-lora", **{"model.lora.r": 4}))
    assert seen["ref_model"] is None
    assert json.loads(run.manifest_path.read_text())["result"]["reference"] == "adapter disabled (no copy)"
    before, after = weights(tiny_model_dir), weights(run.model_dir)
    assert not all(torch.equal(before[k], after[k]) for k in before)


def test_drift_guard_logs_kl_and_length(tmp_path, tiny_model_dir, prefs):
    extra = {  # default cadence: at the start and at each checkpoint save
        "drift.num_prompts": 2,
        "drift.max_new_tokens": 6,
        "trainer.max_steps": 2,
        "trainer.save_strategy": "steps",
        "trainer.save_steps": 1,
    }
    run = dpo.run(cfg_for(tmp_path, tiny_model_dir, prefs, "dpo-drift", **extra))
    drift = [r for r in run.read_metrics() if "drift/kl" in r]
    assert [r["step"] for r in drift] == [0, 1, 2]
    assert drift[0]["drift/kl"] == pytest.approx(0.0, abs=1e-5)
    assert drift[0]["drift/length_ratio"] == 1.0
    assert drift[-1]["drift/kl"] != pytest.approx(0.0, abs=1e-5)  # the policy moved away from the reference
    assert run.read_manifest()["result"]["drift"]["alarms"] == []


def test_drift_stop_ends_training_and_says_why(tmp_path, tiny_model_dir, prefs):
    extra = {"drift.every_steps": 1, "drift.max_kl": 1e-9, "drift.action": "stop", "trainer.max_steps": 4}
    run = dpo.run(cfg_for(tmp_path, tiny_model_dir, prefs, "dpo-stop", **extra))
    result = run.read_manifest()["result"]
    assert result["global_step"] == 1
    assert result["drift"]["stopped"]
    assert "drift.max_kl" in result["drift"]["alarms"][0]["alarm"]
    assert result["drift"]["restored_checkpoint"] is None  # no checkpoint was saved within bounds


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_dpo_first_loss_is_log2_and_training_moves_the_weights(tmp_path, tiny_model_dir, prefs, bf16):
    """The same run in fp32 and under bf16 mixed precision (what rlhf picks by itself on a GPU or an
    AVX512-BF16 CPU): at step 1 policy == reference, so the sigmoid loss is ln 2 — exactly in fp32, within
    bf16 rounding under autocast — and the weights move."""
    extra = {"trainer.bf16": bf16, "trainer.loss_type": "sigmoid"}
    run = dpo.run(cfg_for(tmp_path, tiny_model_dir, prefs, f"dpo-{bf16}", **extra))
    losses = [r["loss"] for r in run.read_metrics() if "loss" in r]
    assert len(losses) == 2
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[0] == pytest.approx(0.6931, abs=0.02 if bf16 else 1e-3)
    before, after = weights(tiny_model_dir), weights(run.model_dir)
    assert sum(not torch.equal(before[k], after[k]) for k in before) >= len(before) - 1


def test_drift_probes_through_the_vllm_engine(tmp_path, tiny_model_dir, prefs, monkeypatch):
    """drift.generation.backend=vllm (a stand-in engine, tests/support/fake_vllm.py): each probe writes the
    policy as it is (full weights here: reloaded into the one engine once they changed), the engine samples
    (the fake's 4 ids a response), the training model scores: KL 0 at the start, not after training; the
    engine is stopped and the written policies removed when training ends."""
    from support.fake_vllm import fake_engine_python

    log = tmp_path / "engine-requests.jsonl"
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    extra = {
        "drift.num_prompts": 2,
        "drift.max_new_tokens": 6,
        "drift.generation.backend": "vllm",
        "drift.generation.python": fake_engine_python(tmp_path),
        "drift.generation.start_timeout_s": 60,
        "trainer.max_steps": 2,
        "trainer.save_strategy": "steps",
        "trainer.save_steps": 1,
    }
    run = dpo.run(cfg_for(tmp_path, tiny_model_dir, prefs, "dpo-drift-engine", **extra))
    drift = [r for r in run.read_metrics() if "drift/kl" in r]
    assert [r["step"] for r in drift] == [0, 1, 2]
    assert drift[0]["drift/kl"] == pytest.approx(0.0, abs=1e-5)
    assert drift[-1]["drift/kl"] != pytest.approx(0.0, abs=1e-5)
    assert all(r["drift/length_ratio"] == 1.0 for r in drift)  # every answer is the fake's 4 ids
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    sent = [b for path, b in requests if path == "/v1/completions"]
    assert len(sent) == 3 * 2 and all(b["max_tokens"] == 6 for b in sent)
    assert [b["method"] for path, b in requests if path == "/collective_rpc"] == ["reload_weights"] * 2
    assert not any((run.path / "engine-policy").glob("*"))
