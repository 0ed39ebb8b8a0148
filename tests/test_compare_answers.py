"""Comparison answers and the KL measured on them (fp32, the tiny Llama):

- the KL estimate on a policy's own samples matches the exact KL, computed by enumerating every answer of
  up to 3 tokens, within its sampling error — while the old way (re-tokenized text, scored at temperature 1,
  with an EOS term on cut answers) misses it;
- an answer depends only on (model, prompt, settings, seed, sample index): not on the batch size, nor on
  which other answers were already cached; more samples per prompt generate only the new ones.
"""

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from rlhf.compare import Lazy, collect_answers, kl_on_samples
from rlhf.compare.answer_cache import GenerationCache
from rlhf.generation import SamplingSettings
from rlhf.logprobs import pair_logprobs, sequence_logprobs
from rlhf.models import load_causal_lm, load_tokenizer, model_fingerprint
from rlhf.prompts import encode_prompt

PROMPTS = ["the cat", "hello world", "a big red tree", "water", "one two three", "run", "blue sky", "tea"]


def _peaked(base: str, out, *, scale: float, noise: float, seed: int) -> str:
    """The tiny Llama with sharper next-token distributions (its final norm scaled) and, for a second model,
    some noise on that norm: two policies whose KL is far from zero."""
    torch.manual_seed(seed)
    model = load_causal_lm(base)
    with torch.no_grad():
        model.model.norm.weight.mul_(scale).add_(noise * torch.randn_like(model.model.norm.weight))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def two_policies(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("kl")
    policy = _peaked(tiny_model_dir, root / "policy", scale=6.0, noise=0.0, seed=0)
    reference = _peaked(tiny_model_dir, root / "reference", scale=6.0, noise=3.0, seed=1)
    return policy, reference


def _next_token_logps(model, contexts: list[list[int]], temperature: float) -> torch.Tensor:
    """log softmax(logits / T) of the next token after each context (same length: no padding needed)."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor(contexts)).logits[:, -1].float()
    return torch.log_softmax(logits / temperature, -1)


def exact_kl(policy, reference, prompt_ids: list[int], eos: int, steps: int, temperature: float) -> float:
    """KL between the two models' answer distributions (answers end at EOS or after `steps` tokens) by
    enumeration: sum over t of E_{prefix ~ policy}[KL(p(.|prefix) || q(.|prefix))] over unfinished prefixes."""
    total, prefixes, weights = 0.0, [[]], torch.ones(1, dtype=torch.float64)
    for t in range(steps):
        contexts = [prompt_ids + p for p in prefixes]
        lp = _next_token_logps(policy, contexts, temperature).double()
        lq = _next_token_logps(reference, contexts, temperature).double()
        total += float((weights * (lp.exp() * (lp - lq)).sum(-1)).sum())
        if t == steps - 1:
            break
        vocab = lp.shape[1]
        keep = [v for v in range(vocab) if v != eos]
        prefixes = [p + [v] for p in prefixes for v in keep]
        weights = (weights[:, None] * lp.exp()[:, keep]).reshape(-1)
    return total


def test_kl_on_own_samples_matches_exact_kl_by_enumeration(two_policies, tmp_path):
    policy_dir, ref_dir = two_policies
    tok = load_tokenizer(policy_dir, padding_side="left")
    sampling = SamplingSettings(max_new_tokens=3, temperature=0.7, top_p=1.0)
    policy, reference = load_causal_lm(policy_dir).eval(), load_causal_lm(ref_dir).eval()
    encoded = [encode_prompt(tok, p) for p in PROMPTS]
    eos = tok.eos_token_id
    exact = np.mean([exact_kl(policy, reference, ids, eos, 3, 0.7) for ids in encoded])

    pol, ref = Lazy(lambda: policy), Lazy(lambda: reference)
    ans = collect_answers(
        "p", policy_dir, tok, PROMPTS, encoded, sampling,
        samples=150, cache_root=tmp_path, seed=0, batch_size=200, model=pol,
    )  # fmt: skip
    assert sum(ans.ended) > 0
    assert sum(not e for e in ans.ended) > 0  # both ended and cut answers are in the sample
    kl = kl_on_samples(
        pol, ref, model_fingerprint(ref_dir), tok, encoded, ans, sampling,
        batch_size=200, bootstrap_resamples=200,
    )  # fmt: skip
    ref_key = f"ref_logp:{model_fingerprint(ref_dir)[:16]}"
    values = np.array(
        [ans.cache.get(PROMPTS[i], j)["logp"] - ans.cache.get(PROMPTS[i], j)[ref_key]
         for i, j in zip(ans.prompt_index, ans.sample, strict=True)]
    )  # fmt: skip
    se = values.std(ddof=1) / np.sqrt(len(values))
    assert exact > 0.2  # the two policies really differ
    assert abs(kl.mean - exact) < 4 * se, (kl.mean, exact, se)
    assert kl.ci95[0] <= kl.mean <= kl.ci95[1]

    # the old way: decoded text re-tokenized, scored at temperature 1 with an EOS term on every answer
    texts = [PROMPTS[i] for i in ans.prompt_index]
    old_p, _ = sequence_logprobs(policy, tok, texts, ans.texts, batch_size=200)
    old_q, _ = sequence_logprobs(reference, tok, texts, ans.texts, batch_size=200)
    old = np.mean(np.array(old_p) - np.array(old_q))
    assert abs(old - exact) > 4 * se, (old, exact, se)


def test_an_answer_does_not_depend_on_batching_or_on_what_was_cached(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir).eval()
    encoded = [encode_prompt(tok, p) for p in PROMPTS]
    sampling = SamplingSettings(max_new_tokens=6, temperature=0.9, top_p=0.9)

    def answers(root, prompts, batch_size, samples=1):
        ids = [encoded[PROMPTS.index(p)] for p in prompts]
        return collect_answers(
            "m", tiny_model_dir, tok, prompts, ids, sampling, samples=samples,
            cache_root=root, seed=3, batch_size=batch_size, model=Lazy(lambda: model),
        )  # fmt: skip

    one_by_one = answers(tmp_path / "a", PROMPTS, 1)
    batched = answers(tmp_path / "b", PROMPTS, 8)
    assert batched.texts == one_by_one.texts
    assert batched.ids == one_by_one.ids
    partial = answers(tmp_path / "c", PROMPTS[::3], 2)  # some cached first, the rest generated later
    rest = answers(tmp_path / "c", PROMPTS, 3)
    assert partial.generated == 3
    assert rest.generated == len(PROMPTS) - 3
    assert rest.cached == 3
    assert rest.texts == one_by_one.texts

    more = answers(tmp_path / "a", PROMPTS, 4, samples=3)  # n = 1 -> 3: only the new samples
    assert more.generated == 2 * len(PROMPTS)
    assert more.first() == one_by_one.texts
    per_prompt = [set(more.texts[k * 3 : k * 3 + 3]) for k in range(len(PROMPTS))]
    assert sum(len(s) > 1 for s in per_prompt) >= len(PROMPTS) // 2  # samples differ from each other


def test_the_cache_key_is_what_changes_an_answer(tmp_path):
    s = SamplingSettings(max_new_tokens=8, temperature=0.7)
    key = GenerationCache(tmp_path, "m", s, 0).path
    assert GenerationCache(tmp_path, "m", SamplingSettings(max_new_tokens=8, temperature=0.7), 0).path == key
    assert GenerationCache(tmp_path, "m", SamplingSettings(max_new_tokens=8, temperature=0.8), 0).path != key
    assert GenerationCache(tmp_path, "m", s, 1).path != key
    assert GenerationCache(tmp_path, "other", s, 0).path != key


def test_a_hub_id_is_keyed_by_the_revision_it_resolves_to(tmp_path, monkeypatch):
    """A hub id in the local Hugging Face cache: its snapshot's commit is part of the fingerprint."""
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--org--tiny"

    def publish(rev: str) -> str:
        (repo / "snapshots" / rev).mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / rev / "config.json").write_text("{}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(rev)
        return model_fingerprint("org/tiny")

    first = publish("a" * 40)
    assert publish("a" * 40) == first
    assert publish("b" * 40) != first


def test_pair_scoring_with_a_shared_prompt_equals_scoring_each_answer_whole(tiny_model_dir):
    """fp32: the prompt run once and its KV cache shared by both answers gives each answer's log-prob sum
    and token count as scoring the whole sequences one by one (to float rounding), whatever the batch."""
    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir).eval()
    prompts = PROMPTS[:6]
    chosen = ["a cat sat on the mat", "world", "a tree", "cold water is good", "four five", "run fast now"]
    rejected = ["no", "hello hello hello world again", "red", "fire", "one", "walk"]
    want_c, n_c = sequence_logprobs(model, tok, prompts, chosen, batch_size=1)
    want_r, n_r = sequence_logprobs(model, tok, prompts, rejected, batch_size=1)
    for batch_size in (1, 4):
        got_c, m_c, got_r, m_r = pair_logprobs(model, tok, prompts, chosen, rejected, batch_size=batch_size)
        assert (m_c, m_r) == (n_c, n_r) and min(n_c + n_r) >= 2
        np.testing.assert_allclose(got_c, want_c, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(got_r, want_r, rtol=1e-5, atol=1e-4)
    assert len(set(np.round(want_c, 3))) == len(prompts)  # the sums differ: a real comparison
