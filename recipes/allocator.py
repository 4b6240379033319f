"""Keep the memory a step frees for the next step, instead of handing it back to the kernel.

glibc's malloc serves every block above its mmap threshold (128 KiB, raised as such blocks are freed, to at most
32 MiB) with fresh pages from the kernel and returns them on free, and trims the top of its heap when more than
128 KiB is free there. A chunk step over hundreds of streams, or a training step, allocates tens of MB of
activations, so every step faults its memory in anew: the concurrency search at 160 ms on the demo model spent
30.7 of 56.9 s in the kernel (23.7 M page faults), against 1.0 of 44.0 s with freed memory kept, and 90 demo
fine-tuning steps took 42 s against 38 s (docs/benchmarks.md, "Concurrency"; docs/training_throughput.md).
tcmalloc or jemalloc (``LD_PRELOAD``) do the same; this needs no extra library. Memory is then returned only at
exit: the process's resident size stays at its peak, so evaluation and transcription, whose peak on long files is
measured, leave the allocator as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
LARGEST = 2**31 - 1  # mallopt takes a C int: blocks up to 2 GiB from the heap, and a free top of up to 2 GiB kept


def keep_freed_memory() -> bool:
    """For the whole process, from now on: blocks below 2 GiB come from malloc's heap, and its free top is kept.
    False (and nothing changed) where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        log.info("the C library has no mallopt: freed memory goes back to the kernel as the allocator decides")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, LARGEST)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST))
