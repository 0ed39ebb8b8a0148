"""Training at the CPU's speed: padding-free SFT batches (the same losses as padded ones), DPO batches grouped
by length (less padding), and the SFT keys the stage sets for them.

Precision: fp32 (`trainer.bf16: false`) on the tiny Llama, so padded and padding-free losses agree within 1e-4
(they differ only in summation order); the bf16 LoRA base is tested in tests/test_precision.py."""

import pytest
import torch
from support.data import marker_rows, write_jsonl
from support.tiny import stage_config

from rlhf.config import ConfigError
from rlhf.stages import dpo, sft


def _config(cls, tmp_path, model, data, name, **extra):
    return stage_config(cls, tmp_path, model, data, name, **extra)


def _sft_rows(n=12):
    return [
        {"id": f"s{i}", "prompt": " ".join(["the cat sat"] * (1 + i % 4)), "completion": "yes " * (1 + i % 3)}
        for i in range(n)
    ]


def test_sft_is_padding_free_where_rows_are_rejected_not_truncated(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "t.jsonl", _sft_rows())
    owned = sft.trl_owned(_config(sft.SFTStageConfig, tmp_path, tiny_model_dir, data, "a"))
    assert owned["padding_free"] is True and owned["max_length"] is None
    owned = sft.trl_owned(
        _config(sft.SFTStageConfig, tmp_path, tiny_model_dir, data, "b", **{"data.overlength": "truncate"})
    )
    assert "padding_free" not in owned and owned["max_length"] == 64
    off = {"trainer.padding_free": False}
    assert (
        sft.trl_owned(_config(sft.SFTStageConfig, tmp_path, tiny_model_dir, data, "c", **off))["max_length"]
        == 64
    )
    with pytest.raises(ConfigError, match="padding_free"):
        sft.trl_owned(
            _config(
                sft.SFTStageConfig, tmp_path, tiny_model_dir, data, "d",
                **{"data.overlength": "truncate", "trainer.padding_free": True},
            )
        )  # fmt: skip


@pytest.mark.parametrize("bf16,tol", [(False, 1e-4), (True, 1e-3)])
def test_padding_free_sft_gives_the_padded_losses(tmp_path, tiny_model_dir, bf16, tol):
    """One flattened sequence per batch, attention kept within each row by its position ids: the same loss
    as the padded batch (fp32: 1e-4; bf16 mixed precision, where rlhf trains with eager attention on a CPU:
    1e-3), so the rows do not see each other."""
    data = write_jsonl(tmp_path / "t.jsonl", _sft_rows())
    losses = {}
    for pf in (True, False):
        run = sft.run(
            _config(
                sft.SFTStageConfig, tmp_path, tiny_model_dir, data, f"pf-{pf}",
                **{"trainer.padding_free": pf, "trainer.bf16": bf16},
            )
        )  # fmt: skip
        losses[pf] = [r["loss"] for r in run.read_metrics() if "loss" in r]
    assert len(losses[True]) == 2
    assert losses[True] == pytest.approx(losses[False], abs=tol)


def test_dpo_groups_its_batches_by_length(tmp_path, tiny_model_dir):
    """The sampler of `data.group_by_length`: every row once per epoch, batches far less spread in length
    than random ones; a grouped DPO run trains."""
    rows = marker_rows(80, long_prompt_every=5)
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    cfg = _config(
        dpo.DPOStageConfig, tmp_path, tiny_model_dir, data, "grouped", **{"data.group_by_length": True}
    )
    seen = {}

    class Recording(dpo.length_grouped(dpo.DPOTrainer)):
        def train(self, *args, **kwargs):
            sampler = self._get_train_sampler()
            ds = self.train_dataset
            seen["lengths"] = [
                len(p) + max(len(c), len(r))
                for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"], strict=True)
            ]
            seen["order"] = list(iter(sampler))
            return super().train(*args, **kwargs)

    original = dpo.length_grouped
    try:
        dpo.length_grouped = lambda cls: Recording
        run = dpo.run(cfg)
    finally:
        dpo.length_grouped = original
    assert run.read_manifest()["result"]["global_step"] == 2
    lengths, order = seen["lengths"], seen["order"]
    assert sorted(order) == list(range(len(lengths)))

    def spread(idx):
        batches = [idx[i : i + 4] for i in range(0, len(idx), 4)]
        return sum(max(lengths[j] for j in b) - min(lengths[j] for j in b) for b in batches)

    random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    assert spread(order) < spread(random_order) / 2


@pytest.mark.parametrize("implementation", ["rlhf_segments_eager", "rlhf_segments_sdpa"])
def test_a_packed_row_attends_within_each_sequence_as_if_each_ran_alone(
    tiny_model_dir, implementation, monkeypatch
):
    """fp32: three sequences packed into one row (position ids restarting at 0) through the per-sequence
    attention give each sequence the logits and the gradients it gets alone; the block-diagonal mask over
    the whole row is never used."""
    import rlhf.train.attention as attention
    from rlhf.models import load_causal_lm

    found = []
    starts = attention.sequence_starts
    monkeypatch.setattr(attention, "sequence_starts", lambda *a: found.append(starts(*a)) or found[-1])
    model = load_causal_lm(tiny_model_dir)
    model.config._attn_implementation = implementation
    seqs = [torch.tensor([3, 5, 7, 9, 11]), torch.tensor([4, 6]), torch.tensor([8, 10, 12, 14])]
    packed = torch.cat(seqs)[None]
    positions = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    out = model(input_ids=packed, position_ids=positions).logits[0]
    (grad,) = torch.autograd.grad(out.square().sum(), model.model.layers[0].self_attn.q_proj.weight)
    assert found and all(f == [0, 5, 7, 11] for f in found)  # every layer split the row
    alone, want_grad = [], 0
    for s in seqs:
        logits = model(input_ids=s[None]).logits[0]
        alone.append(logits)
        want_grad = (
            want_grad
            + torch.autograd.grad(logits.square().sum(), model.model.layers[0].self_attn.q_proj.weight)[0]
        )
    torch.testing.assert_close(out, torch.cat(alone), atol=1e-5, rtol=0)
    torch.testing.assert_close(grad, want_grad, atol=1e-4, rtol=1e-4)


def test_per_sequence_attention_applies_only_to_packed_rows_of_plain_causal_models():
    from types import SimpleNamespace

    from rlhf.train.attention import segment_attention, sequence_starts

    q = torch.zeros(1, 2, 6, 4)
    assert sequence_starts(torch.tensor([[0, 1, 2, 0, 1, 0]]), q, q) == [0, 3, 5, 6]
    assert sequence_starts(torch.tensor([[0, 1, 2, 3, 4, 5]]), q, q) is None  # one sequence
    assert sequence_starts(None, q, q) is None
    assert (
        sequence_starts(torch.tensor([[0, 1, 0]] * 2), torch.zeros(2, 2, 3, 4), torch.zeros(2, 2, 3, 4))
        is None
    )
    assert sequence_starts(torch.tensor([[0]]), q[:, :, :1], q) is None  # one query over a KV cache
    llama = SimpleNamespace(model_type="llama", sliding_window=None)
    assert segment_attention(llama, "eager") == "rlhf_segments_eager"
    assert segment_attention(llama, "sdpa") == "rlhf_segments_sdpa"
    assert segment_attention(SimpleNamespace(model_type="mistral", sliding_window=4096), "eager") is None
    assert segment_attention(SimpleNamespace(model_type="gemma2", sliding_window=None), "eager") is None
