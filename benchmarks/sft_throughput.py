"""Claim: `rlhf sft` trains as fast as a plain TRL SFTTrainer script with identical settings.

    .venv/bin/python benchmarks/sft_throughput.py [--steps 6] [--rounds 2]

Both sides: SmolLM2-135M-Instruct (the built-in alias, already converted), LoRA r=16 on all linear layers,
the demo SFT data as prompt/completion (loss on completions), batch 4, max_length 512, the precision rlhf
picks on this machine (fp32, or bf16 mixed precision where bf16 is native), the same seed; rlhf as
`configs/sft.yaml` ships (padding-free rows, no gradient checkpointing for SmolLM2, its LoRA base in bf16
where bf16 is native), raw TRL with gradient checkpointing and padded batches. Each side runs in
its own fresh process, alternated round by round; throughput = non-padding tokens of the training batches
(counted in compute_loss by the same thin trainer subclass on both sides, `flops.instrumented`) / wall time
of trainer.train(). Then this machine's matmul peaks and each side's achieved FLOP/s against the peak of the
precision it trained in (`benchmarks/flops.py`: LoRA-SFT = a forward, a recomputation under gradient
checkpointing and a backward without frozen-weight grads; executed = every position computed, the LM head
over all positions for raw TRL's torch fallback and over labeled positions for rlhf's CPU head; useful =
non-padding tokens and labeled head positions). Prints each measurement, then `ratio rlhf/raw_trl <x>`
(goal >= 0.95).
"""

from __future__ import annotations

from pathlib import Path

import alternate
from flops import flop_result, instrumented, utilisation

from rlhf.train import fast_bf16

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(batch=4, max_length=512, lr=2e-4, r=16, alpha=32, dropout=0.05, seed=42)


def run_rlhf(steps: int, out: str) -> dict:
    from rlhf.config import load_config
    from rlhf.stages.sft import SFTStageConfig, run

    s = SETTINGS
    cfg = load_config(
        SFTStageConfig,
        ROOT / "configs" / "sft.yaml",
        [
            f"run.output_root={out}",
            "run.name=bench",
            "data.eval_fraction=0",
            f"data.max_length={s['max_length']}",
            f"model.lora.r={s['r']}",
            f"model.lora.alpha={s['alpha']}",
            f"model.lora.dropout={s['dropout']}",
            f"trainer.max_steps={steps}",
            f"trainer.per_device_train_batch_size={s['batch']}",
            f"trainer.learning_rate={s['lr']}",
            "trainer.save_strategy=no",
            "trainer.logging_steps=1",
            f"trainer.bf16={str(fast_bf16()).lower()}",
            "trainer.warmup_steps=0",
            "trainer.lr_scheduler_type=linear",
            f"run.seed={s['seed']}",
        ],
    )
    from rlhf.stages import sft as stage

    cls = instrumented(stage.SFTTrainer)
    stage.SFTTrainer = cls  # the name the stage module calls
    run(cfg)
    return flop_result(cls.stats, steps, reference=False)


def run_raw(steps: int, out: str) -> dict:
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from rlhf.models import SMOLLM2, resolve_model_path

    s = SETTINGS
    path = resolve_model_path(SMOLLM2)  # the converted checkpoint; a raw script would point at it too
    ds = load_dataset("json", data_files=str(ROOT / "rlhf" / "demo" / "sft.jsonl"), split="train")
    ds = ds.map(
        lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
        remove_columns=ds.column_names,
    )
    tok = AutoTokenizer.from_pretrained(path)
    args = SFTConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=s["batch"],
        learning_rate=s["lr"],
        max_length=s["max_length"],
        save_strategy="no",
        logging_steps=1,
        bf16=fast_bf16(),
        use_cpu=True,
        gradient_checkpointing=True,
        seed=s["seed"],
        report_to="none",
        warmup_steps=0,
        lr_scheduler_type="linear",
        dataloader_num_workers=0,
    )
    cls = instrumented(SFTTrainer)
    trainer = cls(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=args,
        train_dataset=ds,
        processing_class=tok,
        peft_config=LoraConfig(
            r=s["r"],
            lora_alpha=s["alpha"],
            lora_dropout=s["dropout"],
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    trainer.train()
    return flop_result(cls.stats, steps, reference=False)


def main() -> None:
    from rlhf.models import SMOLLM2, resolve_model_path

    resolve_model_path(SMOLLM2)  # convert once, outside the timings
    alternate.main(
        __file__,
        run_rlhf,
        run_raw,
        default_steps=6,
        describe=f"settings: {SETTINGS}",
        report=lambda results, steps: utilisation(results, {"rlhf": "rlhf", "raw": "raw_trl"}),
    )


if __name__ == "__main__":
    main()
