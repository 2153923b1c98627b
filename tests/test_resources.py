"""promoe.resources: the CPU record of every time (times.json, promoe bench)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from promoe import resources


@pytest.mark.parametrize(("flags", "env", "native"), [
    ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, {}, True),
    ({"avx2", "avx512f", "avx512_bf16"}, {}, True),
    ({"avx2", "avx512f"}, {}, False),  # AVX-512 without BF16: bf16 is emulated
    ({"avx2"}, {}, False),
    ({"avx2", "avx512f", "amx_bf16"}, {"ATEN_CPU_CAPABILITY": "avx2"}, False),  # the fast paths turned off
    ({"avx2", "avx512f", "amx_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),
])
def test_bf16_is_native_only_with_the_instructions_and_not_capped(monkeypatch, flags, env, native) -> None:
    monkeypatch.setattr(resources, "_cpuinfo", lambda: ("Some CPU", flags))
    for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert resources.native_bf16() is native
    c = resources.cpu()
    assert c["model"] == "Some CPU" and c["native_bf16"] is native
    assert c["flags"] == [f for f in resources.SIMD_FLAGS if f in flags] and c["env"] == env


def _rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


@pytest.mark.skipif(resources._libc() is None or not Path("/proc/self/status").exists(),
                    reason="glibc's malloc_trim and /proc are Linux-only")
def test_released_memory_leaves_the_process() -> None:
    """Small tensors freed into the C heap stay resident (a later stage's large tensors are mapped beside
    them) until the heap's free pages are handed back."""
    held = [torch.ones(16_000) for _ in range(2_000)]  # 64 KB each: heap, not mapped; 122 MiB in all
    pin = torch.ones(16_000)  # allocated last: the heap's top stays in use, so free() alone cannot shrink it
    before = _rss_mib()
    del held
    gc.collect()
    freed = _rss_mib()
    if freed < before - 30:
        pytest.skip("free() already shrank the heap (the pin landed in an earlier hole): nothing left to release")
    resources.release_memory()
    released = _rss_mib()
    assert released < freed - 80, (before, freed, released)
    assert pin.sum() == 16_000
