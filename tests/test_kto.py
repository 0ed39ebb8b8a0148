"""KTO on the tiny model (fp32 pinned: `trainer.bf16=false`): the weights move, LoRA-KTO keeps no reference
copy, the class weights follow the data's balance, over-long rows are rejected by id, pairs become two rows,
resume continues from the last checkpoint, and a KTO run directory is a model `rlhf compare` takes."""

import random

import pytest
import torch
from support.data import marker_rows, write_jsonl
from support.tiny import WORDS, stage_config

from rlhf.compare import started_from
from rlhf.config import load_config
from rlhf.errors import ConfigError, DataError
from rlhf.models import resolve_model_path
from rlhf.preferences import import_unpaired
from rlhf.stages import kto

FILLER = [w for w in WORDS if w != "marker"]


def weights(path):
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def unpaired_rows(n_desirable: int, n_undesirable: int, seed: int = 0) -> list[dict]:
    """Desirable answers end with "marker", undesirable ones do not; labels interleaved as they come."""
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(FILLER) for _ in range(k))  # noqa: E731
    rows = [
        {"id": f"d{i}", "prompt": words(3), "completion": f"{words(4)} marker", "label": True}
        for i in range(n_desirable)
    ]
    rows += [
        {"id": f"u{i}", "prompt": words(3), "completion": words(4), "label": False}
        for i in range(n_undesirable)
    ]
    return rows


def cfg_for(tmp_path, model, data, name, **extra):
    return stage_config(kto.KTOStageConfig, tmp_path, model, data, name, **{"drift.every_steps": 0, **extra})


@pytest.fixture
def feedback(tmp_path):
    rows = unpaired_rows(6, 6)
    rows.append({"id": "too-long", "prompt": " ".join(["tree"] * 90), "completion": "yes", "label": True})
    rows.append({"id": "no-label", "prompt": "the cat", "completion": "sat"})
    return write_jsonl(tmp_path / "kto.jsonl", rows)


def test_full_kto_changes_weights_and_rejects_rows_by_id(tmp_path, tiny_model_dir, feedback):
    extra = {"drift.every_steps": 1, "drift.num_prompts": 2, "drift.max_new_tokens": 4}
    run = kto.run(cfg_for(tmp_path, tiny_model_dir, feedback, "kto-full", **extra))
    before, after = weights(tiny_model_dir), weights(run.model_dir)
    assert sum(not torch.equal(before[k], after[k]) for k in before) >= len(before) - 1
    m = run.read_manifest()
    assert m["result"]["global_step"] == 2
    assert m["result"]["reference"] == "frozen copy"
    acct = m["data"]["train"]
    assert acct["rows_in"] == 14
    assert acct["rows_kept"] == 12
    assert {r["id"]: r["reason"].split(":")[0] for r in acct["rejected_examples"]} == {
        "too-long": "too long",
        "no-label": "missing columns",
    }
    assert acct["balance"] == {"desirable": 6, "undesirable": 6, "desirable_share": 0.5}
    logged = [r for r in run.read_metrics() if "loss" in r]
    assert len(logged) == 2
    assert any(k.startswith("rewards/") for k in logged[-1])
    assert [r["step"] for r in run.read_metrics() if "drift/kl" in r] == [0, 1, 2]


def test_lora_kto_holds_no_reference_copy_and_compare_takes_the_run(
    tmp_path, tiny_model_dir, feedback, monkeypatch
):
    from trl import KTOTrainer

    seen = {}
    original = KTOTrainer.train

    def spy(self, *a, **kw):
        seen["ref_model"] = self.ref_model
        return original(self, *a, **kw)

    monkeypatch.setattr(KTOTrainer, "train", spy)
    run = kto.run(cfg_for(tmp_path, tiny_model_dir, feedback, "kto-lora", **{"model.lora.r": 4}))
    assert seen["ref_model"] is None
    assert run.read_manifest()["result"]["reference"] == "adapter disabled (no copy)"
    before, after = weights(tiny_model_dir), weights(run.model_dir)
    assert not all(torch.equal(before[k], after[k]) for k in before)
    # a KTO run directory declares its model like DPO's: `rlhf compare` resolves it, and its reference
    # (the policy it started from) comes from its manifest
    assert resolve_model_path(str(run.path)) == str(run.model_dir)
    assert started_from(str(run.path)) == tiny_model_dir


def test_balance_weights_follow_the_kto_papers_range():
    assert kto.balance_weights(6, 6) == {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    minority_desirable = kto.balance_weights(3, 9)
    assert minority_desirable == {"desirable_weight": 3.5, "undesirable_weight": 1.0}
    minority_undesirable = kto.balance_weights(9, 3)
    assert minority_undesirable == {"desirable_weight": 1.0, "undesirable_weight": 2.571}
    assert kto.balance_weights(1744, 1724) == {"desirable_weight": 1.0, "undesirable_weight": 1.0}  # in range
    assert kto.balance_weights(4, 3) == {"desirable_weight": 1.0, "undesirable_weight": 1.0}  # 4:3, the edge
    for d, u in ((3, 9), (9, 3), (1, 40), (40, 1), (17, 13), (5, 6), (14, 10), (1724, 1744)):
        w = kto.balance_weights(d, u)
        ratio = w["desirable_weight"] * d / (w["undesirable_weight"] * u)
        assert 1.0 <= ratio <= 4 / 3, (d, u, ratio)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, {"desirable_weight": 3.5, "undesirable_weight": 1.0, "from": "the data's balance"}),
        (
            {"trainer.undesirable_weight": 0.5},
            {"desirable_weight": 1.0, "undesirable_weight": 0.5, "from": "trainer"},
        ),
    ],
    ids=["from-balance", "given"],
)
def test_the_weights_trained_with_follow_the_balance_unless_given(
    tmp_path, tiny_model_dir, monkeypatch, extra, expected
):
    from trl import KTOTrainer

    seen = {}
    original = KTOTrainer.train

    def spy(self, *a, **kw):
        seen["weights"] = (self.desirable_weight, self.undesirable_weight)
        return original(self, *a, **kw)

    monkeypatch.setattr(KTOTrainer, "train", spy)
    data = write_jsonl(tmp_path / "skewed.jsonl", unpaired_rows(3, 9))
    run = kto.run(cfg_for(tmp_path, tiny_model_dir, data, "kto-w", **{"trainer.max_steps": 1, **extra}))
    assert seen["weights"] == (expected["desirable_weight"], expected["undesirable_weight"])
    result = run.read_manifest()["result"]
    assert result["weights"] == expected
    assert result["balance"] == {"desirable": 3, "undesirable": 9, "desirable_share": 0.25}


def test_pairs_become_two_rows_each_accounted_for(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    rows = marker_rows(4)
    rows.append({"id": "same", "prompt": "hello", "chosen": "yes", "rejected": "yes"})
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    kept, acct = import_unpaired(data, max_length=64, tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir))
    assert acct.rows_in == 10
    assert acct.kept_ids[:2] == ["r0:chosen", "r0:rejected"]
    assert [r["label"] for r in kept[:2]] == [True, False]
    assert kept[0]["completion"][0]["content"].endswith("marker")
    assert [r.id for r in acct.rejected] == ["same:chosen", "same:rejected"]
    assert acct.rejected[0].reason.startswith("identical responses")


def test_one_label_only_is_refused_with_what_to_do(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "good.jsonl", unpaired_rows(5, 0))
    with pytest.raises(DataError, match="all 5 training rows are desirable; KTO needs both"):
        kto.run(cfg_for(tmp_path, tiny_model_dir, data, "kto-one"))


def test_interrupted_kto_resumes_from_its_last_checkpoint(
    tmp_path, tiny_model_dir, feedback, monkeypatch, capsys
):
    from trl import KTOTrainer

    extra = {"trainer.max_steps": 3, "trainer.save_strategy": "steps", "trainer.save_steps": 1}
    original = KTOTrainer.training_step
    calls = {"n": 0}

    def crash_on_third(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return original(self, *a, **kw)

    monkeypatch.setattr(KTOTrainer, "training_step", crash_on_third)
    with pytest.raises(RuntimeError, match="killed"):
        kto.run(cfg_for(tmp_path, tiny_model_dir, feedback, "kto-resume", **extra))
    monkeypatch.setattr(KTOTrainer, "training_step", original)
    run = kto.run(cfg_for(tmp_path, tiny_model_dir, feedback, "kto-resume", **extra), resume=True)
    assert "resuming from" in capsys.readouterr().out
    m = run.read_manifest()
    assert m["status"] == "completed"
    assert m["result"]["global_step"] == 3
    assert len(m["resumed_at"]) == 1
    assert [r["step"] for r in run.read_metrics() if "loss" in r] == [1, 2, 3]


def test_kto_trainer_settings_trl_would_refuse_late_are_refused_at_load():
    with pytest.raises(ConfigError, match="'trainer.max_length' is set by rlhf; use data.max_length instead"):
        load_config(kto.KTOStageConfig, None, ["trainer.max_length=64"])
    with pytest.raises(
        ConfigError, match="per_device_train_batch_size' must be at least 2 with loss_type kto"
    ):
        load_config(kto.KTOStageConfig, None, ["trainer.per_device_train_batch_size=1"])
    with pytest.raises(ConfigError, match="'trainer.train_sampling_strategy' must be sequential"):
        load_config(kto.KTOStageConfig, None, ["trainer.train_sampling_strategy=random"])
    unpaired_loss = ["trainer.per_device_train_batch_size=1", "trainer.loss_type=apo_zero_unpaired"]
    assert load_config(kto.KTOStageConfig, None, unpaired_loss).trainer["per_device_train_batch_size"] == 1
