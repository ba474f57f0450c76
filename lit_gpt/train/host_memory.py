"""Host memory of CPU training: glibc's mmap threshold pinned and the heap's top padded.

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

Every CPU training run also pads the heap's top (``configure_heap``). ``free`` gives the top of the heap back to the
system whenever more than the trim threshold is free there (dynamically twice the mmap threshold), so a step that
frees its activations shrinks the heap, and the next step grows it again and page-faults on every page it touches
(hundreds of minor faults per step even at the shakespeare-char shape; docs/benchmarks.md). ``M_TOP_PAD`` makes
each growth ask for that much more and each trim keep that much free at the top (``mallopt(3)``), so the steps reuse
resident pages. Setting it turns the dynamic threshold off, so the threshold is pinned with it: at
``MMAP_THRESHOLD`` for a run that saves memory, else at 32 MiB, the ceiling where the dynamic threshold ends after
the first steps anyway. The price is up to ``TOP_PAD`` bytes of free memory kept resident.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

MMAP_THRESHOLD = 4 * 2**20
"""Bytes: tensors at least this large are mapped and unmapped on their own (``pin_mmap_threshold``)."""

MAX_MMAP_THRESHOLD = 32 * 2**20
"""Bytes: glibc's ``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit, the highest threshold ``mallopt`` takes."""

TOP_PAD = 64 * 2**20
"""Bytes kept free at the top of the heap when it is trimmed, and added to each growth (``configure_heap``)."""

M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3
"""``mallopt``'s parameter numbers for the top pad and the mmap threshold (glibc's ``malloc.h``)."""

USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
"""Environment variables through which a user sets glibc's allocator; when one is set it is left alone."""


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin this process's glibc mmap threshold at ``threshold`` bytes (module docstring).

    Returns:
        True if it was set; False where the C library is not glibc (macOS, musl, Windows), where the user set the
        allocator through one of ``USER_SETTINGS`` (their setting stands), or where ``mallopt`` refused the value.
    Raises:
        ValueError: if ``threshold`` is not between 1 byte and 32 MiB (glibc's ``DEFAULT_MMAP_THRESHOLD_MAX`` on
            64-bit).
    """
    if not 0 < threshold <= MAX_MMAP_THRESHOLD:
        raise ValueError(f"the mmap threshold must be between 1 byte and 32 MiB, got {threshold} bytes")
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))


def configure_heap(saves_memory: bool, top_pad: int = TOP_PAD) -> bool:
    """Set glibc's heap for CPU training (module docstring): the mmap threshold pinned at ``MMAP_THRESHOLD`` if
    ``saves_memory`` (the run trades speed for memory), else at ``MAX_MMAP_THRESHOLD``; the heap's top padded by
    ``top_pad`` bytes.

    Returns:
        True if both were set; False where ``pin_mmap_threshold`` would return False (not glibc, or the user's own
        allocator settings, which stand), or where ``mallopt`` refused the pad.
    Raises:
        ValueError: if ``top_pad`` is negative.
    """
    if top_pad < 0:
        raise ValueError(f"the heap's top pad must be at least 0 bytes, got {top_pad}")
    if not pin_mmap_threshold(MMAP_THRESHOLD if saves_memory else MAX_MMAP_THRESHOLD):
        return False
    return bool(_glibc().mallopt(M_TOP_PAD, top_pad))


def _glibc() -> ctypes.CDLL | None:
    """The C library, if it is glibc and the user has not set its allocator through the environment; else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    if any(os.environ.get(name) for name in USER_SETTINGS):
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
