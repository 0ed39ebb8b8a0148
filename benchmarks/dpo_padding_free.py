"""Claim: padding-free DPO batches (`data.padding_free`, rlhf.train.packing) train faster than the padded
batches TRL builds, on the same batches, and more so the more the lengths in a batch differ.

    .venv/bin/python benchmarks/dpo_padding_free.py [--batches 12] [--data demo:preferences]
    .venv/bin/python benchmarks/dpo_padding_free.py --data ../shared/data/hh_harmless_1800.jsonl
    .venv/bin/python benchmarks/dpo_padding_free.py --data ../shared/data/hh_harmless_1800.jsonl --grouped

One process: `rlhf dpo` builds its trainer as configs/dpo.yaml ships it (SmolLM2-135M-Instruct, LoRA r=16 on
all linear layers, batch 4 pairs, the precision rlhf picks here; `--grouped`: data.group_by_length=true, the
old default, batches of pairs of similar length), then instead of training it takes the first `--batches`
batches of its data loader and, for each, runs the DPO loss forward + backward (policy, and the reference
with the adapter disabled) once padded and once padding-free, in alternating order (the CPU may be shared:
both sides see the same noise). The first two batches are warm-up and not counted. Prints each batch's
shape, tokens and the two times, then the totals and `ratio padding_free/padded <x>` (time padded / time
padding-free: > 1 means padding-free is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--data", default="demo:preferences")
    ap.add_argument("--grouped", action="store_true", help="data.group_by_length=true (batches by length)")
    a = ap.parse_args()
    if a.batches <= WARMUP:
        raise SystemExit(f"--batches must be more than the {WARMUP} warm-up batches")

    from rlhf.allocator import tune_malloc
    from rlhf.config import load_config

    tune_malloc()  # as the `rlhf` command does
    import rlhf.stages.dpo as stage
    from rlhf.train import packing

    enabled = {"on": True}
    before = packing.PackPairs.before
    packing.PackPairs.before = lambda self, *args, **kw: before(self, *args, **kw) if enabled["on"] else None
    timings = {"padded": [], "padding_free": []}

    class Measured(stage.DPOTrainer):
        def train(self, *args, **kwargs):
            batches = []
            for b in self.get_train_dataloader():
                batches.append(b)
                if len(batches) == a.batches:
                    break
            model = self.model
            model.train()
            for i, batch in enumerate(batches):
                order = ("padded", "padding_free") if i % 2 == 0 else ("padding_free", "padded")
                for side in order:
                    enabled["on"] = side == "padding_free"
                    t0 = time.perf_counter()
                    with self.accelerator.autocast():  # what accelerate wraps the forward in at train()
                        loss = self.compute_loss(model, batch)
                    loss.backward()
                    model.zero_grad(set_to_none=True)
                    timings[side].append(time.perf_counter() - t0)
                mask = batch["attention_mask"]
                print(
                    f"batch {i}{' (warm-up)' if i < WARMUP else ''}: {tuple(mask.shape)} {int(mask.sum())} tokens "
                    f"({100 * (1 - float(mask.float().mean())):.0f}% padding): padded "
                    f"{timings['padded'][-1]:.2f} s, padding-free {timings['padding_free'][-1]:.2f} s",
                    flush=True,
                )
            raise _Done

    stage.DPOTrainer = Measured
    overrides = ["run.name=bench-pf", "drift.every_steps=0", f"data.train={a.data}", "data.eval_fraction=0"]
    overrides += ["trainer.save_strategy=no", f"data.group_by_length={str(a.grouped).lower()}"]
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            stage.DPOStageConfig, ROOT / "configs" / "dpo.yaml", [f"run.output_root={out}", *overrides]
        )
        with contextlib.suppress(_Done):
            stage.run(cfg)
    padded, free = (sum(timings[k][WARMUP:]) for k in ("padded", "padding_free"))
    print(f"torch threads {torch.get_num_threads()}; data {a.data}; batches by length: {a.grouped}")
    print(f"total over {a.batches - WARMUP} batches: padded {padded:.2f} s, padding-free {free:.2f} s")
    print(f"ratio padding_free/padded {padded / free:.3f}")


class _Done(Exception):
    """Raised out of train() once the batches are measured (the run is not finished)."""


if __name__ == "__main__":
    main()
