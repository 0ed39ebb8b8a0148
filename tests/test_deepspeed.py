"""`accelerate launch --config_file configs/accelerate/{zero2,zero3,ddp}.yaml -m rlhf dpo` on CPU vs a plain run.

The shipped YAMLs are launched unchanged, with --num_processes / --main_process_port on the command line.
Every distributed run must log the same per-step losses as one plain process with the same global batch
(measured ≤ 2e-7; one process with half the batch, what a rank that never syncs gradients sees, is off by
5e-2; step 1 is ln 2 in every run, policy = reference, so it takes STEPS >= 2). Full fine-tuning, so DPO's
frozen reference model goes through DeepSpeed too.

The model's MLP matrices (32 x 4096 = 131,072 elements) exceed DeepSpeed's
stage3_param_persistence_threshold (1e5), so ZeRO-3 really partitions them; with the conftest model every
tensor would stay whole on each rank and a save of the shards would look fine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from support.data import marker_rows, write_jsonl
from support.launch import (
    ACCELERATE_CONFIGS,
    CONFIGS,
    accelerate_launch,
    check,
    losses,
    max_loss_diff,
    metrics,
    offline_env,
)
from support.launch import plain_launch as plain
from support.tiny import WORDS

pytestmark = pytest.mark.slow

STEPS = 3
GLOBAL_BATCH = 4
TOL = 1e-4  # per-step |loss difference|; measured ≈ 1e-7
TIMEOUT = 600  # the first DeepSpeed use on a machine compiles deepspeed_shm_comm (≈ 1-2 min on 2 cores)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    root = tmp_path_factory.mktemp("deepspeed")
    model_dir = root / "wide-llama"
    shutil.copytree(tiny_model_dir, model_dir)
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.intermediate_size = 4096
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(model_dir)
    return {
        "root": root,
        "model": model_dir,
        "data": write_jsonl(root / "prefs.jsonl", marker_rows(16)),
        # No GPU even where there is one: these runs are the CPU (gloo) path.
        "env": offline_env(root / "cache", {"CUDA_VISIBLE_DEVICES": ""}),
    }


def overrides(setup, name, per_device_batch):
    return {
        "run.output_root": setup["root"] / "runs",
        "run.name": name,
        "model.name": setup["model"],
        "model.lora": None,
        "data.train": setup["data"],
        "data.max_length": 64,
        "trainer.max_steps": STEPS,
        "trainer.per_device_train_batch_size": per_device_batch,
        "trainer.gradient_accumulation_steps": 1,
        "trainer.learning_rate": 1e-2,
        "trainer.lr_scheduler_type": "constant",
        "trainer.warmup_steps": 0,
        "trainer.bf16": False,
        "trainer.logging_steps": 1,
        "trainer.save_strategy": "no",
        "trainer.gradient_checkpointing": False,
    }


def launch(setup, name, per_device_batch, config_yaml=None, num_processes=1):
    args = ("dpo", CONFIGS / "dpo.yaml", overrides(setup, name, per_device_batch))
    kw = {"env": setup["env"], "cwd": setup["root"], "timeout": TIMEOUT}
    if config_yaml is None:
        check(plain(*args, **kw))
    else:
        check(accelerate_launch(config_yaml, *args, num_processes=num_processes, **kw))
    run = setup["root"] / "runs" / name
    assert (run / "COMPLETED").exists()
    return run


@pytest.fixture(scope="module")
def plain_run(setup):
    run = launch(setup, "plain", GLOBAL_BATCH)
    logged = losses(run)
    assert len(logged) == STEPS, logged
    assert len({round(loss, 6) for _, loss in logged}) == STEPS, logged
    return run


@pytest.fixture(scope="module")
def zero3_run(setup):
    return launch(setup, "zero3", GLOBAL_BATCH, ACCELERATE_CONFIGS / "zero3.yaml", num_processes=1)


def state_dict(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


@pytest.mark.parametrize("config", ["zero2", "ddp"])
def test_two_processes_match_one(setup, plain_run, config):
    run = launch(setup, config, GLOBAL_BATCH // 2, ACCELERATE_CONFIGS / f"{config}.yaml", num_processes=2)
    diff = max_loss_diff(losses(run), losses(plain_run))
    print(f"{config} 2x{GLOBAL_BATCH // 2} vs plain 1x{GLOBAL_BATCH}: max per-step loss diff {diff:.3g}")
    assert diff < TOL
    saved, ref = state_dict(run / "model"), state_dict(plain_run / "model")
    assert max((saved[k] - ref[k]).abs().max().item() for k in ref) < 1e-3


def test_zero3_matches_plain(zero3_run, plain_run):
    diff = max_loss_diff(losses(zero3_run), losses(plain_run))
    print(f"ZeRO-3 1x{GLOBAL_BATCH} vs plain 1x{GLOBAL_BATCH}: max per-step loss diff {diff:.3g}")
    assert diff < TOL


def test_zero3_saves_a_loadable_full_model(setup, zero3_run, plain_run):
    saved, ref = state_dict(zero3_run / "model"), state_dict(plain_run / "model")
    assert max((saved[k] - ref[k]).abs().max().item() for k in ref) < 1e-3
    init = state_dict(setup["model"])
    assert any(not torch.equal(saved[k], init[k]) for k in init)


# -- PPO: our own accelerate loop under the same launches ---------------------------------------------------

PPO_KEYS = ("loss/policy", "loss/value", "reward", "kl")


def ppo_launch(setup, name, rollout_per_process, config_yaml=None, num_processes=1):
    prompts = setup["root"] / "prompts.jsonl"
    if not prompts.exists():
        write_jsonl(prompts, [{"prompt": f"{w} tree {w}"} for w in WORDS[:24]])
    over = {
        "run.output_root": setup["root"] / "runs",
        "run.name": name,
        "model.name": setup["model"],
        "model.lora": None,
        "reward.model": None,
        "reward.function": "support.rewards:marker_fraction",
        "reward.missing_eos_penalty": 0.5,
        "data.prompts": prompts,
        "sampling.max_new_tokens": 6,
        "sampling.do_sample": False,  # greedy: the same rollouts whatever the process layout
        "ppo.steps": STEPS,
        "ppo.rollout_batch_size": rollout_per_process,
        "ppo.minibatch_size": rollout_per_process,
        "ppo.ppo_epochs": 2,
        "ppo.learning_rate": 1e-3,
        "ppo.bf16": False,
        "ppo.save_steps": 0,
        "drift.max_kl": None,
        "drift.max_length_ratio": None,
    }
    args = ("ppo", CONFIGS / "ppo.yaml", over)
    kw = {"env": setup["ppo_env"], "cwd": setup["root"], "timeout": TIMEOUT}
    if config_yaml is None:
        check(plain(*args, **kw))
    else:
        check(accelerate_launch(config_yaml, *args, num_processes=num_processes, **kw))
    run = setup["root"] / "runs" / name
    assert (run / "COMPLETED").exists()
    return [r for r in metrics(run) if "loss/policy" in r]


@pytest.fixture(scope="module")
def ppo_plain(setup):
    setup["ppo_env"] = {**setup["env"], "PYTHONPATH": str(Path(__file__).parent)}
    logged = ppo_launch(setup, "ppo-plain", 8)
    assert len(logged) == STEPS
    assert logged[-1]["kl"] != 0  # the policy moved (k1 on greedy rollouts: any sign)
    return logged


@pytest.mark.parametrize(("config", "procs"), [("zero2", 2), ("zero3", 1), ("zero3", 2)])
def test_ppo_under_deepspeed_matches_plain(setup, ppo_plain, config, procs):
    name = f"ppo-{config}-{procs}"  # ZeRO-3 over 2 processes: generation runs in lock-step (synced_gpus)
    logged = ppo_launch(setup, name, 8 // procs, ACCELERATE_CONFIGS / f"{config}.yaml", procs)
    diff = max(abs(a[k] - b[k]) for a, b in zip(logged, ppo_plain, strict=True) for k in PPO_KEYS)
    print(f"PPO {config} {procs}x{8 // procs} vs plain 1x8: max per-step difference {diff:.3g}")
    assert diff < 1e-4
    runs = setup["root"] / "runs"
    saved, ref = state_dict(runs / name / "model"), state_dict(runs / "ppo-plain" / "model")
    assert max((saved[k] - ref[k]).abs().max().item() for k in ref) < 1e-3  # ZeRO-3: gathered, loadable
