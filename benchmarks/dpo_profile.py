"""Claim (the evidence behind issue 25's open item): where a shipped-defaults `rlhf dpo` step spends its time
on this CPU, and the share of the matmul peak it could reach if every op but the matmuls took no time.

    .venv/bin/python benchmarks/dpo_profile.py [--steps 6] [--warmup 2] [--table N] [key=value ...]

Runs the rlhf side of benchmarks/dpo_throughput.py (configs/dpo.yaml as shipped, the demo preferences,
LoRA r=16 / dropout 0.05 on all linear layers, batch 4 pairs, no checkpoint saves, no drift probes) in this
process: `--warmup` steps, then `--steps` steps timed plainly (wall clock, minor page faults), then `--steps`
more under torch.profiler, whose ops' own (self) CPU time is sorted into:
  base matmul   aten::mm / addmm of the frozen decoder weights (policy and reference forwards, backward)
  LoRA matmul   the same ops with a dimension equal to the LoRA rank (A, B and their gradients)
  LM head       the same ops with a dimension equal to the vocabulary (rlhf.train.lm_head's blocks)
  attention     per-sequence attention: its batched matmuls, softmax and causal masks (fwd and bwd)
  optimizer     everything under the optimizer's step (AdamW over the LoRA weights)
  other ops     elementwise ops, norms, activations, RoPE, casts, copies, reductions, dropout, the LM
                head's softmax arithmetic
  outside ops   wall time of the profiled steps not inside any op (Python, collation, the Trainer)
Each matmul class also gets its FLOPs from the recorded input shapes (2*M*K*N), so its in-place rate.
The profiler slows a step (~20 % on a 2-core CPU: printed) and inflates the small ops most, so the shares
are approximate; the matmul times are barely touched.

Then, against the measured matmul peak of the precision trained in (flops.matmul_peak):
  achieved      useful FLOP/s of the plainly timed steps (flops.py's convention, as dpo_throughput.py)
  matmuls only  useful FLOPs / the profiled time of the three matmul classes: the share reachable if every
                other op, attention included, cost nothing, at the matmuls' measured in-place rates
  at one rate   the same with the LoRA matmuls as fast as the base's (a fused LoRA): an upper bound
The last line is `ratio matmul_time/step_time <x>` (the matmul classes' share of a profiled step).
"""

from __future__ import annotations

import argparse
import collections
import resource
import tempfile
import time

import dpo_throughput as bench
import torch
from flops import count_packing, instrumented, lora_flops, matmul_peak, precision_line
from transformers import TrainerCallback

MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
ATTENTION = ("aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::_softmax_backward_data", "aten::triu")


def matmul_flops(name: str, shapes: list) -> float:
    """2*M*K*N of one matmul op from its recorded input shapes (addmm/baddbmm carry the bias first)."""
    a, b = (shapes[1], shapes[2]) if name in ("aten::addmm", "aten::baddbmm") else (shapes[0], shapes[1])
    batch = a[0] if len(a) == 3 else 1
    return 2.0 * batch * a[-2] * a[-1] * b[-1]


def classify(name: str, shapes: list, rank: int, vocab: int) -> str:
    if name in ATTENTION or "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    if name in MATMULS:
        dims = {d for s in shapes if s for d in s}
        if vocab in dims:
            return "LM head"
        return "LoRA matmul" if rank in dims else "base matmul"
    return "other ops"


class Windows(TrainerCallback):
    """Two windows of `steps` optimizer steps after `warmup`: the first timed plainly, the second under
    torch.profiler. Each window keeps its wall time, minor page faults and the batch counts the instrumented
    trainer added in it (`stats`: flops.instrumented's dict, cumulative)."""

    def __init__(self, warmup: int, steps: int, stats: dict):
        self.starts = {"plain": warmup, "profiled": warmup + steps}
        self.steps, self.stats = steps, stats
        self.prof = None
        self.open: dict = {}
        self.result: dict[str, dict] = {}

    def _snapshot(self) -> dict:
        counts = {k: self.stats.get(k, 0) for k in ("tokens", "completion", "s2")}
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        return {"t": time.perf_counter(), "faults": faults, **counts}

    def on_step_begin(self, args, state, control, **kwargs):
        for name, start in self.starts.items():
            if state.global_step == start:
                if name == "profiled":
                    self.prof = torch.profiler.profile(
                        activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True
                    )
                    self.prof.__enter__()
                self.open[name] = self._snapshot()

    def on_step_end(self, args, state, control, **kwargs):
        for name, start in self.starts.items():
            if state.global_step == start + self.steps and name in self.open:
                end, begin = self._snapshot(), self.open.pop(name)
                if name == "profiled":
                    self.prof.__exit__(None, None, None)
                delta = {k: end[k] - begin[k] for k in end}
                self.result[name] = {"wall": delta.pop("t"), **delta}


def with_callback(base, callback: TrainerCallback):
    class WithCallback(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(callback)

    return WithCallback


def breakdown(prof, rank: int, vocab: int) -> tuple[dict, dict]:
    """Self CPU seconds and matmul FLOPs per class over every recorded op."""
    seconds: dict[str, float] = collections.defaultdict(float)
    flops: dict[str, float] = collections.defaultdict(float)
    optimizer_ids = set()
    events = prof.events()
    for ev in events:
        if ev.name.startswith("Optimizer.step#"):
            stack = list(ev.cpu_children)
            while stack:
                child = stack.pop()
                optimizer_ids.add(child.id)
                stack.extend(child.cpu_children)
    for ev in events:
        if (
            ev.name.startswith(("Optimizer.", "ProfilerStep"))
            or ev.device_type != torch.autograd.DeviceType.CPU
        ):
            continue
        own = ev.self_cpu_time_total / 1e6
        if ev.id in optimizer_ids:
            seconds["optimizer"] += own
            continue
        cls = classify(ev.name, ev.input_shapes or [], rank, vocab)
        seconds[cls] += own
        if ev.name in MATMULS and ev.input_shapes and cls != "attention":
            flops[cls] += matmul_flops(ev.name, ev.input_shapes)
    return seconds, flops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6, help="steps in each window (plain, profiled)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--table", type=int, default=0, help="also print the N ops with most self time")
    ap.add_argument("overrides", nargs="*", help="more key=value overrides of configs/dpo.yaml")
    a = ap.parse_args()
    from rlhf.allocator import tune_malloc
    from rlhf.models import SMOLLM2, resolve_model_path

    resolve_model_path(SMOLLM2)
    tune_malloc()  # as the `rlhf` command does
    from rlhf.stages import dpo as stage
    from rlhf.stages.dpo import run

    s = bench.SETTINGS
    with tempfile.TemporaryDirectory() as out:
        cfg = bench.rlhf_config(out, "profile", a.warmup + 2 * a.steps, ["drift.every_steps=0", *a.overrides])
        count_packing()
        cls = instrumented(stage.DPOTrainer)
        windows = Windows(a.warmup, a.steps, cls.stats)
        stage.DPOTrainer = with_callback(cls, windows)
        run(cfg)
    stats, dims = cls.stats, cls.stats["dims"]
    ran = "bf16" if stats["bf16"] else "fp32"
    peaks = {"fp32": matmul_peak("float32", 2048, 4.0), "bf16": matmul_peak("bfloat16", 1024, 4.0)}
    peak = peaks[ran]

    def useful(w: dict) -> float:
        ckpt = stats["checkpointing"]
        return lora_flops(dims, w["tokens"], w["completion"], w["s2"], checkpointing=ckpt, reference=True)

    plain, prof = windows.result["plain"], windows.result["profiled"]
    print(precision_line(peaks, torch.get_num_threads()))
    print(
        f"trained in {ran}, gradient checkpointing {'on' if stats['checkpointing'] else 'off'}; "
        f"{a.steps} steps after {a.warmup}: {plain['wall'] / a.steps:.3f} s a step, "
        f"{plain['faults'] / a.steps:.0f} minor page faults a step; the next {a.steps} under the profiler: "
        f"{prof['wall'] / a.steps:.3f} s a step"
    )
    vocab = dims["Nh"] // dims["d"]
    if a.table:
        ops = windows.prof.key_averages()
        print(ops.table(sort_by="self_cpu_time_total", row_limit=a.table, max_name_column_width=60))
    seconds, flops = breakdown(windows.prof, s["r"], vocab)
    wall = prof["wall"]
    seconds["outside ops"] = max(wall - sum(seconds.values()), 0.0)
    for k in ("base matmul", "LoRA matmul", "LM head", "attention", "optimizer", "other ops", "outside ops"):
        rate = f", {flops[k] / seconds[k] / 1e9:.0f} GFLOP/s in place" if flops.get(k) else ""
        print(f"  {k:12s} {seconds[k] / a.steps:6.3f} s a step {100 * seconds[k] / wall:5.1f}%{rate}")
    mm = ("base matmul", "LoRA matmul", "LM head")
    mm_time = sum(seconds[k] for k in mm)
    base_rate = (flops["base matmul"] + flops["LM head"]) / (seconds["base matmul"] + seconds["LM head"])
    one_rate_time = sum(flops[k] for k in mm) / base_rate

    def share(rate: float) -> str:
        return f"{rate / 1e9:.1f} GFLOP/s = {100 * rate / peak:.1f}% of the {ran} peak"

    print(f"achieved:      useful {share(useful(plain) / plain['wall'])}")
    print(
        f"matmuls only:  {share(useful(prof) / mm_time)} (every other op, attention included, at zero cost)"
    )
    print(f"at one rate:   {share(useful(prof) / one_rate_time)} (and LoRA's matmuls at the base's rate)")
    print(f"ratio matmul_time/step_time {mm_time / wall:.3f}")


if __name__ == "__main__":
    main()
