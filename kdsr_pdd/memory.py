"""glibc malloc settings for long CPU inference runs (``kdsr-pdd infer``).

PyTorch's CPU tensors come from malloc. glibc serves a block above its mmap threshold (32 MiB at most)
with a fresh mapping that is unmapped when freed, so every large feature map is page-faulted in (and
zeroed by the kernel) again and again: Real-ESRGAN x4plus on a 512x512 LR image on one CPU thread spent
88 s in the kernel for 70 s of user time (34 M minor page faults; docs/inference.md). Raising the mmap
threshold to its maximum does not help those maps, which are larger; serving every block from the heap
and keeping freed memory does: 2 s of system time, 1.2 M faults, about 10% more peak memory.

Kept memory fragments when passes of different sizes follow each other (the tiles of an image, images of
different sizes): the holes one pass leaves are too small for the next one's maps. :func:`release_free_memory`
(``malloc_trim``) gives the pages of free blocks back between passes, so the peak stays that of one pass.
"""
import ctypes
import functools
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
INT_MAX = 2 ** 31 - 1


@functools.cache
def _glibc():
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return None
    return libc if hasattr(libc, 'mallopt') and hasattr(libc, 'malloc_trim') else None


def reuse_freed_memory():
    """Make glibc serve all blocks from its heap (``M_MMAP_MAX`` 0) and return freed memory to the system only
    beyond 2 GiB (``M_TRIM_THRESHOLD``), so the memory of one feature map is reused by the next.

    Returns True when applied; False on other C libraries, or when a ``MALLOC_*`` environment variable is
    set (glibc's own tunables: the user's choice is left alone).
    """
    libc = _glibc()
    if libc is None or any(name.startswith('MALLOC_') for name in os.environ):
        return False
    return libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1


def release_free_memory():
    """Return the pages of the heap's free blocks to the system (glibc ``malloc_trim(0)``; nothing elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
