"""Stage times, peak memory, prompts cut to length and the CPU of a run (``times.json``)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import json
import logging
import math
import os
import platform
import resource
import sys
from pathlib import Path

import torch

from promoe.io import write_json

log = logging.getLogger(__name__)

SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
"""The CPU flags that decide which kernels PyTorch's matmuls run: AVX2 only, AVX-512, native bf16 (AVX-512
BF16, AMX). Machines of one project differ in them, and a time means little without them."""

PEAKS = "peak_rss_gib_by_stage"
"""Key of ``times.json`` holding the process's peak memory when each stage ended: the stage where it
grows is the stage that set it."""


CUT = "prompts_cut"
"""Key of ``times.json`` holding, per stage, how many prompts were longer than its length limit and lost
their start: ``{stage: [cut, prompts, max_length]}``."""


class RunTimes(dict):
    """A run's ``times.json`` while the run builds it (:func:`resume_times`): every record is written to the run
    folder at once (atomically), so a run started again after an interruption starts from what was recorded.
    ``kept``: the stages an earlier start of the run finished — their measurement stands (a resumed run that only
    reloads a finished stage does not replace its time with the reload's)."""

    def __init__(self, path: Path, kept: set[str]) -> None:
        super().__init__()
        self.path, self.kept = path, kept

    def save(self) -> None:
        write_json(self.path, self)


def _save(times: dict) -> None:
    if isinstance(times, RunTimes):
        times.save()


def resume_times(path: Path, times: dict) -> RunTimes:
    """``times`` (what this start of the run recorded so far) merged into the ``times.json`` at ``path`` that an
    earlier, interrupted start of the same run wrote; written back at once. A file that cannot be read is a
    record, not a result: the run goes on without it (a warning names it)."""
    earlier = _read_times(path)
    merged = RunTimes(path, kept=set(stage_seconds(earlier)))
    for key in [*times, *(k for k in earlier if k not in times)]:
        now, then = times.get(key), earlier.get(key)
        merged[key] = {**now, **then} if isinstance(now, dict) and isinstance(then, dict) else \
            then if then is not None else now
    merged.save()
    return merged


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _read_times(path: Path) -> dict:
    """The well-formed entries of ``times.json`` at ``path`` ({} when there is none or it is damaged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as e:
        log.warning("%s: cannot be read (%s): the times of stages finished before the interruption are lost "
                    "(results are not)", path, type(e).__name__)
        return {}
    if not isinstance(data, dict):
        return {}
    out = {k: v for k, v in data.items() if _number(v) or k in ("dtype", "cpu") and isinstance(v, dict)}
    if isinstance(peaks := data.get(PEAKS), dict):
        out[PEAKS] = {k: v for k, v in peaks.items() if _number(v)}
    if isinstance(cut := data.get(CUT), dict):
        out[CUT] = {k: v for k, v in cut.items() if isinstance(v, list) and len(v) == 3 and all(map(_number, v))}
    return out


def record_cut(times: dict, stage: str, cut: int, prompts: int, max_length: int) -> None:
    times.setdefault(CUT, {})[stage] = [cut, prompts, max_length]
    _save(times)


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def record_stage(times: dict, name: str, seconds: float, *, peak: bool = True) -> None:
    """``times[name] = seconds`` and (``peak``) the peak memory at the end of the stage under :data:`PEAKS`;
    in a :class:`RunTimes`, written to the run folder, unless an earlier start of the run finished the stage."""
    if name in getattr(times, "kept", ()):
        return
    times[name] = seconds
    if peak:
        times.setdefault(PEAKS, {})[name] = round(peak_rss_gib(), 3)
    _save(times)


def release_memory() -> None:
    """Collect garbage, then hand the C heap's free pages back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere). Tensors of a few hundred KiB (a cache of hidden states, optimizer state) are freed into the heap,
    where their pages stay resident; the large tensors of the next stage are mapped afresh beside them, so
    without this a run's peak memory is the stages' sum, not their maximum."""
    gc.collect()
    if (libc := _libc()) is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc():
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def stage_seconds(times: dict) -> dict[str, float]:
    """The stage times of a ``times.json`` (without its memory entries)."""
    return {k: v for k, v in times.items() if isinstance(v, (int, float)) and not k.startswith("peak_rss")}


def _cpuinfo() -> tuple[str, set[str]]:
    """The CPU's model name and flags from ``/proc/cpuinfo`` (the platform's processor string and no flags
    where there is none)."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return model, flags


def native_bf16(flags: set[str] | None = None) -> bool:
    """True when bf16 matmuls run natively here: the CPU has AVX-512 BF16 or AMX (``flags``, default: read from
    the CPU) and PyTorch is allowed to use them (``ATEN_CPU_CAPABILITY=avx2`` or ``ONEDNN_MAX_CPU_ISA=AVX2``
    turn them off)."""
    flags = _cpuinfo()[1] if flags is None else flags
    capped = os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in {"avx2", "default"} or \
        os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in {"AVX2", "SSE41", "AVX"}
    return not capped and bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu() -> dict:
    """The machine a time was measured on: CPU model, cores, torch threads, the SIMD flags that matter
    (:data:`SIMD_FLAGS`), the kernels torch chose (``capability``), whether bf16 is native, and the
    environment variables that cap the instruction set."""
    model, flags = _cpuinfo()
    capability = None
    with contextlib.suppress(AttributeError, RuntimeError):
        capability = torch.backends.cpu.get_cpu_capability()
    return {"model": model, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "flags": [f for f in SIMD_FLAGS if f in flags], "capability": capability, "native_bf16": native_bf16(flags),
            "env": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
                    if k in os.environ}}
