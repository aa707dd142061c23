"""Cutting images into pieces that fill jemalloc's size classes (pure; the memory it saves on
real servers is measured in test_protocol.py)."""

from __future__ import annotations

import pytest

from toolkit.queue import pieces as P


@pytest.mark.parametrize(
    ("request_bytes", "allocated"),
    [(8, 8), (9, 16), (17, 32), (100, 112), (129, 160), (2048, 2048), (2049, 2560),
     (14337, 16384), (35048, 40960), (65536, 65536), (65537, 81920)],
)  # fmt: skip
def test_size_classes(request_bytes: int, allocated: int) -> None:
    assert P.size_class(request_bytes) == allocated


@pytest.mark.parametrize("n", [1, 31, 100, 5000, 35042, 65530, 65531, 72326, 300_000, 8 << 20])
def test_pieces_fill_their_classes(n: int) -> None:
    sizes = P.piece_sizes(n)
    assert sum(sizes) == n and 1 <= len(sizes) <= n // 14330 + 4
    *whole, last = sizes
    for size in whole:  # every piece but the last is an allocation with no room to spare
        assert P.waste(size) == 0
    assert P.waste(last) <= P.SLACK
    # none is a "large" allocation (page-aligned, one more page of RSS each on jemalloc)
    assert max(P.sds_bytes(size) for size in sizes) <= P.SMALL_MAX


def test_the_photo_loses_almost_nothing() -> None:
    # the benchmark's photo: in one piece jemalloc would give it 40,960 bytes (5.9 KB lost)
    assert P.piece_sizes(35042) == [14330, 14330, 6138, 244]
    wasted = sum(P.waste(s) for s in P.piece_sizes(35042))
    assert wasted == 8


def test_split_joins_back() -> None:
    data = bytes(range(256)) * 300
    parts = P.split(data)
    assert len(parts) > 1 and b"".join(parts) == data
    assert P.split(b"") == [b""]
