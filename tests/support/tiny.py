"""A tiny random Llama with a word-level ChatML tokenizer, built locally in a second: for the tests, the
benchmarks that measure overheads (not model speed), and smoke runs on machines without any model files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WORDS = (
    "the a cat dog sat on mat sun is hot cold blue red green tree river stone bird sings today tomorrow yes no "
    "please thanks hello world answer question water fire earth wind happy sad big small one two three four "
    "five six seven eight nine ten apple bread milk tea coffee run walk jump read write good bad marker"
).split()


def build_tiny_llama(directory, *, extra_words: tuple[str, ...] = ()) -> str:
    """Save the tiny model and its tokenizer into `directory`; returns the path. `extra_words` join the
    vocabulary (e.g. "A" and "B" for a judge)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    words = specials + ["\n", "system", "user", "assistant", "tool"] + WORDS + list(extra_words)
    vocab = {t: i for i, t in enumerate(words)}
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


def build_tiny_reward_model(directory, base: str, *, seed: int = 1) -> str:
    """A reward model on the tiny Llama at `base`: a random score head, its tokenizer, and the
    rlhf_reward.json that marks it as an rlhf reward model (max length 64, norm mean 0 / std 1)."""
    d = Path(directory)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.score.weight.data.normal_()
    model.save_pretrained(d)
    AutoTokenizer.from_pretrained(base).save_pretrained(d)
    (d / "rlhf_reward.json").write_text(json.dumps({"max_length": 64, "norm": {"mean": 0.0, "std": 1.0}}))
    return str(d)


def build_always_a_judge(directory) -> str:
    """A tiny judge that answers "A" whatever it reads: every layer's output projections are zero, so the
    last position's hidden state is the embedding of the generation prompt's last token, the same for every
    input; the embeddings of "A" and "B" (tied to the output layer) point along it and against it."""
    d = build_tiny_llama(directory, extra_words=("A", "B"))
    model = LlamaForCausalLM.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        prompt = [{"role": "user", "content": "question"}]
        ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
        last = ids[-1]
        h = model.model.norm(emb[last][None])[0]
        emb[tok.convert_tokens_to_ids("A")] = 5 * h / h.norm()
        emb[tok.convert_tokens_to_ids("B")] = -5 * h / h.norm()
    model.save_pretrained(d)
    return d


# a training stage on the tiny Llama: 2 steps of 4 rows at lr 1e-2, fp32 on every CPU (bf16 is tested on its own)
TINY_TRAINER = {
    "trainer.max_steps": 2,
    "trainer.per_device_train_batch_size": 4,
    "trainer.learning_rate": 1e-2,
    "trainer.logging_steps": 1,
    "trainer.save_strategy": "no",
    "trainer.gradient_checkpointing": False,
    "trainer.report_to": "none",
    "trainer.bf16": False,
    "trainer.dataloader_num_workers": 0,
}


def stage_config(cls, tmp_path, model, data, name, **extra):
    """A training stage's config (`cls`) for the tiny Llama under tmp_path/runs/<name>: `TINY_TRAINER`,
    max_length 64, then `extra` (dotted keys) on top."""
    from rlhf.config import load_config  # noqa: PLC0415 - support modules load rlhf only when used

    over = {
        "run.output_root": str(tmp_path / "runs"),
        "run.name": name,
        "model.name": model,
        "data.train": data,
        "data.max_length": 64,
        **TINY_TRAINER,
        **extra,
    }
    return load_config(cls, None, [f"{k}={v}" for k, v in over.items()])
