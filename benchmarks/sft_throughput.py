"""Claim: `rlhf sft` trains as fast as a plain TRL SFTTrainer script with identical settings.

    .venv/bin/python benchmarks/sft_throughput.py [--steps 6] [--rounds 2]

Both sides: SmolLM2-135M-Instruct (the built-in alias, already converted), LoRA r=16 on all linear layers,
the demo SFT data as prompt/completion (loss on completions), batch 4, max_length 512, the precision rlhf
picks on this machine (fp32, or bf16 mixed precision where bf16 is native), gradient checkpointing, the
same seed. Each side runs in
its own fresh process, alternated round by round; throughput = non-padding tokens seen by the trainer /
wall time of trainer.train(). Prints each measurement, then `ratio rlhf/raw_trl <x>` (goal >= 0.95).
"""

from __future__ import annotations

from pathlib import Path

import alternate

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
    result = run(cfg).read_manifest()["result"]
    return {"tokens": result["train_tokens"], "seconds": result["train_seconds"]}


def run_raw(steps: int, out: str) -> dict:
    import time

    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
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
    logs: dict = {}

    class Keep(TrainerCallback):
        def on_log(self, args, state, control, logs_=None, **kw):
            logs.update(kw.get("logs") or logs_ or {})

    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=args,
        train_dataset=ds,
        processing_class=tok,
        callbacks=[Keep()],
        peft_config=LoraConfig(
            r=s["r"],
            lora_alpha=s["alpha"],
            lora_dropout=s["dropout"],
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    t0 = time.perf_counter()
    trainer.train()
    return {"tokens": int(logs["num_tokens"]), "seconds": time.perf_counter() - t0}


def main() -> None:
    from rlhf.models import SMOLLM2, resolve_model_path

    resolve_model_path(SMOLLM2)  # convert once, outside the timings
    alternate.main(__file__, run_rlhf, run_raw, default_steps=6, describe=f"settings: {SETTINGS}")


if __name__ == "__main__":
    main()
