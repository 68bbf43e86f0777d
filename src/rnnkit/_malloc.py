"""Make glibc's malloc keep freed memory, as jemalloc does.

A training step frees and reallocates the same few large buffers every step. With its
defaults glibc hands blocks above a (dynamic) threshold back to the kernel with munmap
and trims the heap top, so the next step page-faults all of them in again: the same
step flips between fast and up to 20% slower. Raising the trim threshold and the top
pad and serving every block from the heap (no mmap; glibc will not raise the mmap
threshold past 32 MiB, and a 2x512 LSTM's buffers are larger) keeps that memory in the
process. It is process-wide, so a program calls :func:`tune_glibc_malloc` once at
start-up (the CLI and the benchmarks).
"""

from __future__ import annotations

import ctypes

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

MiB = 1 << 20


def tune_glibc_malloc(
    *,
    mmap_threshold: int = 32 * MiB,  # glibc's maximum on 64-bit (matters if mmap_max > 0)
    trim_threshold: int = 1024 * MiB,  # free heap top kept before returning it to the OS
    top_pad: int = 64 * MiB,  # extra heap requested per sbrk, fewer page-faulting grows
    mmap_max: int = 0,  # blocks served by mmap at once; 0: all from the heap, reused
) -> bool:
    """Raise glibc malloc's mmap threshold, trim threshold and top pad; limit its mmaps.

    Returns True when every setting was applied; False when this is not glibc (musl,
    macOS, Windows: nothing to do) or glibc refused a value (the others still apply).
    """
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except (OSError, TypeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    settings = (
        (M_MMAP_THRESHOLD, mmap_threshold),
        (M_TRIM_THRESHOLD, trim_threshold),
        (M_TOP_PAD, top_pad),
        (M_MMAP_MAX, mmap_max),
    )
    applied = [libc.mallopt(param, value) == 1 for param, value in settings]
    return all(applied)
