"""Claim: `rlhf kto` trains as fast as a plain TRL KTOTrainer script doing the same work.

    .venv/bin/python benchmarks/kto_throughput.py [--steps 6] [--rounds 2]
    KTO_BENCH_RLHF_OVERRIDES="drift.every_steps=null" .venv/bin/python benchmarks/kto_throughput.py

Both sides: SmolLM2-135M-Instruct (the built-in alias, converted once into ~/.cache/rlhf), LoRA r=16 /
alpha 32 / dropout 0.05 on all linear layers, the demo preferences as unpaired chat rows — each pair two
rows, the chosen answer desirable and the rejected one undesirable, shuffled once with the seed (rlhf:
`demo:preferences` through the stage, which does exactly that; raw: rlhf/demo/preferences.jsonl read with
`datasets`, unpaired and shuffled the same way, as a plain script would) — the KTO loss, beta 0.1, batch 4
rows, max_length 512, desirable / undesirable weights 1 / 1 (the demo is balanced: rlhf's rule gives 1 / 1
too), lr 5e-5 linear / no warmup, the precision rlhf picks on this machine (fp32, or bf16 mixed precision
where the CPU/GPU has native bf16), gradient checkpointing on, the same seed and steps. The reference is the
policy with the adapter disabled on both sides (TRL's PEFT path, no copy). The rlhf side runs the stage as
configs/kto.yaml ships it except for the drift probes (`drift.every_steps=0`, work the raw script does not
do); KTO_BENCH_RLHF_OVERRIDES (space-separated key=value) changes the rlhf side.

Measurement (benchmarks/alternate.py): each side runs in a fresh process, alternated round by round (the CPU
may be shared, so single timings are noisy; medians are compared). Both sides use the same thin KTOTrainer
subclass that only times train() and counts, in compute_loss, the non-padding tokens of every training batch
(the rated sequences; the KL term's mismatched sequences are extra work on both sides, not in the tokens).
Throughput = those tokens / wall time of train(). Then each side's achieved FLOP/s against this machine's
measured matmul peak of its precision (`benchmarks/flops.py`: the rated batch as DPO's — policy forward,
recomputation, backward, adapter-off reference forward — plus a policy and a reference forward over the KL
batch; executed counts padding and every LM-head position the side computes, useful neither). The two sides see the same batches, so their token counts
must agree (checked). The last line is `ratio rlhf/raw_trl <x>` (goal >= 1.0 within the noise of a shared
CPU). The two sides run TRL's KTO code on the same batches; rlhf's differ in what rlhf adds to every TRL
stage on a CPU (its LM head, rlhf.train.lm_head) and its padding-free batches (rlhf.train.packing), so the
ratio measures those gains net of rlhf's overhead.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import alternate
import flops

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "rlhf" / "demo" / "preferences.jsonl"
SETTINGS = dict(batch=4, max_length=512, lr=5e-5, r=16, alpha=32, dropout=0.05, beta=0.1, seed=42)


def bf16_native() -> bool:
    from rlhf.train import fast_bf16

    return fast_bf16()


def instrumented(base):
    """`flops.instrumented` (train() timed, every training batch counted: the rated sequences and the KL
    term's mismatched ones) plus the desirable / undesirable weights the trainer used."""
    counted = flops.instrumented(base)

    class Instrumented(counted):
        def train(self, *args, **kwargs):
            out = super().train(*args, **kwargs)
            counted.stats["weights"] = f"{self.desirable_weight:g}/{self.undesirable_weight:g}"
            return out

    return Instrumented


def result(stats: dict, steps: int) -> dict:
    return {**flops.flop_result(stats, steps, reference=True), "weights": stats["weights"]}


def run_rlhf(steps: int, out: str) -> dict:
    from rlhf.config import load_config
    from rlhf.stages import kto as stage

    s = SETTINGS
    cfg = load_config(
        stage.KTOStageConfig,
        ROOT / "configs" / "kto.yaml",
        [
            f"run.output_root={out}",
            "run.name=bench",
            "data.train=demo:preferences",
            "data.eval_fraction=0",
            f"data.max_length={s['max_length']}",
            f"model.lora.r={s['r']}",
            f"model.lora.alpha={s['alpha']}",
            f"model.lora.dropout={s['dropout']}",
            "model.lora.target_modules=all-linear",
            "model.dtype=float32",
            f"trainer.max_steps={steps}",
            f"trainer.per_device_train_batch_size={s['batch']}",
            f"trainer.learning_rate={s['lr']}",
            f"trainer.beta={s['beta']}",
            "trainer.loss_type=kto",
            "trainer.save_strategy=no",
            "trainer.logging_steps=1",
            "trainer.gradient_checkpointing=true",
            "trainer.warmup_steps=0",
            "trainer.lr_scheduler_type=linear",
            "trainer.gradient_accumulation_steps=1",
            f"trainer.bf16={str(bf16_native()).lower()}",
            f"run.seed={s['seed']}",
            *os.environ.get("KTO_BENCH_RLHF_OVERRIDES", "drift.every_steps=0").split(),
        ],
    )
    flops.count_packing()
    cls = instrumented(stage.KTOTrainer)
    stage.KTOTrainer = cls  # the name the stage module calls
    stage.run(cfg)
    return result(cls.stats, steps)


def run_raw(steps: int, out: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    from rlhf.models import SMOLLM2, resolve_model_path

    s = SETTINGS
    path = resolve_model_path(SMOLLM2)  # the converted checkpoint; a raw script would point at it too
    rows = []
    for line in DEMO.read_text().splitlines():
        r = json.loads(line)
        prompt = [{"role": "user", "content": r["prompt"]}]
        for side in ("chosen", "rejected"):
            answer = [{"role": "assistant", "content": r[side]}]
            rows.append({"prompt": prompt, "completion": answer, "label": side == "chosen"})
    random.Random(s["seed"]).shuffle(rows)  # KTO reads rows in order: mix the labels in every batch
    args = KTOConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=s["batch"],
        gradient_accumulation_steps=1,
        learning_rate=s["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        beta=s["beta"],
        loss_type="kto",
        max_length=s["max_length"],
        save_strategy="no",
        logging_steps=1,
        bf16=bf16_native(),
        use_cpu=True,
        gradient_checkpointing=True,
        seed=s["seed"],
        report_to="none",
        dataloader_num_workers=0,
    )
    cls = instrumented(KTOTrainer)
    trainer = cls(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(path),
        peft_config=LoraConfig(
            r=s["r"],
            lora_alpha=s["alpha"],
            lora_dropout=s["dropout"],
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    trainer.train()
    return result(cls.stats, steps)


def report(results: dict, steps: int) -> None:
    ours, raw = results["rlhf"], results["raw"]
    if {r["tokens"] for r in ours} != {r["tokens"] for r in raw}:
        print(
            f"WARNING: token counts differ: rlhf {[r['tokens'] for r in ours]}, raw {[r['tokens'] for r in raw]}"
        )
    r0 = raw[0]
    print(
        f"per run ({steps} steps): {r0['tokens']} non-padding tokens of {r0['padded']} padded; weights "
        f"desirable/undesirable rlhf {ours[0]['weights']}, raw {r0['weights']}",
        flush=True,
    )
    flops.utilisation({"rlhf": ours, "raw_trl": raw}, {"rlhf": "rlhf", "raw_trl": "raw_trl"})


def main() -> None:
    from rlhf.models import SMOLLM2, resolve_model_path

    resolve_model_path(SMOLLM2)  # convert once, outside the timings
    extra = os.environ.get("KTO_BENCH_RLHF_OVERRIDES", "")
    alternate.main(
        __file__,
        run_rlhf,
        run_raw,
        default_steps=6,
        describe=f"LoRA-KTO {SETTINGS}, {'bf16 autocast' if bf16_native() else 'fp32'}, gradient checkpointing"
        + (f"; rlhf overrides: {extra}" if extra else ""),
        report=report,
    )


if __name__ == "__main__":
    main()
