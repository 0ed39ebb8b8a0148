import time

import pytest

from rlhf.errors import ModelError
from rlhf.models import MINILM, SMOLLM2, cache_dir, load_causal_lm, load_tokenizer, resolve_model_path


def test_local_dir_resolves(tiny_model_dir):
    assert resolve_model_path(tiny_model_dir) == tiny_model_dir
    model = load_causal_lm(tiny_model_dir)
    assert model.config.hidden_size == 32
    assert load_tokenizer(tiny_model_dir).pad_token == "<pad>"


def test_missing_dir_and_offline_hub_id_list_aliases(tmp_path):
    with pytest.raises(
        ModelError,
        match=r"model './nope': no such directory. Built-in aliases that work offline: "
        r"smollm2-135m-instruct .*; minilm-l6",
    ):
        resolve_model_path("./nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="neither config.json nor adapter_config.json"):
        resolve_model_path(str(tmp_path / "empty"))
    with pytest.raises(ModelError) as e:
        load_causal_lm("some-org/some-model")
    msg = str(e.value)
    assert msg.startswith(
        "model 'some-org/some-model' is not a built-in alias or a local directory, and loading it"
    )
    assert "smollm2-135m-instruct" in msg
    assert "minilm-l6" in msg


def test_adapter_dir_loads_on_its_base(tiny_model_dir, tmp_path):
    from peft import get_peft_model

    from rlhf.models import LoraSettings, lora_config, save_model

    model = get_peft_model(load_causal_lm(tiny_model_dir), lora_config(LoraSettings(r=2)))
    kind = save_model(model, load_tokenizer(tiny_model_dir), tmp_path / "adapter", merge_lora=False)
    assert kind == "adapter"
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    loaded = load_causal_lm(str(tmp_path / "adapter"))
    assert hasattr(loaded, "peft_config")
    assert load_tokenizer(str(tmp_path / "adapter")).eos_token == "<|im_end|>"


def test_minilm_alias_resolves_offline():
    path = resolve_model_path(MINILM)
    assert path.endswith("model")
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(path).model_type == "bert"


@pytest.mark.slow
def test_smollm2_alias_converts_once_then_is_cached():
    t0 = time.perf_counter()
    path = resolve_model_path(SMOLLM2)
    first = time.perf_counter() - t0
    assert path == str(cache_dir() / SMOLLM2)
    t0 = time.perf_counter()
    assert resolve_model_path(SMOLLM2) == path
    second = time.perf_counter() - t0
    assert second < 0.5
    assert second < first / 10
    model = load_causal_lm(SMOLLM2)
    tok = load_tokenizer(SMOLLM2)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.tie_word_embeddings
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


def test_fast_fp32_matmuls_keep_fp32_accuracy_and_restore_the_setting(tiny_model_dir):
    """Where bf16 is native (AVX512-BF16 / AMX) fp32 matmuls run in oneDNN's bf16 math mode inside the
    context, elsewhere strict fp32; either way a product that bf16 alone would round away survives, the
    tiny model's summed answer log-probs match strict fp32 within 1e-4, and the setting comes back."""
    import torch

    from rlhf.logprobs import pair_logprobs
    from rlhf.models import fast_bf16, fast_fp32_matmuls

    backend = torch.backends.mkldnn.matmul
    before = backend.fp32_precision
    model, tok = load_causal_lm(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)
    args = (["the cat sat", "hello"], ["yes yes", "the mat"], ["no", "cat cat cat"])
    strict = pair_logprobs(model, tok, *args)
    x = torch.full((64, 64), 1 + 2**-12)  # 1 + 2^-12 is 1.0 in bf16
    w = torch.zeros(64, 64)
    w[:, 0] = 1
    with fast_fp32_matmuls() as on:
        assert on == (fast_bf16() and not torch.cuda.is_available())
        assert backend.fp32_precision == ("bf16" if on else before)
        assert float((x @ w.t())[0, 0]) == 1 + 2**-12
        fast = pair_logprobs(model, tok, *args)
    assert backend.fp32_precision == before
    for a, b in zip(strict, fast, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_merged_weights_equal_peft_merge_and_leave_the_model_alone(tiny_model_dir):
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from rlhf.models import load_causal_lm, merged_weights

    peft = get_peft_model(
        load_causal_lm(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"])
    )
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    before = {k: v.clone() for k, v in peft.state_dict().items()}
    ours = merged_weights(peft)
    expected = copy.deepcopy(peft).merge_and_unload().state_dict()
    assert set(ours) == set(expected)
    assert all(torch.allclose(ours[k], expected[k], atol=1e-6) for k in expected)
    changed = [
        k for k in expected if not torch.equal(ours[k], load_causal_lm(tiny_model_dir).state_dict()[k])
    ]
    assert changed and all("q_proj" in k or "down_proj" in k for k in changed)
    assert all(torch.equal(v, before[k]) for k, v in peft.state_dict().items())  # the model is untouched
    assert {v.dtype for v in merged_weights(peft, torch.bfloat16).values()} == {torch.bfloat16}
