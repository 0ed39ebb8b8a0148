"""Offline fixtures: a tiny Llama and a word-level tokenizer with a ChatML template, built locally."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WORDS = (
    "the a cat dog sat on mat sun is hot cold blue red green tree river stone bird sings today tomorrow yes no "
    "please thanks hello world answer question water fire earth wind happy sad big small one two three four "
    "five six seven eight nine ten apple bread milk tea coffee run walk jump read write good bad marker"
).split()


def make_rows(n: int, *, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        rows.append(
            {"id": f"r{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        )
    return rows


def write_jsonl(path, rows) -> str:
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-llama")
    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + ["\n", "system", "user", "assistant", "tool"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", behavior="isolated"), pre_tokenizers.WhitespaceSplit()]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>", bos_token=None
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.chat_template = CHATML
    fast.save_pretrained(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=vocab["<|im_end|>"],
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(d)
    return str(d)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Never write into the user's cache; the real-alias tests opt back in explicitly.
    monkeypatch.setenv("RLHF_CACHE", os.environ.get("RLHF_TEST_CACHE") or str(tmp_path / "cache"))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path):
    """A fresh, empty store location on each backend. PostgreSQL needs RLHF_TEST_PG_URL (.ci/run sets it)."""
    if request.param == "sqlite":
        return str(tmp_path / "labels.db")
    url = os.environ.get("RLHF_TEST_PG_URL")
    if not url:
        pytest.skip(
            "PostgreSQL store tests need RLHF_TEST_PG_URL (bash scripts/pg_test_server.sh start DIR sets it)"
        )
    from sqlalchemy import create_engine

    from rlhf.store.schema import Base

    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def store(store_target):
    from rlhf.store.service import Store

    s = Store(store_target)
    yield s
    s.close()
