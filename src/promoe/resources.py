"""Stage times, peak memory and prompts cut to length of a run (``times.json``)."""

from __future__ import annotations

import resource
import sys

PEAKS = "peak_rss_gib_by_stage"
"""Key of ``times.json`` holding the process's peak memory when each stage ended: the stage where it
grows is the stage that set it."""


CUT = "prompts_cut"
"""Key of ``times.json`` holding, per stage, how many prompts were longer than its length limit and lost
their start: ``{stage: [cut, prompts, max_length]}``."""


def record_cut(times: dict, stage: str, cut: int, prompts: int, max_length: int) -> None:
    times.setdefault(CUT, {})[stage] = [cut, prompts, max_length]


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def record_stage(times: dict, name: str, seconds: float) -> None:
    """``times[name] = seconds`` and the peak memory at the end of the stage under :data:`PEAKS`."""
    times[name] = seconds
    times.setdefault(PEAKS, {})[name] = round(peak_rss_gib(), 3)


def stage_seconds(times: dict) -> dict[str, float]:
    """The stage times of a ``times.json`` (without its memory entries)."""
    return {k: v for k, v in times.items() if isinstance(v, (int, float)) and not k.startswith("peak_rss")}
