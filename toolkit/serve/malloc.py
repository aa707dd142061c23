"""Keep glibc's malloc from handing a worker's tensor memory back to the kernel after every batch.

A forward pass allocates and frees the same large activation buffers each time. glibc serves
allocations above its mmap threshold with a fresh ``mmap`` and trims freed memory at the top
of the heap back to the kernel, so every batch starts by page-faulting tens of megabytes in
again. Measured here (EfficientNet-Lite0, 1 thread, batch 4): 950,000 page faults in 8 s and
a fifth of the worker's CPU time in the kernel; with the settings below, none, and 16.1 ms
per image instead of 21.5 (``bench/bench_serve.py`` runs the ceiling and the workers with
them).

The settings: never use ``mmap`` for an allocation (``M_MMAP_MAX`` 0), hand free memory at
the top of the heap back only when there is more than 256 MiB of it (``M_TRIM_THRESHOLD``),
grow the heap 64 MiB at a time (``M_TOP_PAD``). The price: a worker keeps up to 256 MiB
more than it uses after a peak (a batch's activations, one huge image decoded) instead of
going up and down with every batch. Only glibc has ``mallopt``; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

SETTINGS = (
    (M_MMAP_MAX, 0),
    (M_TRIM_THRESHOLD, 256 << 20),
    (M_TOP_PAD, 64 << 20),
)


def keep_heap() -> bool:
    """Apply the settings to this process; True when glibc took all of them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it; musl has a mallopt stub)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
