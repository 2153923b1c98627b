"""promoe.resources: the CPU record of every time (times.json, promoe bench)."""

from __future__ import annotations

import pytest

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
