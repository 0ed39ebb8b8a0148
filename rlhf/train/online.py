"""TRL's GRPO / RLOO trainers sampling their completions through rlhf's engine (`generation.backend`).

With `generation.backend: vllm` the trainer's generation step (`_generate_single_turn`, TRL 1.16) asks a
`PolicySampler` instead of `model.generate`: the policy as it is at that step (its LoRA adapter, or full
weights) goes to the vLLM engine, the completions (token ids, EOS included, as TRL's own path keeps them)
come back, and TRL computes every log-prob the loss uses with the model it trains. TRL's own vLLM modes
(`trainer.use_vllm`: colocated in this process, or `trl vllm-serve` with NCCL weight sync, for GPUs) are
left as they are; the two are not combined. Sampling settings come from the trainer section
(max_completion_length, temperature, top_p, top_k, repetition_penalty); min_p and generation_kwargs have no
counterpart on rlhf's engine and are refused with it.
"""

from __future__ import annotations

from rlhf.config import ConfigError
from rlhf.generation import SamplingSettings
from rlhf.rollouts import PolicySampler


def engine_sampling(args, precision: str) -> SamplingSettings:
    """The trainer section's sampling settings as rlhf's, or a ConfigError naming what has no counterpart."""
    if getattr(args, "use_vllm", False):
        raise ConfigError(
            "generation.backend=vllm and trainer.use_vllm=true both ask for a vLLM engine: keep one (TRL's own "
            "modes need vLLM in this environment; generation.backend=vllm runs it in its own)."
        )
    for key in ("min_p", "generation_kwargs"):
        if getattr(args, key, None):
            raise ConfigError(
                f"trainer.{key} has no counterpart on rlhf's engine (generation.backend=vllm): remove it, or "
                "use generation.backend=hf."
            )
    return SamplingSettings(
        max_new_tokens=args.max_completion_length,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=max(0, args.top_k or 0),
        repetition_penalty=args.repetition_penalty,
        precision=precision,
    )


def engine_sampled(trainer_cls, sampler: PolicySampler, sampling: SamplingSettings, *, with_logprobs: bool):
    """`trainer_cls` whose completions come from `sampler`. `with_logprobs`: the trainer's generation step
    returns (completion ids, sampling log-probs) (GRPO) rather than the ids alone (RLOO); none are given
    (TRL then computes what it needs itself)."""

    class EngineSampled(trainer_cls):
        _engine_calls = 0

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, *args, **kwargs):
            if images is not None and any(img is not None for img in images):
                raise ConfigError(
                    "generation.backend=vllm samples text prompts only: use generation.backend=hf"
                )
            self._engine_calls += 1
            key = f"{type(self).__name__}-step-{self.state.global_step}-call-{self._engine_calls}"
            model = self.accelerator.unwrap_model(self.model)
            rollout = sampler.sample(model, self._tokenizer, [list(p) for p in prompt_ids], sampling, key=key)
            lengths = rollout.response_mask.sum(1).long().tolist()
            ids = [row[:n] for row, n in zip(rollout.responses.tolist(), lengths, strict=True)]
            return (ids, None) if with_logprobs else ids

    EngineSampled.__name__ = EngineSampled.__qualname__ = f"EngineSampled{trainer_cls.__name__}"
    return EngineSampled


def autocast_generation(trainer_cls):
    """`trainer_cls` whose own generation step (`model.generate`, TRL 1.16's `_generate_single_turn`) runs
    under the trainer's autocast, as its training forwards do. Needed where a LoRA base is held in bf16
    (`TRLStage.load_model`): peft's cast of each LoRA layer's input to the fp32 adapter is off there
    (`TRLStage.train`), and `generate` reaches the inner model past the autocast Accelerate wraps around the
    top-level forward."""

    class AutocastGeneration(trainer_cls):
        def _generate_single_turn(self, *args, **kwargs):
            with self.accelerator.autocast():
                return super()._generate_single_turn(*args, **kwargs)

    AutocastGeneration.__name__ = AutocastGeneration.__qualname__ = trainer_cls.__name__
    return AutocastGeneration
