"""The loop tests' tiny world: 30 prompts, SFT rows with the marker the taste (`liking_marker`) likes, and a
loop config sized for the tiny Llama (fp32 training; generate and compare sample with precision: float32)."""

import json

from rlhf.config import load_config
from rlhf.loop.config import LoopConfig
from support.data import write_jsonl
from support.tiny import WORDS

TRAINER = {
    "max_steps": 2,
    "per_device_train_batch_size": 4,
    "learning_rate": 1e-2,
    "logging_steps": 1,
    "save_strategy": "no",
    "gradient_checkpointing": False,
    "report_to": "none",
    "bf16": False,
    "dataloader_num_workers": 0,
}


def write_loop_files(tmp_path):
    """30 prompts and 16 SFT rows whose completion holds the marker the tests' taste likes."""
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"id": f"p{i:02d}", "prompt": f"{WORDS[i % 20]} {WORDS[20 + i % 3]} {WORDS[30 + i // 3]}"}
            for i in range(30)
        ],
    )
    sft = write_jsonl(
        tmp_path / "sft.jsonl",
        [{"prompt": f"{WORDS[i]} {WORDS[i + 1]}", "completion": "marker tree"} for i in range(16)],
    )
    return prompts, sft


def loop_config(tmp_path, model, prompts, sft, **extra) -> LoopConfig:
    raw = {
        "run": {"name": "lp", "output_root": str(tmp_path / "runs"), "seed": 3},
        "policy": model,
        "rounds": 2,
        "prompts": prompts,
        "eval_prompts": 6,
        "prompts_per_round": 5,
        "pool_factor": 2,
        "labels": {"holdout_share": 0.4},
        "assessors": {
            "reward": {"function": "support.rewards:liking_marker", "model": None, "normalize": False}
        },
        "stages": {
            "sft": {"data": {"train": sft, "max_length": 64}, "trainer": TRAINER},
            "generate": {
                "k": 2,
                "data": {"max_prompt_length": 32},
                # no empty answers (a pair with an empty side is rejected: too few pairs would be left)
                "sampling": {"max_new_tokens": 6, "min_new_tokens": 2, "precision": "float32"},
                "project": {"overlap": 2},
            },
            "reward": {
                "model": {"name": model},
                "ensemble": 2,
                "data": {"eval_fraction": 0.25, "max_length": 48},
                "report": {"bootstrap": 50, "swap_check": False},
                "trainer": {**TRAINER, "max_steps": 3},
            },
            "dpo": {"data": {"max_length": 64}, "drift": {"every_steps": 0}, "trainer": TRAINER},
            "compare": {
                "data": {"max_prompt_length": 32},
                "sampling": {"max_new_tokens": 6, "precision": "float32"},
                "bootstrap": 50,
                "cache": str(tmp_path / "cache"),
            },
        },
    }
    for key, value in extra.items():
        node = raw
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    path = tmp_path / "loop.yaml"
    path.write_text(json.dumps(raw))
    return load_config(LoopConfig, path)
