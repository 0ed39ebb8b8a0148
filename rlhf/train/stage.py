"""The frame every TRL-based stage (sft, dpo, reward, grpo/rloo) runs in, written once.

A stage module keeps what is its own — its config, its data, the TRL trainer it builds and the result it
reports — and leaves the rest to `TRLStage`:

    stage = TRLStage("dpo", DPOConfig, cfg, owned={"max_length": cfg.data.max_length})  # fails early
    with stage.open(resume=resume, overwrite=overwrite) as run_dir:
        tokenizer, rows = ...                                   # the stage's own data and accounting
        stage.record_inputs("data.train", cfg.data.train)
        trainer = DPOTrainer(model=stage.load_model(), args=stage.args(has_eval=...), callbacks=[stage.callback], ...)
        trained = stage.train(trainer, resume=resume)
        stage.finish(trainer, tokenizer, trained, {**trained.outcome(), ...}, save=cfg.save, summary="...")

- Keys rlhf owns in the TRL config: `output_dir` (the run's checkpoints/) and `seed` (run.seed) for every
  stage, plus the stage's own (`owned`: max_length, ...). `check_trainer_section` refuses them in the
  `trainer:` mapping at config load, naming the setting to use instead.
- The TRL config is built when the stage is made, before the run directory is touched: a bad `trainer:`
  key or a value TRL refuses leaves nothing behind.
- Inside the run: TensorBoard events go into the run dir, `callback` (a RunDirCallback) logs metrics and
  marks checkpoints, `train` resumes / trains / times and restores the best checkpoint after a drift stop,
  `finish` saves the model (merged | adapter), declares it, and says the closing line.
- Precision (`load_model`, said in one line and recorded in the result): with LoRA under bf16 mixed
  precision (the default where bf16 is native) the frozen base is held in bf16 — what autocast casts it to
  at every matmul anyway, so the arithmetic is the same without the per-op casts of 106M frozen weights
  (SmolLM2) and at half their memory; the adapters (peft keeps them fp32 on a bf16 base) and their optimizer
  state stay fp32, and a merged save folds the adapter into the base loaded in fp32. peft's cast of each
  LoRA layer's input to the adapter's fp32 is switched off there (autocast casts it back to bf16 for the
  matmul anyway: the same arithmetic, ~8 % less time a step). A full fine-tune keeps
  fp32 master weights under autocast.
- Attention: on a CPU under bf16 mixed precision a model trains with HF's eager attention (matmuls and an
  fp32 softmax) rather than SDPA, whose CPU backward in bf16 was 17 % of a demo DPO step: the demo's DPO
  30 -> 25.5 s (alternated runs, 2-core native-bf16 CPU). A padding-free batch attends within each of its
  sequences (`rlhf.train.attention`) instead of through a block-diagonal mask over the whole row.
- Padding-free preference batches (`pack_pairs`, `rlhf.train.packing`): a DPO / KTO batch's sequences run
  in one row, no padding computed, for model types whose attention is plain causal; `data.padding_free:
  false` pads as TRL does (TRL 1.16's own padding-free DPO is switched off; KTO has none).
- The LM head: TRL's trainers score tokens through a fused LM head whose CPU fallback was most of DPO's time;
  `rlhf.train.lm_head` computes the same on CPU tensors at the CPU's speed (installed when a stage is made).

`cfg` is a stage config with `run: RunSettings`, `model: ModelConfig` and `trainer: dict`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from rlhf.data import source_path
from rlhf.errors import ConfigError
from rlhf.generation import contiguous_head_input
from rlhf.models import load_causal_lm, record_model
from rlhf.runs import CKPT_MARKER, RunDir
from rlhf.train.args import (
    build_trl_config,
    check_reserved,
    check_trainer,
    point_tensorboard_at,
    save_trained,
)
from rlhf.train.attention import PLAIN_CAUSAL, segment_attention
from rlhf.train.callbacks import DriftCallback, RunDirCallback
from rlhf.train.drift import best_checkpoint
from rlhf.train.lm_head import use_cpu_lm_head
from rlhf.train.packing import PackPairs, pack_pairs

COMPILE_ON_CPU = (
    "warning: trainer.torch_compile on a CPU: compiling the model, and recompiling it for each new batch "
    "length, usually costs more than it saves here (configs/dpo.yaml's 10 steps: 253 s with it, 37 s "
    "without, on a 2-core AVX512-BF16 CPU); leave it out unless your batches have one fixed shape"
)
OWNED_BY_EVERY_STAGE = {"output_dir": "run.output_root and run.name", "seed": "run.seed"}


def describe_precision(mixed: str | None, dtype: str, *, bf16_base: bool, trained: str = "adapters") -> str:
    """A training run's precision in words: `mixed` (bf16 | fp16 | None) over `dtype` weights, or a LoRA
    base held in bf16 (`bf16_base`) with `trained` (the fp32 weights that learn) and their optimizer state."""
    if bf16_base:
        return f"bf16 mixed precision; LoRA base held in bf16, {trained} and optimizer state fp32"
    if mixed:
        return f"{mixed} mixed precision over {dtype} weights"
    return f"{dtype} (no mixed precision: bf16 is not native here, or switched off)"


def check_trainer_section(config_cls, trainer: dict, reserved: dict[str, str] | None = None) -> None:
    """Config-load checks of a stage's `trainer:` mapping: the keys rlhf owns (output_dir, seed and the
    stage's `reserved` ones, {key: the setting to use instead}) are refused, then `check_trainer`."""
    check_reserved(trainer, {**OWNED_BY_EVERY_STAGE, **(reserved or {})})
    check_trainer(config_cls, trainer)


@dataclass
class Trained:
    result: object  # transformers' TrainOutput
    seconds: float  # wall time of train()
    restored: str | None  # the checkpoint exported after a drift stop, or None
    global_step: int = 0  # the trainer's step count when training ended

    def outcome(self) -> dict:
        """The result fields every TRL stage reports: steps, training loss, wall time."""
        return {
            "global_step": self.global_step,
            "train_loss": self.result.training_loss,
            "train_seconds": round(self.seconds, 3),
        }


class TRLStage:
    """One run of a TRL-based stage; see the module docstring for the order of the calls."""

    def __init__(self, name: str, config_cls, cfg, *, owned: dict | None = None):
        self.name, self.config_cls, self.cfg = name, config_cls, cfg
        self.owned = {
            "output_dir": str(RunDir.at(cfg.run).checkpoints),
            "seed": cfg.run.seed,
            **(owned or {}),
        }
        self.config = self.args()  # bad trainer keys fail here, before anything is written
        self.run_dir: RunDir | None = None
        self.callback: RunDirCallback | None = None
        self.bf16_base = False  # set by load_model: the LoRA base is held in bf16 (module docstring)
        use_cpu_lm_head()  # TRL's fused LM head at the CPU's speed (rlhf.train.lm_head)

    def args(self, *, has_eval: bool = False, **override):
        """cfg.trainer + the keys rlhf owns (`override` replaces some, e.g. an ensemble member's seed and
        output dir) -> the TRL config. With eval rows, evaluation runs each epoch unless
        trainer.eval_strategy says otherwise."""
        owned = {**self.owned, **override}
        if has_eval and "eval_strategy" not in self.cfg.trainer:
            owned["eval_strategy"] = "epoch"
        return build_trl_config(self.config_cls, self.cfg.trainer, owned)

    @contextmanager
    def open(self, *, resume: bool, overwrite: bool) -> Iterator[RunDir]:
        """The run directory (RunDir.prepare: a failure inside marks the run failed), with TensorBoard
        pointed into it and `callback` ready for the trainer."""
        cfg = self.cfg
        with RunDir.prepare(cfg.run, self.name, cfg, resume=resume, overwrite=overwrite) as run_dir:
            self.run_dir, self.callback = run_dir, RunDirCallback(run_dir)
            point_tensorboard_at(run_dir.path / "tensorboard")
            yield run_dir

    def precision(self) -> str:
        """What the run trains in, in words (said at the start, recorded in the result)."""
        mixed = "bf16" if self.config.bf16 else ("fp16" if self.config.fp16 else None)
        return describe_precision(mixed, self.cfg.model.dtype, bf16_base=self.bf16_base)

    def load_model(self):
        """The causal LM to train, `cfg.model`; with LoRA under bf16 autocast and `model.dtype: float32` its
        frozen base is held in bf16 (module docstring)."""
        model = self.cfg.model
        self.bf16_base = model.lora is not None and bool(self.config.bf16) and model.dtype == "float32"
        self.run_dir.say(f"precision: {self.precision()}")
        loaded = load_causal_lm(model.name, "bfloat16" if self.bf16_base else model.dtype)
        on_cpu = self.config.use_cpu or not torch.cuda.is_available()
        if on_cpu and getattr(self.config, "torch_compile", False):
            self.run_dir.say(COMPILE_ON_CPU)
        if on_cpu and getattr(loaded.config, "_attn_implementation", None) == "sdpa":
            kernel = (
                "eager" if self.config.bf16 else "sdpa"
            )  # module docstring: the CPU's SDPA backward in bf16
            loaded.config._attn_implementation = segment_attention(loaded.config, kernel) or kernel
        return loaded

    def pack_pairs(self, trainer, asked: bool | None) -> PackPairs | None:
        """Padding-free preference batches (`rlhf.train.packing`) unless `asked` (data.padding_free) is
        False; said in one line. A model type not known to be plain causal pads as TRL does (said), and
        refuses an explicit `data.padding_free: true`."""
        if asked is False:
            self.run_dir.say("padding-free batches: off (data.padding_free: false): batches padded")
            return None
        config = trainer.model.config
        if segment_attention(config, "eager") is None:
            why = f"model type {config.model_type!r} is not one whose attention is known to be plain causal"
            if asked:
                known = ", ".join(sorted(PLAIN_CAUSAL))
                raise ConfigError(f"data.padding_free: true: {why} ({known}); set it false or leave it out")
            self.run_dir.say(f"padding-free batches: off ({why}): batches padded")
            return None
        self.run_dir.say("padding-free batches: each batch's sequences in one row, no padding computed")
        return pack_pairs(*(m for m in (trainer.model, getattr(trainer, "ref_model", None)) if m is not None))

    def record_inputs(self, data_key: str, data_source: str) -> None:
        """The training data and the model, with their content hashes, into the manifest's inputs."""
        self.run_dir.record_input(data_key, data_source, source_path(data_source))
        record_model(self.run_dir, "model", self.cfg.model.name)

    def train(self, trainer, *, resume: bool, drift: DriftCallback | None = None) -> Trained:
        if self.bf16_base:  # autocast casts a LoRA layer's input to bf16 itself: peft's copy to fp32 is waste
            for module in trainer.model.modules():
                if hasattr(module, "lora_A"):
                    module.cast_input_dtype_enabled = False
        with contiguous_head_input(trainer.model):  # GRPO/RLOO: HF generate slices positions before it
            return train(trainer, self.run_dir, resume=resume, drift=drift)

    def finish(self, trainer, tokenizer, trained: Trained, outcome: dict, *, save: str, summary: str) -> None:
        """Save the final model into model/ (`save`: merged | adapter; its kind goes into `outcome`), mark
        the run completed with `outcome` as its result and the model as its output, say the closing line."""
        run_dir = self.run_dir
        fp32_base = self.cfg.model.name if self.bf16_base else None
        outcome["model_kind"] = save_trained(trainer.model, tokenizer, run_dir, save, fp32_base=fp32_base)
        if hasattr(self.cfg.model, "dtype"):
            outcome["precision"] = self.precision()
        run_dir.finish(result=outcome, outputs={"model": run_dir.model_dir})
        run_dir.say(
            f"{self.name} finished: {trained.global_step} steps in {trained.seconds:.0f} s, {summary} "
            f"-> model {run_dir.model_dir}"
        )


def train(trainer, run: RunDir, *, resume: bool, drift: DriftCallback | None = None) -> Trained:
    """The TRL stages' training step: resume from the newest complete checkpoint (with the drift guard's
    state), train, time it, and after a drift stop load the best checkpoint's weights for export."""
    checkpoint = run.resume_point(resume)
    if drift is not None:
        drift.resume_from(checkpoint)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - t0
    restored = None
    if drift is not None and drift.guard.should_stop:
        restored = restore_best(trainer.model, run, drift.guard)
        run.say(f"drift stop: exporting {restored or 'the final weights (no checkpoint was within bounds)'}")
    return Trained(result, seconds, restored, trainer.state.global_step)


def restore_best(model, run: RunDir, guard) -> str | None:
    """After a drift stop: load the weights of the best checkpoint (newest complete one saved while within
    bounds) into `model`, so the stage exports those rather than the drifted ones. Returns its path."""
    ckpt = best_checkpoint(run.checkpoints, guard.last_ok_step, CKPT_MARKER)
    if ckpt is None:
        return None
    if hasattr(model, "peft_config"):
        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
    else:
        state = load_file(str(ckpt / "model.safetensors"))
        model.load_state_dict(state, strict=False)
    return str(ckpt)
