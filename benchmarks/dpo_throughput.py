"""Claim: `rlhf dpo` with its shipped defaults trains >= 1.3x the tokens/s of a plain TRL DPOTrainer script
with TRL's own defaults on the same data; how much of this machine's matmul peak either side reaches; and
that LoRA-DPO needs little more memory than LoRA-SFT.

    .venv/bin/python benchmarks/dpo_throughput.py [--steps 30] [--rounds 2]
    DPO_BENCH_RLHF_OVERRIDES="drift.every_steps=null" .venv/bin/python benchmarks/dpo_throughput.py

Both sides: SmolLM2-135M-Instruct (the built-in alias, converted once into ~/.cache/rlhf), LoRA r=16 /
alpha 32 / dropout 0.05 on all linear layers, the demo preferences as chat rows (rlhf: `demo:preferences`
through the stage; raw: rlhf/demo/preferences.jsonl read with `datasets` and wrapped in chat messages, as a
plain script would), sigmoid loss, beta 0.1, batch 4 pairs, lr 5e-5, the same seed and steps. The default
30 steps are one epoch of the 120 pairs, so both sides train on exactly the same pairs (in their own order).
  rlhf    configs/dpo.yaml as shipped, malloc tuned as the `rlhf` command does — precision rlhf's choice (bf16 mixed precision where bf16 is native,
          the LoRA base then held in bf16; fp32 elsewhere), no gradient checkpointing, padding-free batches
          (rlhf.train.packing; random batches), max_length 512 — except what the raw script does not do: no checkpoint saves, no drift
          probes (`drift.every_steps=0`: they sample `drift.num_prompts` prompts at the start and at each
          save, ≈ one DPO step each; DPO_BENCH_RLHF_OVERRIDES="drift.every_steps=null" puts them back, their
          time inside train() is then reported as drift_probe_s).
  raw_trl TRL's defaults for everything else: bf16 mixed precision over fp32 weights (TRL defaults bf16 to
          true, even on a CPU without native bf16), gradient checkpointing, random batches, max_length 1024.
The reference is the policy with the adapter disabled on both sides (TRL's PEFT path, no copy).

Measurement: each side runs in a fresh process, alternated round by round (the CPU may be shared, so
single timings are noisy; medians are compared). Both sides use the same thin DPOTrainer subclass that
only times train() and counts, in compute_loss, the tokens of every training batch (chosen + rejected
sequences); rlhf's stage picks it up because it imports trl.DPOTrainer at call time. Throughput =
non-padding tokens / wall time of train(). Over a whole epoch both sides' token counts agree (checked).
The last line is `ratio rlhf/raw_trl <x>` (goal >= 1.3).

FLOPs (analytic, per run). L layers, width d, Nb = frozen decoder matmul weights (q,k,v,o,gate,up,down:
106.2M for SmolLM2), Nl = LoRA weights (4.9M), Nh = d * vocab (the tied LM head, 28.3M); T = tokens,
H = positions put through the LM head, S2 = sum over sequences of length^2:
    layer forward      F  = 2*(Nb+Nl)*T + 4*L*d*S2        (matmuls + attention QK^T and AV, full square)
    policy forward        F + 2*Nh*H
    reference forward     2*Nb*T + 4*L*d*S2 + 2*Nh*H      (adapter disabled, no grad, no checkpointing)
    recomputation         F                               (gradient checkpointing re-runs each layer)
    backward              2*(Nb+Nl)*T + 8*L*d*S2 + 2*Nh*H (activation grads through every frozen weight:
                          the first LoRA sits in layer 0)  + 2*Nl*T (weight grads: LoRA only)
so about 8*N FLOPs per token for N = 135M (three forwards and a backward that skips frozen weight grads;
without checkpointing 6*N), not the full fine-tune's 6*N (8*N with checkpointing).
  executed: T, S2 over the padded batch (over the tokens for rlhf's padding-free batches: its forwards are
            counted through rlhf.train.packing.pack), H = every position for raw TRL (its fused LM head scores all
            positions when Triton is absent, prompt and padding included), the completion tokens for rlhf
            (its CPU LM head, `rlhf.train.lm_head`, scores labeled positions only). This is the work the CPU does; checked against
            torch.utils.flop_counter on one step: the matmul part matches within 0.1% (attention, ~3%,
            runs in an op the counter does not see). Utilisation below uses it.
  useful:   T, S2 over non-padding tokens, H = completion tokens only (MFU convention: padding and
            prompt-position head work count as waste); printed for reference.
Not counted: norms, activations, softmax, RoPE, the (LoRA-only) optimizer: a few per cent at most.
Achieved FLOP/s = FLOPs / train() seconds, against the measured matmul peak of the precision each side
trained in (best of timed torch.matmul calls: 2048^3 fp32, 1024^3 bf16). Both peaks are printed, and whether
bf16 is native or emulated is read off them (AVX2-only CPUs: ~1 GFLOP/s bf16 vs ~190 fp32; AVX512-BF16:
~665-920 vs ~128-207).

Memory: peak RSS (resource.getrusage ru_maxrss, at the end of train(): loading and training, not the final
save) of each DPO side, and of a LoRA-SFT run through `rlhf sft` (configs/sft.yaml as shipped: same model,
LoRA, precision rule and gradient checkpointing as configs/dpo.yaml) in another fresh process, on the same
sequences (prompt + chosen and prompt + rejected of the same pairs, completion-only loss), batch 8 = the 4
chosen + 4 rejected sequences DPO puts through the network per step, the same steps. Prints `peak RSS LoRA-DPO / LoRA-SFT <x>`
(goal <= 1.15) for the two rlhf stages.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import alternate
from flops import count_packing, flop_result, instrumented, utilisation

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "rlhf" / "demo" / "preferences.jsonl"
SETTINGS = dict(batch=4, lr=5e-5, r=16, alpha=32, dropout=0.05, beta=0.1, loss="sigmoid", seed=42)


def bf16_native() -> bool:
    from rlhf.train import fast_bf16

    return fast_bf16()


COMMON_TRAINER = ["trainer.save_strategy=no", "trainer.logging_steps=1"]


def dpo_result(stats: dict, steps: int, drift_probe_s: float | None = None) -> dict:
    res = flop_result(stats, steps, reference=True)
    if drift_probe_s is not None:
        res["drift_probe_s"] = round(drift_probe_s, 2)
    return res


def rlhf_config(out: str, name: str, steps: int, extra: list[str]):
    """configs/dpo.yaml as shipped with the shared settings (module docstring), `extra` overrides last."""
    from rlhf.config import load_config
    from rlhf.stages.dpo import DPOStageConfig

    s = SETTINGS
    return load_config(
        DPOStageConfig,
        ROOT / "configs" / "dpo.yaml",
        [
            f"run.output_root={out}",
            f"run.name={name}",
            "data.train=demo:preferences",
            "data.eval_fraction=0",
            f"model.lora.r={s['r']}",
            f"model.lora.alpha={s['alpha']}",
            f"model.lora.dropout={s['dropout']}",
            "model.lora.target_modules=all-linear",
            f"trainer.max_steps={steps}",
            f"trainer.per_device_train_batch_size={s['batch']}",
            f"trainer.learning_rate={s['lr']}",
            f"trainer.beta={s['beta']}",
            f"trainer.loss_type={s['loss']}",
            *COMMON_TRAINER,
            f"run.seed={s['seed']}",
            *extra,
        ],
    )


def run_rlhf(steps: int, out: str) -> dict:
    from rlhf.allocator import tune_malloc

    tune_malloc()  # as the `rlhf` command does (rlhf.allocator); the raw script keeps glibc's defaults
    from rlhf.stages import dpo as stage
    from rlhf.stages.dpo import run

    extra = os.environ.get("DPO_BENCH_RLHF_OVERRIDES", "drift.every_steps=0").split()
    cfg = rlhf_config(out, "bench", steps, extra)
    count_packing()
    cls = instrumented(stage.DPOTrainer)
    stage.DPOTrainer = cls  # the name the stage module calls
    probe = {"seconds": 0.0}
    sample_drift = getattr(stage, "sample_drift", None)
    if sample_drift is not None:  # time the drift probes too

        def timed_sample_drift(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return sample_drift(*args, **kwargs)
            finally:
                probe["seconds"] += time.perf_counter() - t0

        stage.sample_drift = timed_sample_drift
    run(cfg)
    return dpo_result(cls.stats, steps, probe["seconds"])


def run_raw(steps: int, out: str) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rlhf.models import SMOLLM2, resolve_model_path

    s = SETTINGS
    path = resolve_model_path(SMOLLM2)  # the converted checkpoint; a raw script would point at it too
    ds = load_dataset("json", data_files=str(DEMO), split="train")
    ds = ds.map(
        lambda r: {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        },
        remove_columns=ds.column_names,
    )
    args = DPOConfig(  # TRL's defaults, but for the settings both sides share
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=s["batch"],
        learning_rate=s["lr"],
        beta=s["beta"],
        loss_type=s["loss"],
        save_strategy="no",
        logging_steps=1,
        use_cpu=not torch.cuda.is_available(),
        seed=s["seed"],
        report_to="none",
        dataloader_num_workers=0,
    )
    cls = instrumented(DPOTrainer)
    trainer = cls(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        args=args,
        train_dataset=ds,
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
    return dpo_result(cls.stats, steps)


def run_sft(steps: int, out: str) -> dict:
    """LoRA-SFT through `rlhf sft` on the sequences DPO trains on (batch 2x: chosen + rejected)."""
    from rlhf.allocator import tune_malloc
    from rlhf.config import load_config

    tune_malloc()
    from rlhf.models import SMOLLM2, load_tokenizer
    from rlhf.preferences import import_preferences
    from rlhf.stages import sft as stage
    from rlhf.stages.sft import SFTStageConfig, run

    s = SETTINGS
    rows, _ = import_preferences("demo:preferences", max_length=512, tokenizer=load_tokenizer(SMOLLM2))
    data = Path(out) / "sft_rows.jsonl"
    with data.open("w", encoding="utf-8") as f:
        for r in rows:
            for side in ("chosen", "rejected"):
                row = {"id": f"{r['id']}-{side}", "prompt": r["prompt"], "completion": r[side]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    cfg = load_config(
        SFTStageConfig,
        ROOT / "configs" / "sft.yaml",
        [
            f"run.output_root={out}",
            "run.name=bench-sft",
            f"data.train={data}",
            "data.eval_fraction=0",
            f"model.lora.r={s['r']}",
            f"model.lora.alpha={s['alpha']}",
            f"model.lora.dropout={s['dropout']}",
            f"trainer.max_steps={steps}",
            f"trainer.per_device_train_batch_size={2 * s['batch']}",
            f"trainer.learning_rate={s['lr']}",
            *COMMON_TRAINER,
            f"run.seed={s['seed']}",
        ],
    )
    cls = instrumented(stage.SFTTrainer)
    stage.SFTTrainer = cls  # the name the stage module calls
    run(cfg)
    st = cls.stats
    return {"tokens": st["tokens"], "seconds": st["seconds"], "peak_rss_mb": st["peak_rss_mb"]}


def report(results: dict, steps: int) -> None:

    ours, raw = results["rlhf"], results["raw"]
    if {r["tokens"] for r in ours} != {r["tokens"] for r in raw}:
        print(
            f"note: token counts differ (fewer steps than an epoch: each side's own batches): rlhf "
            f"{[r['tokens'] for r in ours]}, raw {[r['tokens'] for r in raw]}"
        )
    for side, r0 in (("rlhf", ours[0]), ("raw_trl", raw[0])):
        print(
            f"{side} per run ({steps} steps): {r0['tokens']} non-padding tokens of {r0['padded']} positions "
            f"({100 * (1 - r0['tokens'] / r0['padded']):.0f}% padding), gradient checkpointing "
            f"{'on' if r0['checkpointing'] else 'off'}; LoRA-DPO estimate {r0['flops'] / 1e12:.3f} TFLOP executed "
            f"({r0['flops'] / r0['tokens'] / 1e6:.0f} MFLOP per non-padding token), "
            f"{r0['useful_flops'] / 1e12:.3f} TFLOP useful",
            flush=True,
        )
    probes = [r["drift_probe_s"] for r in ours if "drift_probe_s" in r]
    if probes:
        share = statistics.median(r["drift_probe_s"] / r["seconds"] for r in ours)
        net = statistics.median(r["tokens"] / (r["seconds"] - r["drift_probe_s"]) for r in ours)
        print(
            f"rlhf drift-guard probes inside train(): median {statistics.median(probes):.1f} s "
            f"({100 * share:.0f}% of train()); rlhf tokens/s without them {net:.1f}"
        )
    utilisation({"rlhf": ours, "raw_trl": raw}, {"rlhf": "rlhf", "raw_trl": "raw_trl"})
    sft = alternate.run_side(__file__, "sft", steps)
    dpo_rss = statistics.median(r["peak_rss_mb"] for r in ours)
    raw_rss = statistics.median(r["peak_rss_mb"] for r in raw)
    print(
        f"LoRA-SFT (rlhf sft, batch {2 * SETTINGS['batch']} sequences from the same pairs): "
        f"tokens={sft['tokens']} seconds={sft['seconds']:.2f} peak_rss_mb={sft['peak_rss_mb']:.0f}"
    )
    print(
        f"peak RSS MB (median): rlhf dpo {dpo_rss:.0f}, raw_trl dpo {raw_rss:.0f}, rlhf sft "
        f"{sft['peak_rss_mb']:.0f}; raw_trl-DPO / LoRA-SFT {raw_rss / sft['peak_rss_mb']:.2f}"
    )
    print(f"peak RSS LoRA-DPO / LoRA-SFT {dpo_rss / sft['peak_rss_mb']:.2f}", flush=True)


def main() -> None:
    from rlhf.models import SMOLLM2, resolve_model_path

    resolve_model_path(SMOLLM2)  # convert once, outside the timings
    extra = os.environ.get("DPO_BENCH_RLHF_OVERRIDES", "")
    alternate.main(
        __file__,
        run_rlhf,
        run_raw,
        default_steps=30,
        describe=f"LoRA-DPO {SETTINGS}; rlhf: configs/dpo.yaml as shipped (bf16 native here: {bf16_native()}); "
        "raw_trl: TRL's defaults" + (f"; rlhf overrides: {extra}" if extra else ""),
        extra_sides={"sft": run_sft},
        report=report,
    )


if __name__ == "__main__":
    main()
