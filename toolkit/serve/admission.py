"""Backpressure without a Redis round trip per request. Pure: no Redis, no clock of its own.

The API refuses new tasks (503) while ``max_depth`` or more wait. Asking Redis for the depth
(XLEN + XPENDING) before every XADD would cost a second round trip per upload, so the API
keeps an estimate instead: the depth it last read, plus every task it admitted that the read
may have missed: those admitted after the read began and those whose enqueue had not
finished when it began (enqueues are group-committed, so an admitted task can reach Redis
after a read that started later). Workers only ever lower the true figure, so for one API
process the estimate is an upper bound: it never admits a task that an exact check would
refuse. It may refuse too
early, so the API reads the exact figure before it answers 503, and reads it again in the
background whenever the estimate is older than ``max_age_s``.

With several API processes each one counts only its own tasks: the queue can overshoot by
what the others admitted since the last read (at most ``max_age_s`` of their traffic).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DepthGate:
    """Admission decisions from an estimate of the waiting tasks; see the module docstring."""

    limit: int
    max_age_s: float = 0.1
    estimate: int = 0
    read_at: float | None = None
    admitted: int = 0
    """Tasks admitted so far (never decreases)."""
    settled: int = 0
    """Admitted tasks whose enqueue has finished (in Redis, or failed); never decreases. A
    read sees every task settled before it began, and may miss the others."""

    def admit(self) -> bool:
        """Admit one task on the estimate (and count it); False: the estimate says full, or
        there is none yet: read the depth (:meth:`record`) and ask again."""
        if self.read_at is None or self.estimate >= self.limit:
            return False
        self.estimate += 1
        self.admitted += 1
        return True

    def stale(self, now: float) -> bool:
        return self.read_at is None or now - self.read_at > self.max_age_s

    def settle(self, n: int) -> None:
        """``n`` admitted tasks' enqueue finished (applied or failed)."""
        self.settled += n

    def start_read(self) -> int:
        """A token for a depth read about to start; give it back to :meth:`record`."""
        return self.settled

    def record(self, waiting: int, token: int, now: float) -> None:
        """A depth read that started at ``token`` came back with ``waiting``; the tasks not
        settled when it started may be missing from it, so they are added."""
        self.estimate = waiting + (self.admitted - token)
        self.read_at = now
