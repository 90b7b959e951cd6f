"""Wall time and peak resident memory of one step of a benchmark."""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Current resident set size of this process, in MiB (Linux ``/proc``; else peak RSS)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE / 2**20
    except OSError:  # not Linux: the process' peak so far (ru_maxrss is KiB on Linux, bytes on macOS)
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so the next baseline is honest."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_since_reset() -> float | None:
    """``VmHWM`` (peak RSS since the last reset) in MiB, or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


@dataclass
class Measured:
    """What a measured call returned, its wall time, the RSS before it and its peak RSS."""

    value: Any
    seconds: float
    start_mb: float
    peak_abs_mb: float

    @property
    def peak_mb(self) -> float:
        """Peak RSS while the call ran, above the RSS just before it."""
        return max(self.peak_abs_mb - self.start_mb, 0.0)


def measure(fn: Callable[[], Any], *, interval: float = 0.01) -> Measured:
    """Run `fn`, timing it and recording the process' peak resident memory meanwhile.

    On Linux the peak is the kernel's own high-water mark (``VmHWM``, reset before the call),
    so no spike is missed; elsewhere the RSS is sampled every `interval` seconds. ``start_mb``
    is the RSS just before the call (after :func:`release_memory`), so ``peak_mb`` is the
    memory the step itself needed, libraries and data already loaded excluded.
    """
    release_memory()
    start = rss_mb()
    exact = _reset_peak()
    peak = start
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(interval):
            peak = max(peak, rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        value = fn()
    finally:
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
    peak = max(peak, rss_mb())
    hwm = _peak_since_reset() if exact else None
    return Measured(value, seconds, start, max(peak, hwm or 0.0))
