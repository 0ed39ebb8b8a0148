"""The `trainer:` mapping -> a TRL config class, shared by every TRL-based stage.

Keys rlhf owns (output dir, seed, lengths) are refused with the key to use instead; unknown keys fail by
name with a "did you mean"; TRL's own validation errors come back as ConfigErrors. On a machine without
CUDA, `use_cpu: true` is added (TRL's bf16 default otherwise refuses to start) — except under DeepSpeed,
where `use_cpu` makes DeepSpeed and HF disagree on the world size; there `ddp_backend: gloo` is added instead
(without a backend accelerate counts one process while DeepSpeed counts them all).

Precision: when the config sets neither `bf16` nor `fp16`, bf16 mixed precision is used where the hardware
does bf16 natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX) and fp32 elsewhere. Measured on an
AVX2-only CPU: one SmolLM2 LoRA step (8 x 120 tokens) took 176 s under bf16 autocast and 6.6 s in fp32.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path

import torch

from rlhf.distributed import gathered_for_save, under_deepspeed
from rlhf.errors import ConfigError
from rlhf.models import save_model

_USER_TENSORBOARD_DIR = os.environ.get("TENSORBOARD_LOGGING_DIR")


def point_tensorboard_at(path) -> None:
    """TensorBoard events (when report_to asks) go into the run dir, unless the user chose a place."""
    os.environ["TENSORBOARD_LOGGING_DIR"] = _USER_TENSORBOARD_DIR or str(path)


def check_reserved(trainer: dict, reserved: dict[str, str]) -> None:
    for key, ours in reserved.items():
        if key in trainer:
            raise ConfigError(f"'trainer.{key}' is set by rlhf; use {ours} instead.")


def save_trained(model, tokenizer, run, save: str) -> str | None:
    """The final model of a TRL stage into run.model_dir (`save`: merged | adapter); every rank calls it
    (the gather under ZeRO-3 is collective), the main process writes. Returns the kind saved (main only)."""
    with gathered_for_save(model):
        if run.main:
            return save_model(model, tokenizer, run.model_dir, merge_lora=save == "merged")
    return None


def fast_bf16() -> bool:
    """True where bf16 matmuls run natively (not emulated at a large slowdown)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build_trl_config(config_cls, trainer: dict, owned: dict):
    """`trainer` (user keys) + `owned` (set by rlhf) -> config_cls(**...)."""
    valid = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(trainer) - valid)
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"'trainer.{unknown[0]}' is not an option of trl.{config_cls.__name__}.{hint}")
    kwargs = {**trainer, **owned}
    if not torch.cuda.is_available():
        if under_deepspeed():
            # Without a backend accelerate counts 1 process while DeepSpeed counts them all: "train_batch_size
            # is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 2 != 2 * 1 * 2".
            kwargs.setdefault("ddp_backend", "gloo")
            # transformers refuses bf16 on a CPU without use_cpu ("Your setup doesn't support bf16/gpu").
            kwargs.setdefault("bf16", False)
        else:
            kwargs.setdefault("use_cpu", True)
    if "bf16" not in kwargs and "fp16" not in kwargs:
        kwargs["bf16"] = fast_bf16()
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"trainer: trl.{config_cls.__name__} rejected the settings: {e}") from None
