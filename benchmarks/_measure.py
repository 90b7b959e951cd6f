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


@dataclass
class Measured:
    """What a measured call returned, its wall time and its peak memory above the start."""

    value: Any
    seconds: float
    peak_mb: float


def measure(fn: Callable[[], Any], *, interval: float = 0.01) -> Measured:
    """Run `fn`, timing it and sampling the process' RSS every `interval` seconds.

    ``peak_mb`` is the highest RSS seen while `fn` ran minus the RSS just before it (after
    :func:`release_memory`): the memory the step itself needed, libraries and data excluded.
    """
    release_memory()
    start = rss_mb()
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
    return Measured(value, seconds, max(peak - start, 0.0))
