"""Padding-free preference batches (rlhf.train.packing): the layout by hand, the hooks' pass-through rules,
the same log-probs / gradients as the padded batch through TRL's fused LM head (fp32), and DPO / KTO runs
whose losses equal the padded runs' (fp32 pinned by the tiny trainer settings)."""

import json

import pytest
import torch
from support.data import marker_rows, write_jsonl
from support.tiny import stage_config

import rlhf.train.packing as packing
from rlhf.errors import ConfigError
from rlhf.stages import dpo, kto
from rlhf.train.packing import PackPairs, pack, right_padded_lengths, unpack


def test_pack_lays_the_real_tokens_end_to_end_with_labels_shifted_within_each_sequence():
    ids = torch.tensor([[11, 12, 13, 0], [21, 22, 23, 24], [31, 32, 0, 0]])
    labels = torch.tensor([[-100, 12, 13, -100], [-100, -100, 23, 24], [-100, 32, -100, -100]])
    packed, layout = pack(ids, labels, torch.tensor([3, 4, 2]))
    assert packed["input_ids"].tolist() == [[11, 12, 13, 21, 22, 23, 24, 31, 32]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 1]]
    # position i scores token i + 1 of the same sequence; a sequence's last token scores nothing
    assert packed["shift_labels"].tolist() == [[12, 13, -100, -100, 23, 24, -100, 32, -100]]
    # back into the padded next-token layout [rows, width - 1]: row 0 = packed 0, 1 (then padding)
    per_token = torch.arange(1.0, 10.0)[None]  # the packed row's values 1..9
    assert unpack(per_token, layout).tolist() == [[1, 2, 0], [4, 5, 6], [8, 0, 0]]


def test_only_right_padded_batches_have_lengths():
    assert right_padded_lengths(torch.tensor([[1, 1, 0], [1, 1, 1]])).tolist() == [2, 3]
    assert right_padded_lengths(torch.tensor([[0, 1, 1], [1, 1, 1]])) is None  # left padding
    assert right_padded_lengths(torch.tensor([[1, 0, 1], [1, 1, 1]])) is None  # a hole
    assert right_padded_lengths(torch.tensor([[0, 0, 0], [1, 1, 1]])) is None  # an empty row


def test_the_hooks_leave_every_other_call_alone():
    hooks = PackPairs()
    ids = torch.tensor([[5, 6, 7], [5, 6, 0]])
    padded = {"input_ids": ids, "attention_mask": (ids > 0).long(), "labels": ids, "fused_lm_head": True}
    assert hooks.before(None, (), {**padded, "fused_lm_head": False}) is None  # generation, plain forward
    assert hooks.before(None, (), {**padded, "attention_mask": torch.ones(2, 3)}) is None  # nothing padded
    assert hooks.before(None, (), {**padded, "attention_mask": torch.tensor([[1, 1, 1], [0, 1, 1]])}) is None
    assert hooks.before(None, (), {**padded, "pixel_values": torch.zeros(1)}) is None  # unknown inputs
    assert hooks.calls == 0
    _, kwargs = hooks.before(None, (), padded)
    assert hooks.calls == 1 and set(kwargs) == {"input_ids", "position_ids", "shift_labels", "fused_lm_head"}


def _fused_lora_model(path, implementation):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.config._attn_implementation = implementation
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    return get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))


@pytest.mark.parametrize("implementation", ["rlhf_segments_eager", "rlhf_segments_sdpa"])
def test_a_packed_forward_gives_the_padded_batch_its_log_probs_and_gradients(tiny_model_dir, implementation):
    """fp32: the same per-token fields (1e-5) and the same LoRA gradients (1e-5 relative to their size)."""
    import rlhf.train.attention  # noqa: F401 - registers the per-sequence attention
    from rlhf.train.lm_head import use_cpu_lm_head

    use_cpu_lm_head()
    torch.manual_seed(1)
    lengths, width = torch.tensor([7, 12, 5, 9]), 12
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    ids = torch.randint(5, 40, (4, width)).masked_fill(mask == 0, 0)
    completion = mask.clone()
    completion[:, :3] = 0
    labels = ids.masked_fill(completion == 0, -100)
    results = []
    for padding_free in (False, True):
        model = _fused_lora_model(tiny_model_dir, implementation)
        hooks = packing.pack_pairs(model) if padding_free else None
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False, fused_lm_head=True)
        (out.log_probs.sum() + out.entropy.sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((out.log_probs.detach(), out.entropy.detach(), out.is_top1, grads))
        assert hooks is None or hooks.calls == 1
    (lp0, ent0, top0, g0), (lp1, ent1, top1, g1) = results
    assert lp0.shape == lp1.shape == (4, width - 1)
    assert (lp0 != 0).sum() == (labels[:, 1:] != -100).sum()  # every labeled position scored, nothing else
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent1, ent0, atol=1e-5, rtol=0)
    assert torch.equal(top0, top1)
    assert g0.abs().max() > 0.1 and (g1 - g0).abs().max() < 1e-5 * g0.abs().max()


@pytest.fixture
def packed_forwards(monkeypatch):
    seen = {"n": 0}
    original = packing.pack

    def counted(*args, **kwargs):
        seen["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(packing, "pack", counted)
    return seen


def _losses(run):
    return [r["loss"] for r in run.read_metrics() if "loss" in r]


@pytest.mark.parametrize("lora", [4, None], ids=["lora", "full"])
def test_padding_free_dpo_trains_as_the_padded_run_does(
    tmp_path, tiny_model_dir, packed_forwards, capsys, lora
):
    """DPO, fp32, 2 steps: the same losses and reward margins (1e-4) with and without padding, the reference
    being the adapter-off policy (LoRA) or a frozen copy (full fine-tune); the run says and records which
    it was."""
    rows = marker_rows(8)
    for i, r in enumerate(rows):  # lengths that differ within each pair and across pairs
        r["rejected"] = " ".join([r["rejected"]] + ["tree"] * (i % 4))
    data = write_jsonl(tmp_path / "prefs.jsonl", rows)
    runs = {}
    for padding_free in (False, True):
        extra = {"data.padding_free": padding_free, "drift.every_steps": 0}
        if lora:
            extra["model.lora.r"] = lora
        cfg = stage_config(
            dpo.DPOStageConfig, tmp_path, tiny_model_dir, data, f"dpo-pf-{padding_free}", **extra
        )
        runs[padding_free] = dpo.run(cfg)
    assert packed_forwards["n"] == 4  # 2 steps x (policy + reference), all in the padding-free run
    padded, packed = (runs[k].read_manifest()["result"] for k in (False, True))
    assert packed["reference"] == ("adapter disabled (no copy)" if lora else "frozen copy")
    assert padded["padding_free"] == {"on": False, "forwards_packed": 0}
    assert packed["padding_free"] == {"on": True, "forwards_packed": 4}
    assert _losses(runs[True]) == pytest.approx(_losses(runs[False]), abs=1e-4)
    assert len(_losses(runs[True])) == 2 and _losses(runs[True])[1] != pytest.approx(0.6931, abs=1e-3)
    for key in ("rewards/margins", "logps/chosen", "logps/rejected"):
        assert packed["last_logged"][key] == pytest.approx(padded["last_logged"][key], abs=1e-4)
    said = capsys.readouterr().out
    assert "padding-free batches: off (data.padding_free: false)" in said
    assert "padding-free batches: each batch's sequences in one row" in said


def test_padding_free_kto_trains_as_the_padded_run_does(tmp_path, tiny_model_dir, packed_forwards):
    from test_kto import unpaired_rows

    data = write_jsonl(tmp_path / "kto.jsonl", unpaired_rows(6, 6))
    runs = {}
    for padding_free in (False, True):
        extra = {"model.lora.r": 4, "data.padding_free": padding_free, "drift.every_steps": 0}
        cfg = stage_config(
            kto.KTOStageConfig, tmp_path, tiny_model_dir, data, f"kto-pf-{padding_free}", **extra
        )
        runs[padding_free] = kto.run(cfg)
    # per step: the KL batch and the batch, each through the policy and the reference
    assert packed_forwards["n"] == 8
    assert runs[True].read_manifest()["result"]["padding_free"] == {"on": True, "forwards_packed": 8}
    assert _losses(runs[True]) == pytest.approx(_losses(runs[False]), abs=1e-4)


def test_padding_free_settings_are_refused_with_what_to_do(tmp_path, tiny_model_dir, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "prefs.jsonl", marker_rows(4))
    with pytest.raises(ConfigError, match=r"'trainer.padding_free' is set by rlhf; use data.padding_free"):
        stage_config(
            dpo.DPOStageConfig, tmp_path, tiny_model_dir, data, "x", **{"trainer.padding_free": True}
        )
    import rlhf.train.stage as stage_module

    monkeypatch.setattr(stage_module, "segment_attention", lambda config, kernel: None)
    explicit = {"data.padding_free": True, "drift.every_steps": 0}
    cfg = stage_config(dpo.DPOStageConfig, tmp_path, tiny_model_dir, data, "pf-unknown", **explicit)
    with pytest.raises(ConfigError, match=r"data.padding_free: true: model type 'llama' is not one whose"):
        dpo.run(cfg)
    # left to rlhf, such a model trains padded and says so
    cfg = stage_config(
        dpo.DPOStageConfig, tmp_path, tiny_model_dir, data, "pf-auto", **{"drift.every_steps": 0}
    )
    run = dpo.run(cfg)
    assert run.read_manifest()["result"]["padding_free"]["on"] is False
    assert "padding-free batches: off (model type 'llama'" in capsys.readouterr().out
    assert json.loads(run.manifest_path.read_text())["result"]["global_step"] == 2
