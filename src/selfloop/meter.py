"""Wall time and peak memory per step, for metrics.json and the benchmarks.

Peak memory is the process's peak resident set size during the step: Linux lets a process
reset its own high-water mark (writing 5 to /proc/self/clear_refs) and read it back (VmHWM
in /proc/self/status), which costs microseconds and sees every allocation (torch's
included), unlike tracemalloc. Elsewhere the memory figures are simply absent."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak() -> bool:
    """Start a new peak-RSS window; False where the platform cannot."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident set size (MiB) since the last reset (or process start)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class Meter:
    """``with meter("train"): ...`` adds the step's seconds to ``times`` and its peak RSS
    to ``memory`` (the larger, when a step name repeats)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.memory: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        can_reset = reset_peak()
        t = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - t, 3)
            peak = peak_rss_mb() if can_reset else None
            if peak is not None:
                self.memory[name] = max(peak, self.memory.get(name, 0.0))
