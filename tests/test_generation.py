"""The shared generation module: the EOS rule, left padding and position ids, one sampling loop for many
prompts, and log-probs that match the model's own forward on an unpadded sequence."""

import pytest
import torch

from rlhf.config import from_dict
from rlhf.errors import ConfigError
from rlhf.generation import (
    Rollout,
    SamplingSettings,
    cut_at_eos,
    decode_responses,
    generate_texts,
    left_pad,
    position_ids,
    sample,
    sequence_logprobs,
)
from rlhf.models import load_causal_lm, load_tokenizer
from rlhf.prompts import encode_prompt

EOS, PAD = 9, 0


def test_cut_at_eos_keeps_the_first_eos_and_pads_after_it():
    gen = torch.tensor([[5, 9, 6, 9], [5, 6, 7, 8], [9, 5, 5, 5]])
    resp, mask, ended = cut_at_eos(gen, [EOS], PAD)
    assert resp.tolist() == [[5, 9, 0, 0], [5, 6, 7, 8], [9, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_cut_at_eos_with_several_eos_ids():
    resp, mask, ended = cut_at_eos(torch.tensor([[5, 7, 9, 5]]), [9, 7], PAD)
    assert resp.tolist() == [[5, 7, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0]]
    assert ended.tolist() == [True]


def test_left_padding_and_position_ids():
    ids, mask = left_pad([[3, 4, 5], [6]], PAD)
    assert ids.tolist() == [[3, 4, 5], [0, 0, 6]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    full = torch.cat([mask, torch.tensor([[1, 1], [1, 0]])], 1)
    assert position_ids(full).tolist() == [[0, 1, 2, 3, 4], [0, 0, 0, 1, 1]]


def test_decode_drops_the_eos_but_not_the_text(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    eos = tok.eos_token_id
    words = tok.convert_tokens_to_ids(["the", "cat"])
    rollout = Rollout(
        input_ids=torch.tensor([[1, *words, eos], [1, *words, PAD]]),
        attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        prompt_width=1,
        response_mask=torch.tensor([[1.0, 1, 1], [1.0, 1, 0]]),
        ended=torch.tensor([True, False]),
    )
    assert decode_responses(tok, rollout) == ["the cat", "the cat"]


def test_sampling_settings_are_checked():
    with pytest.raises(ConfigError, match="'temperature' must be > 0"):
        SamplingSettings(temperature=0)
    with pytest.raises(ConfigError, match=r"'max_new_tokens' must be >= 1, got 0"):
        from_dict(SamplingSettings, {"max_new_tokens": 0})
    with pytest.raises(ConfigError, match=r"'top_p' must be > 0 and <= 1, got 1.5"):
        from_dict(SamplingSettings, {"top_p": 1.5})
    assert SamplingSettings(do_sample=False).generate_kwargs() == {
        "max_new_tokens": 128,
        "do_sample": False,
        "repetition_penalty": 1.0,
    }


def test_one_batch_equals_one_prompt_at_a_time_and_logprobs_ignore_padding(tiny_model_dir):
    """Greedy (fp32): the batched, left-padded rollout gives each prompt the response it gets alone, and the
    log-probs recomputed with position ids equal those of the unpadded sequence."""
    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir).eval()
    greedy = SamplingSettings(max_new_tokens=6, do_sample=False)
    prompts = [encode_prompt(tok, p) for p in ("the cat sat on the mat today", "hello")]
    batch = sample(model, tok, prompts, greedy)
    assert batch.input_ids.shape[0] == 2
    assert batch.prompt_width == max(map(len, prompts))
    logp = sequence_logprobs(model, batch)
    for i, ids in enumerate(prompts):
        alone = sample(model, tok, [ids], greedy)
        n = int(alone.response_mask.sum())
        assert batch.responses[i, :n].tolist() == alone.responses[0, :n].tolist()
        torch.testing.assert_close(logp[i, :n], sequence_logprobs(model, alone)[0, :n], atol=1e-5, rtol=0)


def test_generate_texts_returns_n_samples_per_prompt_in_prompt_order(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir).eval()
    prompts = [encode_prompt(tok, p) for p in ("a b c d e f", "hello", "the cat")]
    torch.manual_seed(0)
    out = generate_texts(model, tok, prompts, SamplingSettings(max_new_tokens=4), n=3, batch_size=2)
    assert [len(s) for s in out.samples] == [3, 3, 3]
    assert all(isinstance(x.text, str) and isinstance(x.ended, bool) for s in out.samples for x in s)
    assert sum(x.tokens for s in out.samples for x in s) == out.new_tokens
    assert 0 < out.new_tokens <= 3 * 3 * 4
    greedy = generate_texts(model, tok, prompts, SamplingSettings(max_new_tokens=4, do_sample=False), n=1)
    for ids, samples in zip(prompts, greedy.samples, strict=True):
        alone = sample(model, tok, [ids], SamplingSettings(max_new_tokens=4, do_sample=False))
        assert samples[0].text == decode_responses(tok, alone)[0]
