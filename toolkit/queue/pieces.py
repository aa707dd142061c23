"""Cut a task's image into pieces Redis stores without rounding waste. Pure.

Redis keeps a hash field's value as one SDS string: a header (1, 3, 5 or 9 bytes, by
length), the bytes and a NUL, in one allocation. jemalloc (the allocator of Redis's own
builds, Debian's and the official images) hands out fixed size classes, four per power of
two, so one 35,042-byte photo becomes a 40,960-byte allocation: 5.9 KB lost per waiting
task, up to a fifth of the image. And every allocation above its largest *small* class
(14,336 bytes) is a page-aligned extent that jemalloc places at a random offset within an
extra page (its default ``cache_oblivious``), so each one also holds one more page of RSS.
So the pieces are strings whose allocations are exactly small classes: the photo goes in as
14,330 + 14,330 + 6,138 + 244 bytes (allocations of 14,336, 14,336, 6,144 and 250 -> 256).
With glibc's malloc (the valkey wheel) the cut costs one small hash field (~50 bytes) per
piece.

Measured per waiting task through the API (``bench/bench_serve.py``, BENCHMARKS.md): the
image + about 1 KB on every build, against + 6.7 KB (RSS + 4.3 KB) for the image in one
piece on jemalloc.
"""

from __future__ import annotations

import bisect

SLACK = 64
"""A remainder whose own allocation wastes at most this many bytes is not cut further."""

SMALL_MAX = 14336
"""jemalloc's largest small size class with 4 KiB pages; no piece's allocation exceeds it."""


def size_class(n: int) -> int:
    """The bytes jemalloc really allocates for a request of ``n`` (its size classes:
    8, 16, then steps of 16 up to 128, then four classes per power of two)."""
    if n <= 8:
        return 8
    if n <= 16:
        return 16
    k = (n - 1).bit_length() - 1  # 2**k < n <= 2**(k+1)
    step = max(16, 1 << (k - 2))
    return -(-n // step) * step


def sds_bytes(length: int) -> int:
    """The allocation request for an SDS string of ``length`` bytes: header + bytes + NUL."""
    if length < 32:
        header = 1
    elif length < 1 << 8:
        header = 3
    elif length < 1 << 16:
        header = 5
    else:
        header = 9
    return header + length + 1


def waste(length: int) -> int:
    """Bytes jemalloc's size class adds to a string of ``length`` bytes (0: a whole class)."""
    need = sds_bytes(length)
    return size_class(need) - need


def _filling(cls: int) -> int:
    """The length of a string whose allocation is exactly ``cls`` bytes (0: none is)."""
    for header in (9, 5, 3, 1):
        length = cls - header - 1
        if length > 0 and sds_bytes(length) == cls:
            return length
    return 0


def _fillings(limit: int) -> list[int]:
    """Every length that fills a size class, ascending, up to about ``limit``."""
    out, cls = [], 16
    while cls <= limit:
        if length := _filling(cls):
            out.append(length)
        cls = size_class(cls + 1)
    return out


_FILLINGS = _fillings(SMALL_MAX)


def _largest_filling(limit: int) -> int:
    """The longest string of at most ``limit`` bytes that fills its class (0: none)."""
    i = bisect.bisect_right(_FILLINGS, limit)
    return _FILLINGS[i - 1] if i else 0


def piece_sizes(n: int) -> list[int]:
    """Lengths that add up to ``n``: each a string whose allocation is exactly a small size
    class, greedily the largest, until what is left fits a small class within SLACK bytes."""
    sizes: list[int] = []
    left = n
    while left > 0:
        if sds_bytes(left) <= SMALL_MAX and waste(left) <= SLACK:
            sizes.append(left)
            break
        size = _largest_filling(left)
        sizes.append(size)
        left -= size
    return sizes


def split(data: bytes) -> list[bytes]:
    """``data`` cut by :func:`piece_sizes` (one empty piece for empty data)."""
    if not data:
        return [b""]
    out, start = [], 0
    for size in piece_sizes(len(data)):
        out.append(data[start : start + size])
        start += size
    return out
