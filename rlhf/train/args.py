"""The `trainer:` mapping -> a TRL config class, shared by every TRL-based stage.

Keys rlhf owns (output dir, seed, lengths) are refused with the key to use instead; unknown keys fail by
name with a "did you mean"; TRL's own validation errors come back as ConfigErrors. On a machine without
CUDA, `use_cpu: true` is added (TRL's bf16 default otherwise refuses to start) — except under DeepSpeed,
where `use_cpu` makes DeepSpeed and HF disagree on the world size; there `ddp_backend: gloo` is added instead
(without a backend accelerate counts one process while DeepSpeed counts them all).

Precision: when the config sets neither `bf16` nor `fp16`, bf16 mixed precision is used where the hardware
does bf16 natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX) and fp32 elsewhere. Measured on an
AVX2-only CPU: one SmolLM2 LoRA step (8 x 120 tokens) took 176 s under bf16 autocast and 6.6 s in fp32.
(LoRA under bf16 mixed precision holds its frozen base in bf16: `rlhf.train.stage.TRLStage.load_model`.)
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import types
import typing

import torch

from rlhf.config import Range
from rlhf.distributed import gathered_for_save, under_deepspeed
from rlhf.errors import ConfigError
from rlhf.models import fast_bf16, on_fp32_base, save_model

_USER_TENSORBOARD_DIR = os.environ.get("TENSORBOARD_LOGGING_DIR")


def point_tensorboard_at(path) -> None:
    """TensorBoard events (when report_to asks) go into the run dir, unless the user chose a place."""
    os.environ["TENSORBOARD_LOGGING_DIR"] = _USER_TENSORBOARD_DIR or str(path)


def check_reserved(trainer: dict, reserved: dict[str, str]) -> None:
    for key, ours in reserved.items():
        if key in trainer:
            raise ConfigError(f"'trainer.{key}' is set by rlhf; use {ours} instead.")


def save_trained(model, tokenizer, run, save: str, *, fp32_base: str | None = None) -> str | None:
    """The final model of a TRL stage into run.model_dir (`save`: merged | adapter); every rank calls it
    (the gather under ZeRO-3 is collective), the main process writes. Returns the kind saved (main only).
    `fp32_base`: the LoRA base was held in bf16 for training; a merged save folds the adapter into this
    base loaded in fp32 instead."""
    with gathered_for_save(model):
        if run.main:
            if fp32_base is not None and save == "merged" and hasattr(model, "peft_config"):
                model = on_fp32_base(model, fp32_base)
            return save_model(model, tokenizer, run.model_dir, merge_lora=save == "merged")
    return None


# ranges of common TRL / transformers options, checked at config load with the types (TRL checks the rest
# when the run starts)
TRAINER_RANGES = {
    "learning_rate": Range(gt=0),
    "num_train_epochs": Range(gt=0),
    "max_steps": Range(ge=-1),
    "per_device_train_batch_size": Range(ge=1),
    "per_device_eval_batch_size": Range(ge=1),
    "gradient_accumulation_steps": Range(ge=1),
    "warmup_steps": Range(ge=0),
    "warmup_ratio": Range(ge=0, le=1),
    "weight_decay": Range(ge=0),
    "max_grad_norm": Range(ge=0),
    "logging_steps": Range(gt=0),
    "save_steps": Range(gt=0),
    "eval_steps": Range(gt=0),
    "save_total_limit": Range(ge=1),
    "dataloader_num_workers": Range(ge=0),
    "adam_beta1": Range(ge=0, le=1),
    "adam_beta2": Range(ge=0, le=1),
    "adam_epsilon": Range(gt=0),
    "beta": Range(ge=0),
    "temperature": Range(gt=0),
    "top_p": Range(gt=0, le=1),
    "num_generations": Range(ge=2),
    "max_completion_length": Range(ge=1),
    "max_prompt_length": Range(ge=1),
}


def check_trainer(config_cls, trainer: dict) -> None:
    """Config-load checks of a `trainer:` mapping against the TRL config class: known keys (with a "did you
    mean"), each value's type as the class declares it, and the ranges of common options."""
    valid = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(trainer) - valid)
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"'trainer.{unknown[0]}' is not an option of trl.{config_cls.__name__}.{hint}")
    hints = typing.get_type_hints(config_cls)
    for key, value in trainer.items():
        expected = _type_mismatch(hints.get(key, typing.Any), value)
        if expected:
            raise ConfigError(
                f"'trainer.{key}' must be {expected} (trl.{config_cls.__name__}), got {value!r} "
                f"({type(value).__name__})."
            )
        if key in TRAINER_RANGES:
            TRAINER_RANGES[key].check(value, f"trainer.{key}")


def _type_mismatch(tp, value) -> str | None:
    """None when `value` fits the declared type `tp`, else a description of what was expected."""
    origin = typing.get_origin(tp)
    if tp is typing.Any:
        return None
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(tp)
        enums = [a for a in arms if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and str in arms and isinstance(value, str):  # `SaveStrategy | str`: a str names a member
            return _type_mismatch(enums[0], value)
        wants = [_type_mismatch(a, value) for a in arms]
        return None if any(w is None for w in wants) else " or ".join(dict.fromkeys(wants))
    if tp is type(None):
        return None if value is None else "null"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        choices = [m.value for m in tp]
        return None if value in choices or isinstance(value, tp) else f"one of {', '.join(map(str, choices))}"
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        return None if value in choices else f"one of {', '.join(map(str, choices))}"
    checks = {
        bool: (lambda v: isinstance(v, bool), "true or false"),
        int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
        float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
        str: (lambda v: isinstance(v, str), "a string"),
        list: (lambda v: isinstance(v, list), "a list"),
        dict: (lambda v: isinstance(v, dict), "a mapping"),
    }
    base = origin or tp
    if base is list and typing.get_args(tp) and not isinstance(value, list):
        # TRL takes a single item for a list option too (loss_type: sigmoid -> ["sigmoid"])
        single = _type_mismatch(typing.get_args(tp)[0], value)
        return None if single is None else f"a list (or {single})"
    if base in checks:
        ok, name = checks[base]
        return None if ok(value) else name
    return None  # a type we do not check here: TRL's own validation applies when the run starts


def build_trl_config(config_cls, trainer: dict, owned: dict):
    """`trainer` (user keys) + `owned` (set by rlhf) -> config_cls(**...)."""
    check_trainer(config_cls, trainer)
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
