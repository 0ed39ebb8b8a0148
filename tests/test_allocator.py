"""rlhf.allocator: glibc's malloc kept from mmap-ing every tensor of tens of MB (Linux/glibc here)."""

import ctypes

from rlhf import allocator


def test_tune_malloc_sets_both_thresholds_and_can_be_switched_off(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    assert allocator.tune_malloc() is True
    assert calls == [(allocator.M_MMAP_THRESHOLD, 32 * 2**20), (allocator.M_TRIM_THRESHOLD, 512 * 2**20)]
    monkeypatch.setenv("RLHF_MALLOC", "default")
    assert allocator.tune_malloc() is False and len(calls) == 2


def test_tune_malloc_takes_effect_on_this_glibc(monkeypatch):
    monkeypatch.delenv("RLHF_MALLOC", raising=False)
    assert allocator.tune_malloc() is True  # glibc accepts both values (its mmap maximum is 32 MiB on 64-bit)
