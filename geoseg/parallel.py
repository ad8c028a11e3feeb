"""Process tuning for block-wise jobs: the allocator, freeing memory, a quick exit."""

from __future__ import annotations

import functools
import os
from typing import Any

__all__ = [
    "tune_allocator",
    "release_memory",
    "quick_exit",
]


@functools.lru_cache(maxsize=1)
def _glibc() -> Any:
    """The C library through ctypes when it is glibc (``mallopt``, ``malloc_trim``), else None."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return None


@functools.lru_cache(maxsize=1)
def tune_allocator() -> bool:
    """Keep large freed blocks for reuse in this process (glibc ``mallopt``; see the module notes).

    Returns True when the thresholds were set; False where the C library is not glibc or
    ``GEOSEG_MALLOC=default`` asks to leave it alone.
    """
    libc = _glibc()
    if libc is None or os.environ.get("GEOSEG_MALLOC", "").strip().lower() == "default":
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 256 << 20)) and bool(libc.mallopt(m_trim_threshold, 512 << 20))


def release_memory() -> bool:
    """Return freed heap memory to the system (glibc ``malloc_trim``); False where unavailable.

    Workflow runs call it on every worker once inference is over, so that the memory kept
    for reuse by :func:`tune_allocator` does not stay resident through the later stages.
    """
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


_QUICK_EXIT: list[bool] = []


def quick_exit() -> bool:
    """Let this process exit without a final garbage collection over everything it imported.

    With torch and segmentation-models loaded, Python spends ~1.1 s at exit collecting their
    objects (0.2 s with them frozen, measured here); a Dask worker's close - so the end of
    every run on a LocalCluster - and the CLI's return waited for it. This registers
    :func:`gc.freeze` to run at exit (once per process): objects are still released by
    reference counting as the modules are torn down, and only cyclic garbage, which holds no
    unwritten output (every file geoseg writes is closed before its task or command
    returns), is left to the operating system. Returns True when registered by this call.
    """
    import atexit
    import gc

    if _QUICK_EXIT:
        return False
    _QUICK_EXIT.append(True)
    atexit.register(gc.freeze)
    return True
