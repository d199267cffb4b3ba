"""Tune glibc's allocator for camlens's own processes (the CLI, the reproduction script).

By default glibc serves every buffer above 32 MB with a fresh ``mmap`` and returns it to the
system on ``free``; the next batch then page-faults the same memory in again. Batched forward
passes free and re-allocate such buffers all the time: occlusion on one 224 x 224 photo spent
24 s of its 24 s in the kernel that way, against 9 s in all with the setting below. Only the
command-line entry points call this; a library must not change its host process's allocator.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Serve large buffers from the heap and keep freed memory for reuse (glibc's
    ``mallopt(M_MMAP_MAX, 0)`` and ``M_TRIM_THRESHOLD``), as
    ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...`` would.
    Peak memory rises (freed memory is not returned until exit), time spent in page faults
    goes. Does nothing off glibc or where the user set ``GLIBC_TUNABLES`` themselves; returns
    whether it changed anything."""
    if os.environ.get("GLIBC_TUNABLES") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, _INT_MAX))
