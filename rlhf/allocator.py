"""The C allocator tuned for tensor work on CPU (called once by the `rlhf` command, before anything loads).

glibc's malloc serves a request above its (adaptive) mmap threshold with a fresh `mmap` and gives it back
with `munmap` when freed; a decode step or a training step frees and re-requests tensors of tens of MB
(logits, activations) many times, and each fresh mapping is page-faulted and zeroed by the kernel again.
`tune_malloc` keeps blocks up to 32 MiB on the heap (`M_MMAP_THRESHOLD`) and returns the heap's free top
to the system only past 512 MiB (`M_TRIM_THRESHOLD`) — the usual advice for PyTorch on CPU (where
jemalloc/tcmalloc are the other answer). Measured on a 2-core native-bf16 CPU in one session, alternated:
SmolLM2 decoding (64 prompts x 48 tokens) 257 -> 320-336 tokens/s, a LoRA training step 2.6 -> 2.0 s;
see docs/generation.md. The cost: a process keeps up to 512 MiB of freed memory mapped.

`RLHF_MALLOC=default` leaves glibc's defaults; elsewhere than glibc (macOS, musl) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 512 * 2**20


def tune_malloc() -> bool:
    """Applies the settings above; True when they took effect."""
    if os.environ.get("RLHF_MALLOC", "").strip().lower() == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
