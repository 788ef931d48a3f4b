"""glibc's malloc set to keep the memory a training step frees for the next step.

A step allocates and frees the same activation tensors, megabytes each, every time. By default
glibc returns the free memory at the top of its heap to the kernel once it exceeds twice the
(adaptive) mmap threshold, so the next step's tensors land on fresh pages that the kernel faults
in and zero-fills: about 26,000 page faults in every default training step on 2 CPU cores
(``benchmarks/heap_reuse.py``). Fixed thresholds keep that memory in the heap for reuse. Where
the C library is not glibc (macOS, musl), nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
"""``mallopt`` parameter: free memory at the heap's top above this many bytes goes back to the
kernel (``malloc.h``)."""
M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter: allocations of at least this many bytes get their own mmap, returned
to the kernel on free (``malloc.h``)."""

MMAP_THRESHOLD_BYTES = 32 * 2**20
"""The largest mmap threshold glibc accepts on 64-bit: a tensor below it reuses heap memory."""
TRIM_THRESHOLD_BYTES = 2**30
"""At most this much freed memory stays with the process beyond what it last used."""


_kept = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse, for the rest of this process and the
    processes it forks (DataLoader workers). Returns whether it did: ``False`` where the C
    library is not glibc."""
    global _kept
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    trim = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    mmap = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    _kept = _kept or (trim == 1 and mmap == 1)
    return _kept


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` took effect in this process (results.json records it)."""
    return _kept
