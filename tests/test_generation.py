"""The shared generation module: the EOS rule, left padding and position ids, one decoder for many prompts
(batches by tokens, each prompt prefilled once for its samples, finished rows dropped), a sampler with HF's
distribution, and log-probs — recorded while sampling, or recomputed — that match the model's own forward on
an unpadded sequence.

Precision: fp32 throughout (`precision: float32` pinned where `generate_texts` would otherwise pick bf16 on
a CPU with native bf16); tolerances 1e-5. bf16 is tested in tests/test_precision.py."""

import math

import pytest
import torch

from rlhf.config import from_dict
from rlhf.errors import ConfigError
from rlhf.generation import (
    Rollout,
    SamplingSettings,
    batches,
    cache_keyword,
    choose_tokens,
    contiguous_head_input,
    cut_at_eos,
    decode_responses,
    forward_responses,
    generate_texts,
    left_pad,
    position_ids,
    prefill,
    sample,
    sequence_logprobs,
    target_logprobs,
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
    fp32 = SamplingSettings(max_new_tokens=4, precision="float32")
    out = generate_texts(model, tok, prompts, fp32, n=3, batch_size=2)
    assert [len(s) for s in out.samples] == [3, 3, 3]
    assert all(isinstance(x.text, str) and isinstance(x.ended, bool) for s in out.samples for x in s)
    assert sum(x.tokens for s in out.samples for x in s) == out.new_tokens
    assert 0 < out.new_tokens <= 3 * 3 * 4
    greedy_settings = SamplingSettings(max_new_tokens=4, do_sample=False, precision="float32")
    greedy = generate_texts(model, tok, prompts, greedy_settings, n=1)
    for ids, samples in zip(prompts, greedy.samples, strict=True):
        alone = sample(model, tok, [ids], greedy_settings)
        assert samples[0].text == decode_responses(tok, alone)[0]


def _hf_probs(scores: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """The distribution HF `generate` samples from: its processors (temperature, top-k, top-p), softmax."""
    return torch.softmax(settings.processors()(None, scores.clone()), -1)


@pytest.mark.parametrize(
    "kw",
    [
        dict(temperature=0.7, top_p=0.9),  # narrow rows within the 64 candidates, a flat row beyond them
        dict(temperature=1.3, top_k=20, top_p=0.8),
        dict(temperature=0.5, top_p=1.0),
    ],
)
def test_the_sampler_draws_from_hfs_distribution(kw):
    """Inverse CDF over a fine grid of uniforms: each token's share equals HF's probability within the grid
    step (fp32 logits; the flat row's nucleus is wider than the 64 candidates: the full-sort fallback)."""
    torch.manual_seed(0)
    vocab, grid = 300, 20000
    scores = torch.randn(3, vocab) * torch.tensor([[4.0], [0.05], [2.0]])
    settings = SamplingSettings(**kw)
    want = _hf_probs(scores, settings)
    u = (torch.arange(grid) + 0.5) / grid
    for row in range(3):
        scaled = (scores[row : row + 1] / settings.temperature).expand(grid, vocab)
        got = torch.bincount(choose_tokens(scaled, settings, u), minlength=vocab).float() / grid
        torch.testing.assert_close(got, want[row], atol=2.0 / grid, rtol=0)


def test_recorded_logprobs_equal_recomputed_ones_and_samples_share_one_prefill(tiny_model_dir):
    """fp32: the log-prob recorded as each token is drawn (n = 3 samples of each prompt from one prefill,
    rows dropped as they finish) equals the forward's recomputation at the same temperature; a seeded row
    gets the same answer alone as in the batch."""
    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir).eval()
    prompts = [encode_prompt(tok, p) for p in ("a b c d e f", "hello", "the cat")]
    settings = SamplingSettings(max_new_tokens=6, temperature=0.8, top_p=0.9, precision="float32")
    seeds = list(range(9))
    batch = sample(model, tok, prompts, settings, n=3, seeds=seeds)
    again = sequence_logprobs(model, batch, temperature=0.8) * batch.response_mask
    torch.testing.assert_close(batch.logp, again, atol=1e-5, rtol=0)
    assert batch.ended.any()  # some rows finished early and left the batch
    for row in (0, 4, 8):
        alone = sample(model, tok, [prompts[row // 3]], settings, seeds=[seeds[row]])
        width = alone.responses.shape[1]
        assert batch.responses[row, :width].tolist() == alone.responses[0].tolist()


def test_prompts_of_very_different_lengths_prefill_in_groups_to_the_same_cache_and_answers(
    tiny_model_dir, monkeypatch
):
    """fp32: 40 prompts of 1-30 tokens (most of a one-pass batch would be padding) prefill in groups of
    similar length; the re-assembled cache and last logits equal one left-padded pass, and greedy answers
    are the same as with the one pass (and as each prompt alone)."""
    import rlhf.generation as generation

    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir).eval()
    prompts = [list(range(1, 2 + (i * 7) % 30)) for i in range(40)]
    ids, mask = left_pad(prompts, PAD)
    assert len(generation._length_groups(mask)) == 3  # 40 rows, groups of 16
    with torch.inference_mode():
        grouped, logits = prefill(model, ids, mask, cache_keyword(model))
        monkeypatch.setattr(generation, "PREFILL_GROUP_ROWS", 10**6)
        assert len(generation._length_groups(mask)) == 1
        single, logits1 = prefill(model, ids, mask, cache_keyword(model))
    torch.testing.assert_close(logits, logits1, atol=1e-5, rtol=0)
    real = mask.bool()[:, None, :, None]  # the pad positions' keys differ (zeros vs pad-token states): masked
    for a, b in zip(grouped.layers, single.layers, strict=True):
        assert a.keys.shape == b.keys.shape
        torch.testing.assert_close(a.keys * real, b.keys * real, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.values * real, b.values * real, atol=1e-5, rtol=0)
    greedy = SamplingSettings(max_new_tokens=5, do_sample=False)
    one_pass = sample(model, tok, prompts, greedy)
    monkeypatch.setattr(generation, "PREFILL_GROUP_ROWS", 16)
    in_groups = sample(model, tok, prompts, greedy)
    assert torch.equal(in_groups.input_ids, one_pass.input_ids)
    alone = sample(model, tok, [prompts[5]], greedy)
    width = alone.responses.shape[1]
    assert in_groups.responses[5, :width].tolist() == alone.responses[0].tolist()


def test_the_decoders_kv_cache_written_in_place_gives_the_growing_caches_answers(tiny_model_dir, monkeypatch):
    """fp32: the decoder's cache (one buffer per layer for prompt + new tokens, written in place, unwritten
    slots masked) gives the same tokens and log-probs as transformers' growing cache, rows leaving the batch
    and samples sharing a prefill included; the prefilled cache is converted."""
    import rlhf.generation as generation

    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir).eval()
    prompts = [encode_prompt(tok, p) for p in ("a b c d e f", "hello", "the cat")]
    settings = SamplingSettings(max_new_tokens=12, temperature=0.8, top_p=0.9, precision="float32")
    converted = []
    in_slots = generation._in_slots
    monkeypatch.setattr(
        generation, "_in_slots", lambda cache, cap: (in_slots(cache, cap), converted.append(cache.layers))
    )
    slots = sample(model, tok, prompts, settings, n=2, seeds=list(range(6)))
    assert converted and all(type(layer) is generation._SlotLayer for layer in converted[0])
    assert converted[0][0].keys.shape[2] == max(map(len, prompts)) + 12
    monkeypatch.setattr(generation, "_in_slots", lambda cache, cap: None)
    growing = sample(model, tok, prompts, settings, n=2, seeds=list(range(6)))
    assert torch.equal(slots.input_ids, growing.input_ids)
    torch.testing.assert_close(slots.logp, growing.logp, atol=1e-6, rtol=0)
    assert slots.ended.any() and not slots.ended.all()  # rows left the batch along the way


def test_target_logprobs_equal_the_log_softmax_in_chunks_and_carry_gradients(monkeypatch):
    """log softmax(logits / T) at the targets, computed in chunks of positions (chunk size forced small so
    7 x 5 positions span several), equals the one-shot log-softmax, and its gradient flows to the logits."""
    import rlhf.generation as generation

    monkeypatch.setattr(generation, "LOGPROB_CHUNK_ELEMENTS", 3 * 11)  # 3 positions of an 11-token vocab
    torch.manual_seed(0)
    logits = torch.randn(7, 5, 11, requires_grad=True)
    targets = torch.randint(0, 11, (7, 5))
    got = target_logprobs(logits, targets, temperature=0.7)
    want = torch.log_softmax(logits / 0.7, -1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert got.shape == (7, 5) and got.dtype == torch.float32
    (grad,) = torch.autograd.grad(got.sum(), logits)
    (want_grad,) = torch.autograd.grad(want.sum(), logits)
    torch.testing.assert_close(grad, want_grad, atol=1e-6, rtol=0)
    assert target_logprobs(torch.zeros(2, 0, 11), torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0)
    # one hand-computed value: logits (0, ln 3) -> p = (1/4, 3/4); log p of token 1 = ln 0.75
    two = torch.tensor([[0.0, torch.log(torch.tensor(3.0))]])
    assert float(target_logprobs(two, torch.tensor([1]))[0]) == pytest.approx(math.log(0.75), abs=1e-6)


def test_min_new_tokens_holds_the_eos_back(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir).eval()
    settings = SamplingSettings(max_new_tokens=5, min_new_tokens=5, temperature=2.0, precision="float32")
    out = generate_texts(model, tok, [encode_prompt(tok, "hello")] * 4, settings, n=2)
    assert out.new_tokens == 4 * 2 * 5
    with pytest.raises(ConfigError, match="'min_new_tokens'"):
        SamplingSettings(max_new_tokens=4, min_new_tokens=5)


def test_batches_by_prompts_and_tokens():
    lengths = [30, 10, 20, 50, 10, 200]
    plan = batches(lengths, n=2, batch_size=3, max_batch_tokens=2 * 2 * (30 + 10), max_new_tokens=10)
    assert sorted(i for b in plan for i in b) == list(range(6))
    assert [[lengths[i] for i in b] for b in plan] == [[10, 10], [20, 30], [50], [200]]
    for b in plan:  # within budget, except a prompt that alone exceeds it
        assert len(b) == 1 or len(b) * 2 * (max(lengths[i] for i in b) + 10) <= 160
    assert batches(lengths, n=1, batch_size=4, max_batch_tokens=None, max_new_tokens=10) == [
        [1, 4, 2, 0],
        [3, 5],
    ]


def test_forward_responses_hands_the_lm_head_a_contiguous_input(tiny_model_dir):
    """HF slices the hidden states to the response positions (a strided view with several rows), where torch's
    linear would copy the whole head weight per row: the head sees a contiguous input during
    `forward_responses`, the same log-probs come out, and the hook is gone afterwards."""
    model = load_causal_lm(tiny_model_dir, "float32").eval()
    seen = []
    model.get_output_embeddings().register_forward_hook(
        lambda _m, args, _o: seen.append(args[0].is_contiguous())
    )
    ids = torch.randint(5, 20, (3, 10))
    rollout = Rollout(ids, torch.ones_like(ids), 6, torch.ones(3, 4), torch.ones(3, dtype=torch.bool))
    with torch.no_grad():
        model(input_ids=ids, logits_to_keep=5)  # without it: the strided slice this guards against
        logp, _ = forward_responses(model, rollout)
        out = model(input_ids=ids)  # the full logits, for the same log-probs by hand
    assert seen == [False, True, True]
    expected = torch.log_softmax(out.logits[:, 5:-1].float(), -1).gather(-1, ids[:, 6:, None])[..., 0]
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=0)
    with contiguous_head_input(model):
        assert len(model.get_output_embeddings()._forward_pre_hooks) == 1
    assert not model.get_output_embeddings()._forward_pre_hooks
