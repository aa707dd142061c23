"""Dynamic batching policy (Triton / TorchServe style). Pure: no Redis, no clock of its own.

A worker asks the policy what to read next: while it holds nothing it blocks for up to
``idle_block_ms`` for any task; once it holds one, it keeps reading until it holds
``max_batch`` tasks or ``max_delay_ms`` have passed since the first one arrived.

While filling a batch the reads do not block in Redis: a blocked XREADGROUP's timeout is only
noticed on the server's next cron tick (``hz 10``: up to 100 ms late), which would turn a 5 ms
batching delay into 100. Instead the worker polls without blocking and pauses ``poll_ms``
between empty polls (new entries are picked up by the next poll).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from toolkit.errors import ConfigError
from toolkit.queue.constants import CLAIM_BLOCK_MS


@dataclass(frozen=True)
class Read:
    """One read: up to ``count`` tasks, blocking up to ``block_ms`` in Redis (None: do not
    block); if it returns nothing, pause ``pause_ms`` before the next read."""

    count: int
    block_ms: int | None
    pause_ms: float = 0.0


@dataclass(frozen=True)
class BatchPolicy:
    max_batch: int
    max_delay_ms: int
    idle_block_ms: int = CLAIM_BLOCK_MS
    poll_ms: float = 1.0

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {self.max_batch}")
        if self.max_delay_ms < 0:
            raise ConfigError(f"max_delay_ms must be 0 or more, got {self.max_delay_ms}")
        if self.idle_block_ms < 1:
            raise ConfigError("idle_block_ms must be at least 1 (0 would block forever)")

    def next_read(self, have: int, first_at: float | None, now: float) -> Read | None:
        """What to read next, or None when the batch in hand should run now.

        ``first_at`` and ``now`` are monotonic seconds; ``first_at`` is when the first task
        of this batch arrived (None while there is none).
        """
        if have >= self.max_batch:
            return None
        if have == 0 or first_at is None:
            return Read(self.max_batch, self.idle_block_ms)
        left_ms = self.max_delay_ms - (now - first_at) * 1000.0
        if left_ms <= 0:
            return None
        return Read(self.max_batch - have, None, min(self.poll_ms, left_ms))


def default_threads(workers: int, cpus: int | None) -> int:
    """Torch threads per worker so that workers x threads does not exceed the cores."""
    return max(1, (cpus or 1) // max(1, workers))


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """[start, end) ranges that split ``n`` items into as few forward passes of at most
    ``size`` as possible, as even as possible (4 by 3 -> 2 + 2, not 3 + 1)."""
    if n <= 0:
        return []
    passes = -(-n // max(1, size))
    bounds = [n * i // passes for i in range(passes + 1)]
    return list(itertools.pairwise(bounds))


def pick_forward_batch(per_image_s: dict[int, list[float]], tolerance: float = 0.0) -> int:
    """The CPU forward-pass size to use, from timings per size taken at start-up.

    ``per_image_s``: batch size -> CPU seconds per image of several timed passes. The size
    with the lowest median wins; with ``tolerance``, the smallest size of 2 or more within
    that fraction of it (1 only when it is the cheapest outright). Measured here with two
    workers timing at once: 1 image 16-17 ms, 2-3 images 15-16 ms, 4 images 16-16.6 ms per
    image, so a tolerance that admitted 1 would pick it about half the time, and passes of 1
    cost about 5 % more per image than 2 when both workers are busy.
    """
    if not per_image_s:
        raise ConfigError("no forward-pass timings to pick a batch size from")
    medians = {size: sorted(ts)[len(ts) // 2] for size, ts in per_image_s.items() if ts}
    best = min(medians.values())
    close = [s for s, cost in medians.items() if cost <= best * (1 + tolerance)]
    return min((s for s in close if s > 1 or medians[s] == best), default=min(close))
