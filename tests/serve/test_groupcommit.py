"""Group commit (the API's enqueue path), as pure asyncio: what a caller can observe."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from toolkit.serve.groupcommit import GroupCommit


class Recorder:
    """A commit that takes ``delay`` seconds (a Redis round trip) and records each group."""

    def __init__(self, delay: float = 0.01, fail_on: str | None = None) -> None:
        self.groups: list[list[str]] = []
        self.delay = delay
        self.fail_on = fail_on

    async def __call__(self, items: Sequence[str]) -> None:
        self.groups.append(list(items))
        await asyncio.sleep(self.delay)
        if self.fail_on in items:
            raise ConnectionError("Redis went away")


def test_alone_it_commits_at_once_and_together_they_share_a_commit() -> None:
    async def main() -> Recorder:
        rec = Recorder()
        gc = GroupCommit(rec, max_group=3)
        await gc.submit("a")  # idle: committed alone, right away
        first = asyncio.create_task(gc.submit("b"))
        await asyncio.sleep(0)  # b's commit is in flight; these arrive meanwhile
        rest = [asyncio.create_task(gc.submit(x)) for x in "cdefg"]
        await asyncio.gather(first, *rest)
        return rec

    rec = asyncio.run(main())
    assert rec.groups == [["a"], ["b"], ["c", "d", "e"], ["f", "g"]]  # in order, at most 3


def test_a_failed_commit_fails_its_group_only() -> None:
    async def main() -> list[object]:
        gc = GroupCommit(Recorder(fail_on="c"), max_group=8)
        first = asyncio.create_task(gc.submit("a"))
        await asyncio.sleep(0)
        others = [asyncio.create_task(gc.submit(x)) for x in "bc"]
        await asyncio.gather(first, *others, return_exceptions=True)
        after = asyncio.create_task(gc.submit("d"))  # the next group still goes through
        await after
        return [t.exception() for t in (first, *others, after)]

    a, b, c, d = asyncio.run(main())
    assert a is None and d is None
    assert isinstance(b, ConnectionError) and isinstance(c, ConnectionError)


def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    async def main() -> tuple[Recorder, bool]:
        rec = Recorder(delay=0.05)
        gc = GroupCommit(rec, max_group=8)
        first = asyncio.create_task(gc.submit("a"))
        await asyncio.sleep(0)
        quitter = asyncio.create_task(gc.submit("b"))
        stayer = asyncio.create_task(gc.submit("c"))
        await asyncio.sleep(0.01)
        quitter.cancel()  # its client disconnected
        await asyncio.gather(first, stayer)
        return rec, quitter.cancelled()

    rec, cancelled = asyncio.run(main())
    assert cancelled and rec.groups == [["a"], ["b", "c"]]  # b is still queued: never lost


def test_group_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_group"):
        GroupCommit(Recorder(), max_group=0)
