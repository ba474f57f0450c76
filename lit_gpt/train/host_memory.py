"""Host memory of CPU training: glibc's mmap threshold pinned, so that freed large tensors go back to the system.

PyTorch's CPU allocator takes each tensor's memory from the C library's ``malloc``. glibc serves a request above
its mmap threshold with a mapping of its own, returned to the system by ``free``; but the threshold is dynamic: it
starts at 128 KiB and rises to the size of every mapped block that is freed, up to 32 MiB. After the first training
step, activations of up to 32 MiB (at T = 8192 a 768-wide float32 activation is 24 MiB) therefore come from the heap,
which gives memory back only from its top: the freed activations of one layer stay resident between live tensors,
and the resident set grows well past what is live. Setting the threshold turns the dynamic adjustment off (glibc
manual, "Memory Allocation Tunables": ``glibc.malloc.mmap_threshold``; ``mallopt(3)``, ``M_MMAP_THRESHOLD``): every
block of at least ``MMAP_THRESHOLD`` bytes is then mapped on its own and unmapped when freed, and smaller ones keep
the heap. The price is a page fault at the first touch of every page of a large tensor, on every allocation: with
4 KiB pages this slows work on large tensors, so ``lit-gpt fit`` pins the threshold only for CPU runs that already
trade speed for memory (gradient checkpointing or a chunked loss). PyTorch's ``THP_MEM_ALLOC_ENABLE=1``, set before
torch starts, backs tensors of 2 MiB or more with transparent huge pages (``madvise``), which makes those faults
rare; a model whose tensors are all smaller than the threshold is unaffected either way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

MMAP_THRESHOLD = 4 * 2**20
"""Bytes: tensors at least this large are mapped and unmapped on their own (``pin_mmap_threshold``)."""

M_MMAP_THRESHOLD = -3
"""``mallopt``'s parameter number for the mmap threshold (glibc's ``malloc.h``)."""

USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")
"""Environment variables through which a user sets glibc's allocator; when one is set it is left alone."""


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin this process's glibc mmap threshold at ``threshold`` bytes (module docstring).

    Returns:
        True if it was set; False where the C library is not glibc (macOS, musl, Windows), where the user set the
        allocator through ``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES`` (their setting stands), or where
        ``mallopt`` refused the value.
    Raises:
        ValueError: if ``threshold`` is not between 1 byte and 32 MiB (glibc's ``DEFAULT_MMAP_THRESHOLD_MAX`` on
            64-bit).
    """
    if not 0 < threshold <= 32 * 2**20:
        raise ValueError(f"the mmap threshold must be between 1 byte and 32 MiB, got {threshold} bytes")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
