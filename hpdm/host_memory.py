"""Host memory for CPU work: keep freed blocks for reuse instead of handing them back (glibc malloc).

glibc serves each allocation above its mmap threshold with fresh pages from the kernel and returns
them on free. The threshold starts at 128 KiB and only grows as such blocks are freed, so a CPU
training step or sampling call, whose activations are a few MiB each, keeps paying page faults
and zeroing for memory it had a moment before. PyTorch's CPU tuning advice is to swap in jemalloc
or tcmalloc for this; ``keep_freed_memory`` gets most of the same effect from glibc itself with two
``mallopt`` settings: blocks up to 32 MiB (glibc's largest threshold) come from the heap, and the
heap is not trimmed, so the process keeps its peak memory and reuses it. The binaries call it at
start; Python callers running on CPU may call it once themselves.

It changes nothing where it cannot help or was not wanted: off glibc, when the environment sets
glibc's own malloc variables (the user's choice wins), or with ``HPDM_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc refuses more (half its 64 MiB heap size on 64-bit)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: in effect, never trim
OPT_OUT = "HPDM_MALLOC_TUNING"
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_status = "not requested"


def _glibc():
    if not hasattr(os, "confstr") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or "").lower():
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory() -> str:
    """Apply the two ``mallopt`` settings (see the module docstring); returns what was done, in words.

    Idempotent. ``status()`` returns the same words later (the benchmark records them).
    """
    global _status
    if os.environ.get(OPT_OUT, "1") == "0":
        _status = f"off ({OPT_OUT}=0)"
    elif any(name in os.environ for name in USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        _status = "left to the environment's malloc settings"
    else:
        libc = _glibc()
        if libc is None:
            _status = "not glibc: unchanged"
        elif libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
            _status = f"glibc: mmap threshold {MMAP_THRESHOLD >> 20} MiB, no trimming"
        else:
            _status = "glibc refused the settings: unchanged"
    return _status


def status() -> str:
    """What ``keep_freed_memory`` did in this process (``"not requested"`` before any call)."""
    return _status
