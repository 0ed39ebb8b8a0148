"""Sampling the policy being trained (`rlhf.rollouts`): the engine's answers laid out as a Rollout (by hand),
the hf backend is rlhf's decoder unchanged, and what the vllm backend refuses. The engine path end to end:
tests/test_ppo.py, test_grpo.py, test_dpo.py (stand-in engine) and tests/test_vllm_engine.py (vLLM)."""

import pytest
import torch

from rlhf.config import ConfigError
from rlhf.engine import EngineSettings
from rlhf.generation import Sample, SamplingSettings, sample
from rlhf.models import load_causal_lm, load_tokenizer
from rlhf.rollouts import PolicySampler, rollout_from_samples


def test_rollout_from_samples_by_hand():
    samples = [
        [Sample("a", True, 2, (5, 9)), Sample("b", False, 3, (6, 7, 8))],
        [Sample("", True, 1, (9,)), Sample("c", True, 2, (4, 9))],
    ]
    r = rollout_from_samples([[1, 2], [3]], samples, pad=0)
    assert r.prompt_width == 2
    assert r.input_ids.tolist() == [
        [1, 2, 5, 9, 0],
        [1, 2, 6, 7, 8],
        [0, 3, 9, 0, 0],
        [0, 3, 4, 9, 0],
    ]
    assert r.attention_mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0], [0, 1, 1, 1, 0]]
    assert r.response_mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert r.ended.tolist() == [True, False, True, True] and r.logp is None
    with pytest.raises(ValueError, match="same number of samples"):
        rollout_from_samples([[1], [2]], [[samples[0][0]], samples[1]], pad=0)


def test_the_hf_backend_is_rlhfs_decoder(tiny_model_dir, tmp_path):
    model = load_causal_lm(tiny_model_dir, "float32").eval()
    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    s = SamplingSettings(max_new_tokens=6)
    prompts = [[5, 6, 7], [8, 9]]
    sampler = PolicySampler(EngineSettings(), seed=0, scratch=tmp_path / "scratch")
    torch.manual_seed(3)
    ours = sampler.sample(model, tok, prompts, s, key="k", n=2)
    torch.manual_seed(3)
    direct = sample(model, tok, prompts, s, n=2)
    assert torch.equal(ours.input_ids, direct.input_ids) and torch.equal(
        ours.response_mask, direct.response_mask
    )
    assert sampler.stats == {"backend": "hf"} and not (tmp_path / "scratch").exists()


def test_the_vllm_backend_runs_in_one_process(tmp_path):
    with pytest.raises(ConfigError, match=r"from one process, and this run has 2.*generation.backend=hf"):
        PolicySampler(
            EngineSettings(backend="vllm", python="/bin/true"), seed=0, scratch=tmp_path, processes=2
        )


def test_a_given_engine_takes_the_adapter_and_refuses_what_it_cannot_reload(tiny_model_dir, tmp_path):
    """generation.url (an engine rlhf did not start, e.g. `rlhf serve-generation`) is never reloaded: a LoRA
    policy goes there as its adapter (auto picks it even without CUDA, where a started engine merges),
    `training_lora=merged` is refused at once, and a full fine-tune at its first rollout, each naming the fix."""
    given = {"backend": "vllm", "url": "http://127.0.0.1:9"}
    assert not PolicySampler(EngineSettings(**given), seed=0, scratch=tmp_path).merge_lora
    started = PolicySampler(EngineSettings(backend="vllm", python="/bin/true"), seed=0, scratch=tmp_path)
    assert started.merge_lora == (not torch.cuda.is_available())
    with pytest.raises(
        ConfigError, match=r"training_lora=merged with generation.url=.*training_lora=adapter"
    ):
        PolicySampler(EngineSettings(**given, training_lora="merged"), seed=0, scratch=tmp_path)
    full = load_causal_lm(tiny_model_dir, "float32")
    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    sampler = PolicySampler(EngineSettings(**given), seed=0, scratch=tmp_path)
    with pytest.raises(ConfigError, match=r"full fine-tune's weights change every step.*model.lora"):
        sampler.sample(full, tok, [[5, 6]], SamplingSettings(max_new_tokens=2), key="k")
    assert not any(tmp_path.iterdir())  # nothing written for the engine
