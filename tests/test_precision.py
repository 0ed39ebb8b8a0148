"""Inference precision: which one `auto` picks and why, the inference copy, the answer cache key, the generate
stage loading its policies in it, and bf16 against fp32 on the tiny Llama.

Precision assumed: each test names it. The bf16 tests run on any CPU: on one without native bf16
(AVX2-only) bf16 is emulated and slow, so they use the tiny Llama (hidden size 32) and a handful of tokens.
Tolerances: fp32 against fp32 within 1e-5; bf16 against fp32 within what 8 bits of mantissa allow.
"""

import json

import pytest
import torch
from support.data import write_jsonl
from support.tiny import stage_config

from rlhf import models
from rlhf.compare.answer_cache import GenerationCache
from rlhf.config import ConfigError, from_dict, load_config
from rlhf.generation import (
    SamplingSettings,
    decode_attention,
    generate_texts,
    in_precision,
    sample,
    weights_dtype,
)
from rlhf.logprobs import token_logprobs
from rlhf.models import inference_precision, load_causal_lm, load_tokenizer
from rlhf.prompts import encode_prompt
from rlhf.stages import generate

PROMPTS = ["the cat sat", "hello world", "one two three four", "blue sky"]


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bf16_only_where_it_is_native_and_says_why(monkeypatch, native):
    monkeypatch.setattr(models, "fast_bf16", lambda: native)
    choice = inference_precision("auto")
    assert choice.name == ("bfloat16" if native else "float32")
    assert choice.dtype == (torch.bfloat16 if native else torch.float32)
    assert ("native" in choice.reason) and ("not native" in choice.reason) != native
    assert inference_precision("float32").name == "float32"
    assert inference_precision("bfloat16").reason == "set in the config"
    with pytest.raises(ConfigError, match="precision"):
        from_dict(SamplingSettings, {"precision": "float16"})


def test_the_answer_cache_keys_the_resolved_precision(tmp_path, monkeypatch):
    """`auto` shares the file of the precision it resolves to on this machine, and only that one."""
    key = {
        p: GenerationCache(tmp_path, "m", SamplingSettings(precision=p), 0).path
        for p in ("float32", "bfloat16")
    }
    assert key["float32"] != key["bfloat16"]
    for native, resolved in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(models, "fast_bf16", lambda native=native: native)
        assert GenerationCache(tmp_path, "m", SamplingSettings(precision="auto"), 0).path == key[resolved]


def test_an_inference_copy_leaves_the_callers_model_alone(tiny_model_dir):
    """fp32 model in; a bf16 copy out (the same object when it is already in the precision asked)."""
    model = load_causal_lm(tiny_model_dir).eval()
    assert in_precision(model, inference_precision("float32")) is model
    twin = in_precision(model, inference_precision("bfloat16"))
    assert (
        twin is not model and weights_dtype(twin) == torch.bfloat16 and weights_dtype(model) == torch.float32
    )
    assert not any(p.requires_grad for p in twin.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_attention_equals_sdpa(dtype):
    """One query token per row against a left-padded cache (grouped queries, 8 heads on 2 KV heads):
    equal to HF's SDPA path within 1e-5 in fp32, within bf16 rounding (2e-2) in bf16."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 4, True
    q = torch.randn(3, 8, 1, 16, dtype=dtype)
    k, v = torch.randn(3, 2, 7, 16, dtype=dtype), torch.randn(3, 2, 7, 16, dtype=dtype)
    mask = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., :3] = False  # row 1 is left-padded by 3
    ours, _ = decode_attention(module, q, k, v, mask, scaling=0.25)
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.25)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(ours.float(), ref.float(), atol=tol, rtol=0)


def test_bf16_samples_score_close_to_fp32_and_are_recorded_in_bf16(tiny_model_dir):
    """Greedy on the tiny Llama: sampling in bf16 (an inference copy) records log-probs that the same
    bf16 weights recompute (within bf16 noise, 0.05 per token), and that fp32 weights give within 0.1."""
    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir).eval()
    encoded = [encode_prompt(tok, p) for p in PROMPTS]
    bf16 = SamplingSettings(max_new_tokens=5, do_sample=False, precision="bfloat16")
    out = generate_texts(model, tok, encoded, bf16, batch_size=4)
    ids = [list(s[0].ids) for s in out.samples]
    recorded = [s[0].logp for s in out.samples]
    kw = dict(temperature=1.0, batch_size=4)
    in_bf16 = token_logprobs(
        model, encoded, ids, tok.pad_token_id, precision=inference_precision("bfloat16"), **kw
    )
    in_fp32 = token_logprobs(model, encoded, ids, tok.pad_token_id, **kw)
    assert weights_dtype(model) == torch.float32  # scoring in bf16 used a copy
    for r, b, f, n in zip(recorded, in_bf16, in_fp32, map(len, ids), strict=True):
        assert abs(r - b) <= 0.05 * n and abs(r - f) <= 0.1 * n, (r, b, f)


def test_generate_loads_its_policies_in_the_precision_and_records_it(tmp_path, tiny_model_dir):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "prompt": p} for i, p in enumerate(PROMPTS)])
    over = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": "gen",
        "policies": f"[{tiny_model_dir}]",
        "data.prompts": prompts,
        "publish": "false",
        "sampling.max_new_tokens": 4,
        "sampling.precision": "bfloat16",
        "max_batch_tokens": 40,  # 2 rows x (a prompt of ~10-15 tokens + 4): batches of one or two prompts
    }
    run = generate.run(load_config(generate.GenerateStageConfig, None, [f"{k}={v}" for k, v in over.items()]))
    assert run.read_manifest()["result"]["precision"] == "bfloat16"
    rows = [json.loads(line) for line in (run.path / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == len(PROMPTS)
    assert {c["source"]["sampling"]["precision"] for r in rows for c in r["candidates"]} == {"bfloat16"}


def test_sample_runs_the_model_as_it_is(tiny_model_dir):
    """PPO rollouts and drift probes: `sample` never copies or casts (fp32 model, fp32 log-probs)."""
    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir).eval()
    rollout = sample(model, tok, [encode_prompt(tok, "the cat")], SamplingSettings(max_new_tokens=3))
    assert rollout.logp is not None and rollout.logp.dtype == torch.float32
    assert weights_dtype(model) == torch.float32


def test_lora_under_bf16_holds_the_base_in_bf16_and_merges_into_the_fp32_base(
    tmp_path, tiny_model_dir, monkeypatch
):
    """LoRA-DPO under bf16 mixed precision (`trainer.bf16: true`, what rlhf picks where bf16 is native; on an
    AVX2-only CPU bf16 is emulated: two steps of the tiny Llama): the frozen base is bf16 during training,
    the adapters and their optimizer state fp32; step 1's loss is ln 2 within bf16 rounding; the merged model
    is fp32 and equals the fp32 base plus the adapter's update (within 1e-6), not a bf16-rounded base; peft's
    input cast to fp32 is off and attention is HF's eager one."""
    from support.data import marker_rows
    from transformers import AutoModelForCausalLM

    from rlhf.stages import dpo

    seen = {}

    class Recording(dpo.DPOTrainer):
        def train(self, *args, **kwargs):
            out = super().train(*args, **kwargs)
            params = dict(self.model.named_parameters())
            seen["base"] = {params[n].dtype for n in params if "lora_" not in n}
            seen["lora"] = {p.dtype for n, p in params.items() if "lora_" in n}
            seen["optimizer"] = {
                v.dtype for st in self.optimizer.state.values() for v in st.values() if v.dim()
            }
            seen["adapter"] = {n: p.detach().float().clone() for n, p in params.items() if "lora_" in n}
            seen["casts"] = {m.cast_input_dtype_enabled for m in self.model.modules() if hasattr(m, "lora_A")}
            seen["attention"] = self.model.get_base_model().config._attn_implementation
            return out

    monkeypatch.setattr(dpo, "DPOTrainer", Recording)
    data = write_jsonl(tmp_path / "prefs.jsonl", marker_rows(8))
    lora = {"model.lora.r": 4, "model.lora.alpha": 8, "model.lora.dropout": 0.0, "drift.every_steps": 0}
    cfg = stage_config(
        dpo.DPOStageConfig, tmp_path, tiny_model_dir, data, "bf16-lora", **lora, **{"trainer.bf16": True}
    )
    run = dpo.run(cfg)
    assert seen["base"] == {torch.bfloat16}
    assert seen["lora"] == {torch.float32} and seen["optimizer"] == {torch.float32}
    assert seen["casts"] == {False}  # no fp32 copy of each LoRA layer's bf16 input (autocast re-casts it)
    assert (
        seen["attention"] == "rlhf_segments_eager"
    )  # eager per sequence, not the CPU SDPA kernel (bf16 backward)
    result = run.read_manifest()["result"]
    assert "LoRA base held in bf16" in result["precision"]
    losses = [r["loss"] for r in run.read_metrics() if "loss" in r]
    assert losses[0] == pytest.approx(0.6931, abs=0.02)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(run.model_dir).state_dict()
    assert {v.dtype for v in merged.values()} == {torch.float32}
    a = next(n for n in seen["adapter"] if "q_proj.lora_A" in n)
    b = a.replace("lora_A", "lora_B")
    layer = a.split("base_model.model.")[1].split(".lora_A")[0] + ".weight"
    delta = (seen["adapter"][b] @ seen["adapter"][a]) * (8 / 4)
    torch.testing.assert_close(merged[layer], base[layer] + delta, atol=1e-6, rtol=0)
    assert not torch.equal(base[layer], base[layer].bfloat16().float())  # the base is not bf16-exact


def test_torch_compile_on_a_cpu_is_warned_about_with_the_measured_cost(tmp_path, tiny_model_dir, capsys):
    """`trainer.torch_compile: true` is handed to TRL, but on a CPU it recompiles for every batch length
    (measured 7x slower on the shipped DPO config): the stage says so, naming the setting."""
    from trl import SFTConfig

    from rlhf.stages import sft
    from rlhf.train import TRLStage

    data = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "a b", "completion": "c d"}])
    for compile_ in (True, False):
        cfg = stage_config(
            sft.SFTStageConfig,
            tmp_path,
            tiny_model_dir,
            data,
            f"c{compile_}",
            **{"trainer.torch_compile": compile_},
        )
        stage = TRLStage("sft", SFTConfig, cfg, owned=sft.trl_owned(cfg))
        with stage.open(resume=False, overwrite=False):
            stage.load_model()
        said = capsys.readouterr().out
        assert ("warning: trainer.torch_compile on a CPU" in said) is compile_, said
        if compile_:
            assert "leave it out unless your batches have one fixed shape" in said
