"""Sampling a policy while it trains, on the configured engine (`generation.backend`): PPO rollouts, GRPO /
RLOO completions and the drift probes of DPO and KTO.

- hf: the model in this process as it is (its precision), by rlhf's decoder (`rlhf.generation.sample`).
- vllm: the policy as it is now is written under `scratch` and sampled by the engine
  (`rlhf.engine.Engines`): a LoRA policy as its adapter (a few MB, loaded at run time under its content
  name, the previous one unloaded and deleted) or merged into full weights (`generation.training_lora`;
  auto: merged without CUDA, where vLLM's LoRA kernels are slow); full weights are reloaded into the
  running engine. One engine start per run (per loop inside `shared_engines()`), on the policy's
  base. The engine samples in the generation precision (bf16 where native); every log-prob the update uses
  (PPO's old log-probs, the KL to the reference, GRPO's) is computed by the model being trained, so the
  algorithm is the same whichever engine sampled (as in OpenRLHF and TRL's vLLM modes).
- The engine's answers (token ids, EOS included) are laid out as the hf path's `Rollout`
  (`rollout_from_samples`: left-padded prompt, then the response padded on the right).
- Seeds: each vllm request is seeded from (run seed, key, row), so a rerun draws the same rollouts; hf
  draws from torch's global generator (seeded by the run).
- One process: the engine is reached by this process alone (several processes would each write and load
  the policy; on GPUs TRL's own `trainer.use_vllm` modes serve GRPO/RLOO across ranks).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from rlhf.config import ConfigError
from rlhf.engine import Engines, EngineSettings
from rlhf.generation import Rollout, Sample, SamplingSettings, left_pad, row_seed, sample
from rlhf.models import inference_precision, merged_weights


def rollout_from_samples(prompts: list[list[int]], samples: list[list[Sample]], pad: int) -> Rollout:
    """The engine's answers as a `Rollout`: rows prompt-major (prompt i's samples are rows i*n .. i*n+n-1),
    each response its sampled ids (the EOS included when it ended), padded on the right. Pure."""
    n = len(samples[0]) if samples else 0
    if n == 0 or any(len(row) != n for row in samples) or len(samples) != len(prompts):
        raise ValueError("rollout_from_samples needs the same number of samples for every prompt")
    ids, mask = left_pad(prompts, pad)
    ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    flat = [s for row in samples for s in row]
    width = max(1, max(len(s.ids) for s in flat))
    resp = torch.full((len(flat), width), pad, dtype=ids.dtype)
    rmask = torch.zeros(len(flat), width)
    for r, s in enumerate(flat):
        resp[r, : len(s.ids)] = torch.tensor(s.ids, dtype=ids.dtype)
        rmask[r, : len(s.ids)] = 1.0
    return Rollout(
        input_ids=torch.cat([ids, resp], 1),
        attention_mask=torch.cat([mask, rmask.long()], 1),
        prompt_width=ids.shape[1],
        response_mask=rmask,
        ended=torch.tensor([s.ended for s in flat]),
    )


class PolicySampler:
    """Samples the policy being trained on `settings.backend`; `close()` stops an engine it started and
    removes what it wrote."""

    def __init__(
        self,
        settings: EngineSettings,
        *,
        seed: int,
        scratch: Path,
        precision: str = "auto",
        processes: int = 1,
        log_dir: Path | None = None,
    ):
        self.settings, self.seed, self.scratch = settings, seed, Path(scratch)
        self.pool: Engines | None = None
        self.written: list[Path] = []  # policy directories written for the engine, oldest first
        self.calls = 0
        if settings.backend == "vllm":
            if processes > 1:
                raise ConfigError(
                    f"generation.backend=vllm samples the training policy from one process, and this run has "
                    f"{processes}. Run it in one process, or use generation.backend=hf (GRPO/RLOO on GPUs: "
                    "TRL's own vLLM modes, trainer.use_vllm=true)."
                )
            self.pool = Engines(settings, inference_precision(precision).name, seed, log_dir)
        choice, given = settings.training_lora, settings.backend == "vllm" and bool(settings.url)
        if given and choice == "merged":
            raise ConfigError(
                f"generation.training_lora=merged with generation.url={settings.url}: a merged policy is new base "
                "weights each step, and an engine rlhf did not start is never reloaded. Set "
                "generation.training_lora=adapter (or auto: the adapter is loaded there each step), or "
                "generation.url=null to let the run start its own engine."
            )
        # auto: merged without CUDA (vLLM's CPU LoRA kernels are slow), except on a given engine (fixed base)
        self.merge_lora = choice == "merged" or (
            choice == "auto" and not torch.cuda.is_available() and not given
        )

    @property
    def backend(self) -> str:
        return self.settings.backend

    def sample(
        self,
        model,
        tokenizer,
        prompts: list[list[int]],
        settings: SamplingSettings,
        *,
        key: str,
        n: int = 1,
        synced_gpus: bool = False,
    ) -> Rollout:
        """`n` responses per prompt (rows prompt-major) from `model` as it is now. `key` names the call
        (e.g. "ppo-step-3"): with vllm, row r's seed is `row_seed(seed, key, r)`."""
        if self.pool is None:
            return sample(model, tokenizer, prompts, settings, n=n, synced_gpus=synced_gpus)
        if self.settings.url and not hasattr(model, "peft_config"):
            raise ConfigError(
                f"generation.url={self.settings.url}: that engine serves fixed base weights, and a full "
                "fine-tune's weights change every step. Train with LoRA (model.lora: the adapter is loaded "
                "there each step), or set generation.url=null to let the run start its own engine, which "
                "reloads the weights each step."
            )
        policy = self._write(model, tokenizer)
        seeds = [row_seed(self.seed, key, i) for i in range(len(prompts))]
        out = self.pool.generate(str(policy), None, tokenizer, prompts, settings, n=n, seeds=seeds)
        self._forget_old()
        return rollout_from_samples(prompts, out.samples, tokenizer.pad_token_id)

    def _write(self, model, tokenizer) -> Path:
        """The policy as it is now into a new directory: a LoRA policy's adapter, or its merged weights
        (`generation.training_lora`), a full model's weights — full weights in the engine's precision
        (half the bytes in bf16; the engine would cast them anyway) — with the tokenizer, so the engine
        can tell it is the same architecture."""
        self.calls += 1
        out = self.scratch / f"policy-{self.calls}"
        if out.exists():
            shutil.rmtree(out)
        dtype = torch.bfloat16 if self.pool.precision == "bfloat16" else None
        if hasattr(model, "peft_config") and not self.merge_lora:
            model.save_pretrained(out)
        elif hasattr(model, "peft_config"):
            model.get_base_model().save_pretrained(out, state_dict=merged_weights(model, dtype))
        else:
            state = {
                k: v.to(dtype) if dtype and v.is_floating_point() else v
                for k, v in model.state_dict().items()
            }
            model.save_pretrained(out, state_dict=state)
        tokenizer.save_pretrained(out)
        self.written.append(out)
        return out

    def _forget_old(self) -> None:
        """Unload and delete the directories before the newest, but the first: an engine started on a full
        fine-tune was started from it (vLLM reads its tokenizer there)."""
        while len(self.written) > 2:
            old = self.written.pop(1)
            self.pool.release(str(old))
            shutil.rmtree(old, ignore_errors=True)

    @property
    def stats(self) -> dict:
        """Engine starts and weight reloads, with their seconds (vllm), for the run's manifest."""
        if self.pool is None:
            return {"backend": "hf"}
        return {"backend": "vllm", **self.pool.summary(), "policies_written": self.calls}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        for d in self.written:
            shutil.rmtree(d, ignore_errors=True)
        self.written.clear()
