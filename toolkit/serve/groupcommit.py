"""Group commit: items submitted while a commit is in flight go together in the next one.

The API queues each upload with one Redis transaction. At the service's rate most of what
that costs is not the work but being woken per event (BENCHMARKS.md: a bare enqueue costs
the client 250 us of CPU at 100 a second, 80 us at 12,000 a second), and uploads tend to
arrive together (a batch of results goes out, the clients send their next images). So the
first upload is committed at once, alone, and the ones that arrive while its round trip is
in flight wait for it and then go in one transaction: no delay added when idle, one round
trip (and one wake-up on each side) for several tasks under load. Pure asyncio: the commit
function is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """``await submit(item)`` returns once ``commit`` has taken the item, in a group with
    whatever else was submitted meanwhile (at most ``max_group`` at a time), or raises what
    ``commit`` raised for that group."""

    def __init__(self, commit: Callable[[Sequence[T]], Awaitable[None]], max_group: int) -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self._commit = commit
        self._max = max_group
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.groups = 0  # commits made (for tests and curiosity)

    async def submit(self, item: T) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, fut))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        try:
            await asyncio.shield(fut)  # a caller that goes away does not cancel the others' commit
        except asyncio.CancelledError:
            fut.add_done_callback(_retrieve)  # its outcome is nobody's now: no "never retrieved"
            raise

    async def _flush(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[: self._max], self._waiting[self._max :]
                self.groups += 1
                try:
                    await self._commit([item for item, _ in group])
                except BaseException as exc:
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception) else _gone(exc))
                    if not isinstance(exc, Exception):
                        raise  # cancelled (shutdown): the rest fail below
                else:
                    for _, fut in group:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self._flusher = None
            for _, fut in self._waiting:  # only left when the flusher itself was cancelled
                if not fut.done():
                    fut.set_exception(_gone(None))
            self._waiting = []


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


def _gone(exc: BaseException | None) -> Exception:
    err = RuntimeError("the enqueue was cancelled (the API is stopping)")
    err.__cause__ = exc
    return err
