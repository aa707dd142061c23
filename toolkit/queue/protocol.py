"""The task protocol on Redis Streams: enqueue, claim, complete, reclaim, dead-letter.

One stream (``tk:tasks``) read through one consumer group. A task's entry holds its id, the
enqueue time, how many labels to return and how many pieces its image is in; the image is in
``tk:image:<id>``, a hash of pieces cut to fill the allocator's size classes
(:mod:`toolkit.queue.pieces`: on jemalloc builds one piece would waste up to a fifth of the
image). Life of a task:

    enqueue   MULTI: SET tk:result:<id> {"status": "pending"} EX 1 d + HSET tk:image:<id>
              + EXPIRE 1 d + XADD tk:tasks
    claim     XREADGROUP GROUP tk-workers <consumer> COUNT n BLOCK ms STREAMS tk:tasks >,
              then HGETALL tk:image:<id> for each (one round trip); an entry whose image is
              gone is acked if its task was finished meanwhile (result final, or entry
              gone: a late complete by the worker it was reclaimed from, a duplicate
              entry), else dead-lettered
    complete  MULTI: SET tk:result:<id> <result> EX ttl + XACK + XDEL + DEL tk:image:<id>
              + XADD tk:tasks:done (ids and results, for the API's long-polls)
    reclaim   XAUTOCLAIM entries idle past the visibility timeout (their worker died)
    dead      past max_deliveries: XADD tk:tasks:dead (with the reason and the image) + failed
              result + XACK + XDEL + DEL tk:image:<id>

Entries are deleted once acked, so the stream only ever holds work not done: it is never
trimmed, and XLEN = waiting + pending. Delivery is at-least-once: a worker killed between
storing a result and acking it makes the task run twice, with the same result. Entries that
carry their image inline (``img``: queued by tk before the pieces) are still read.

The sync API here is what workers and tools use; the HTTP API (async) builds the same
commands from the same helpers (:func:`add_enqueue`, :func:`result_key`, ...).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolkit.errors import TkError
from toolkit.queue import constants as C
from toolkit.queue import pieces

if TYPE_CHECKING:
    from toolkit.config import Settings


class QueueError(TkError):
    """A queue operation failed (bad task entry, missing group, ...)."""


class ImageMissing(QueueError):
    """A task's entry whose image hash is gone (finished meanwhile, expired, or deleted)."""


class QueueFull(QueueError):
    """More tasks wait than ``max_queue_depth``: the caller should retry later."""

    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(
            f"queue full: {waiting} tasks waiting (limit {limit})",
            fix="retry later, add workers, or raise max_queue_depth",
        )
        self.waiting = waiting
        self.limit = limit


# --- pure helpers --------------------------------------------------------------------------


def new_task_id() -> str:
    """A random, unguessable task id (128 bits, hex)."""
    return secrets.token_hex(16)


def is_task_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def result_key(task_id: str) -> str:
    return C.RESULT_PREFIX + task_id


def image_key(task_id: str) -> str:
    return C.IMAGE_PREFIX + task_id


def heartbeat_key(consumer: str) -> str:
    return C.HEARTBEAT_PREFIX + consumer


def now_ms() -> int:
    return int(time.time() * 1000)


def image_fields(image: bytes) -> dict[str, bytes]:
    """The hash ``tk:image:<id>`` holds: the image's pieces under "0", "1", ..."""
    return {str(i): piece for i, piece in enumerate(pieces.split(image))}


def task_fields(task_id: str, n_pieces: int, top_k: int, enqueued_ms: int) -> dict[str, Any]:
    """The stream entry for one task (a few dozen bytes; the image is in its own key)."""
    return {"id": task_id, "t": enqueued_ms, "k": top_k, "n": n_pieces}


def add_enqueue(
    p: Any, cfg: QueueConfig, task_id: str, image: bytes, top_k: int, enqueued_ms: int
) -> None:
    """Queue one task's enqueue on pipeline ``p`` (sync or asyncio redis-py: the commands are
    only buffered; run it as a transaction): its pending marker, its image in pieces
    (expiring with the marker, so nothing leaks) and its stream entry."""
    parts = image_fields(image)
    p.set(result_key(task_id), pending_marker(task_id, enqueued_ms), ex=cfg.pending_ttl_s)
    p.hset(image_key(task_id), mapping=parts)
    p.expire(image_key(task_id), cfg.pending_ttl_s)
    p.xadd(cfg.stream, task_fields(task_id, len(parts), top_k, enqueued_ms))


def pending_marker(task_id: str, enqueued_ms: int) -> str:
    return json.dumps({"id": task_id, "status": "pending", "enqueued_ms": enqueued_ms})


def entry_time_ms(entry_id: str) -> int:
    """The server time (ms) encoded in a stream entry id such as ``1700000000000-0``."""
    return int(entry_id.split("-", 1)[0])


@dataclass(frozen=True)
class Task:
    """A claimed task: its stream entry id, task id, image bytes and settings."""

    entry_id: str
    task_id: str
    image: bytes
    enqueued_ms: int
    top_k: int
    deliveries: int = 1


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_entry(
    entry_id: Any,
    fields: Mapping[Any, Any] | None,
    deliveries: int = 1,
    image: Mapping[Any, Any] | None = None,
) -> Task:
    """A stream entry (and its image hash, from HGETALL) -> Task; raises QueueError for an
    entry that is not a task or whose image is missing."""
    eid = _s(entry_id)
    if not fields:
        raise QueueError(f"stream entry {eid} has no fields (deleted?)")
    f = {_s(k): v for k, v in fields.items()}
    try:
        data = f["img"] if "img" in f else join_image(f, image)
        return Task(
            entry_id=eid,
            task_id=_s(f["id"]),
            image=data if isinstance(data, bytes) else str(data).encode(),
            enqueued_ms=int(_s(f["t"])),
            top_k=int(_s(f.get("k", C.TOP_K))),
            deliveries=deliveries,
        )
    except (KeyError, ValueError) as exc:
        raise QueueError(f"stream entry {eid} is not a task: {exc}") from None


def join_image(fields: Mapping[str, Any], image: Mapping[Any, Any] | None) -> bytes:
    """The image from its hash of pieces; QueueError when it is missing or incomplete."""
    n = int(_s(fields["n"]))
    got = {_s(k): v if isinstance(v, bytes) else str(v).encode() for k, v in (image or {}).items()}
    try:
        return b"".join(got[str(i)] for i in range(n))
    except KeyError:
        raise ImageMissing(
            f"the image of task {_s(fields['id'])} is missing from "
            f"{image_key(_s(fields['id']))} ({len(got)} of {n} pieces)"
        ) from None


@dataclass
class Outcome:
    """What a worker stores for one task: completed with a result, or failed with a reason."""

    task: Task
    status: str  # "completed" | "failed"
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self, consumer: str, finished_ms: int) -> str:
        body: dict[str, Any] = {
            "id": self.task.task_id,
            "status": self.status,
            "enqueued_ms": self.task.enqueued_ms,
            "finished_ms": finished_ms,
            "worker": consumer,
            "deliveries": self.task.deliveries,
        }
        if self.error is not None:
            body["error"] = self.error
        body.update(self.result)
        return json.dumps(body)


def parse_result(raw: Any) -> dict[str, Any] | None:
    """A stored result (JSON) -> dict; None when there is none."""
    if raw is None:
        return None
    data = json.loads(_s(raw))
    return data if isinstance(data, dict) else None


# --- the queue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueConfig:
    """Names and limits one queue uses; the defaults are those in ``constants``."""

    stream: str = C.TASK_STREAM
    group: str = C.GROUP
    dead_stream: str = C.DEAD_STREAM
    done_stream: str = C.DONE_STREAM
    result_ttl_s: int = C.RESULT_TTL_S
    pending_ttl_s: int = C.PENDING_TTL_S
    visibility_ms: int = C.VISIBILITY_TIMEOUT_MS
    max_deliveries: int = C.MAX_DELIVERIES

    @classmethod
    def from_settings(cls, s: Settings) -> QueueConfig:
        """The limits a user set (queue.result_ttl, queue.visibility_ms, ...)."""
        return cls(
            result_ttl_s=s.queue_result_ttl,
            visibility_ms=s.queue_visibility_ms,
            max_deliveries=s.queue_max_deliveries,
        )


def _is_error(exc: Exception, code: str) -> bool:
    return str(exc).startswith(code)


class TaskQueue:
    """The protocol over a redis-py client created with ``decode_responses=False``."""

    def __init__(self, client: Any, config: QueueConfig | None = None) -> None:
        self.r = client
        self.cfg = config or QueueConfig()
        self._reclaim_cursor = "0-0"

    # producer side
    def waiting(self) -> int:
        """Tasks not yet claimed by any worker."""
        length = int(self.r.xlen(self.cfg.stream))
        return max(0, length - self._pending_count())

    def _pending_count(self) -> int:
        import redis

        try:
            summary = self.r.xpending(self.cfg.stream, self.cfg.group)
        except redis.ResponseError as exc:
            if _is_error(exc, "NOGROUP"):
                return 0
            raise
        return int(summary["pending"])

    def enqueue(
        self,
        image: bytes,
        top_k: int = C.TOP_K,
        max_depth: int | None = None,
        task_id: str | None = None,
    ) -> str:
        """Add one task; returns its id. Raises QueueFull (nothing added) past ``max_depth``."""
        if max_depth is not None:
            waiting = self.waiting()
            if waiting >= max_depth:
                raise QueueFull(waiting, max_depth)
        tid = task_id or new_task_id()
        with self.r.pipeline(transaction=True) as p:
            add_enqueue(p, self.cfg, tid, image, top_k, now_ms())
            p.execute()
        return tid

    def result(self, task_id: str) -> dict[str, Any] | None:
        return parse_result(self.r.get(result_key(task_id)))

    # worker side
    def ensure_group(self) -> None:
        """Create the consumer group (and stream) if missing; reads start at the beginning."""
        import redis

        try:
            self.r.xgroup_create(self.cfg.stream, self.cfg.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if not _is_error(exc, "BUSYGROUP"):
                raise

    def claim(self, consumer: str, count: int, block_ms: int | None) -> list[Task]:
        """Up to ``count`` new tasks for ``consumer``; waits up to ``block_ms`` (None: no wait)."""
        import redis

        try:
            reply = self.r.xreadgroup(
                self.cfg.group, consumer, {self.cfg.stream: ">"}, count=count, block=block_ms
            )
        except redis.ResponseError as exc:
            if not _is_error(exc, "NOGROUP"):
                raise
            self.ensure_group()
            return []
        entries = [e for _stream, got in _stream_entries(reply) for e in got]
        return self._parse_or_drop(consumer, [(eid, f, 1) for eid, f in entries])

    def _images(self, entries: Sequence[tuple[Any, Any, int]]) -> list[Any]:
        """Each entry's image hash (HGETALL, one round trip for all); None for an entry
        that carries its image inline or is not a task."""
        keys = [_image_key_of(fields) for _eid, fields, _n in entries]
        wanted = [k for k in keys if k is not None]
        if not wanted:
            return [None] * len(entries)
        with self.r.pipeline(transaction=False) as p:
            for key in wanted:
                p.hgetall(key)
            # a key of the wrong type reads as a missing image, not as a dead worker
            found = iter(p.execute(raise_on_error=False))
        out = [next(found) if k is not None else None for k in keys]
        return [None if isinstance(x, Exception) else x for x in out]

    def _parse_or_drop(self, consumer: str, entries: Sequence[tuple[Any, Any, int]]) -> list[Task]:
        tasks: list[Task] = []
        for (entry_id, fields, deliveries), image in zip(
            entries, self._images(entries), strict=True
        ):
            try:
                tasks.append(parse_entry(entry_id, fields, deliveries, image))
            except ImageMissing as exc:
                if not self._finished(_s(entry_id), fields):
                    self._bury(consumer, _s(entry_id), None, fields, str(exc), deliveries)
            except QueueError as exc:
                # Not a task: nothing can run it, so it is dead-lettered.
                self._bury(consumer, _s(entry_id), None, fields or {}, str(exc), deliveries)
        return tasks

    def _finished(self, entry_id: str, fields: Mapping[Any, Any]) -> bool:
        """For an entry whose image is gone: was the task finished meanwhile? Then the entry
        is acked (and deleted) and nothing else happens. It was when its result is final
        (another worker completed it between our claim and our read of the image, or this
        entry is a duplicate of a task already done) or its entry is gone. Complete and
        dead-letter write the result, delete the entry and the image in one transaction, so
        one snapshot of result and entry tells."""
        tid = _s({_s(k): v for k, v in fields.items()}["id"])
        with self.r.pipeline(transaction=True) as p:
            p.get(result_key(tid))
            p.xrange(self.cfg.stream, entry_id, entry_id)
            raw, rows = p.execute()
        try:
            status = (parse_result(raw) or {}).get("status")
        except ValueError:
            status = None
        if status not in ("completed", "failed") and rows:
            return False
        with self.r.pipeline(transaction=True) as p:
            p.xack(self.cfg.stream, self.cfg.group, entry_id)
            p.xdel(self.cfg.stream, entry_id)
            p.execute()
        return True

    def reclaim(self, consumer: str, count: int) -> list[Task]:
        """Take over entries idle past the visibility timeout; dead-letter the exhausted ones.

        Returns the tasks ``consumer`` should now run.
        """
        reply = self.r.xautoclaim(
            self.cfg.stream,
            self.cfg.group,
            consumer,
            self.cfg.visibility_ms,
            start_id=self._reclaim_cursor,
            count=count,
        )
        self._reclaim_cursor = _s(reply[0])
        entries = [(e[0], e[1]) for e in reply[1]]
        if not entries:
            return []
        counts = self._delivery_counts(consumer, [_s(e[0]) for e in entries])
        runnable: list[tuple[Any, Any, int]] = []
        for entry_id, fields in entries:
            eid = _s(entry_id)
            deliveries = counts.get(eid, 1)
            if fields is None:  # deleted while pending (6.2 reports it this way): just drop it
                self.r.xack(self.cfg.stream, self.cfg.group, eid)
                continue
            if deliveries > self.cfg.max_deliveries:
                reason = (
                    f"delivered {deliveries - 1} times without completing (max_deliveries "
                    f"{self.cfg.max_deliveries}): each worker holding it died or held it past "
                    f"the visibility timeout of {self.cfg.visibility_ms / 1000:g} s"
                )
                self._bury(consumer, eid, None, fields, reason, deliveries - 1)
                continue
            runnable.append((entry_id, fields, deliveries))
        return self._parse_or_drop(consumer, runnable)

    def _delivery_counts(self, consumer: str, ids: Sequence[str]) -> dict[str, int]:
        rows = self.r.xpending_range(
            self.cfg.stream,
            self.cfg.group,
            min=min(ids, key=_id_key),
            max=max(ids, key=_id_key),
            count=len(ids) + 100,
            consumername=consumer,
        )
        wanted = set(ids)
        return {
            _s(row["message_id"]): int(row["times_delivered"])
            for row in rows
            if _s(row["message_id"]) in wanted
        }

    def complete(
        self,
        consumer: str,
        outcomes: Sequence[Outcome],
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Store results, then ack and delete the entries, in one transaction.

        ``metrics``: increments to the shared metrics hash: an int field is a counter
        (HINCRBY), a float field a sum (HINCRBYFLOAT); a field keeps its type for good.
        """
        if not outcomes:
            return
        t = now_ms()
        ids = [o.task.entry_id for o in outcomes]
        done = [(o.task.task_id, o.to_json(consumer, t)) for o in outcomes]
        with self.r.pipeline(transaction=True) as p:
            for task_id, body in done:
                p.set(result_key(task_id), body, ex=self.cfg.result_ttl_s)
            p.xack(self.cfg.stream, self.cfg.group, *ids)
            p.xdel(self.cfg.stream, *ids)
            p.delete(*(image_key(tid) for tid, _ in done))
            self._notify(p, done)
            _add_metrics(p, metrics or {})
            p.execute()

    def add_metrics(self, metrics: Mapping[str, float]) -> None:
        """Write increments to the shared metrics hash on their own (no results with them)."""
        if metrics:
            with self.r.pipeline(transaction=True) as p:
                _add_metrics(p, metrics)
                p.execute()

    def _notify(self, p: Any, done: Sequence[tuple[str, str | None]]) -> None:
        """One done-stream entry: ``ids`` (comma-separated) and each result under its task id
        (so a waiting API request needs no GET); ``None``: the result is only in its key."""
        fields: dict[str, str] = {"ids": ",".join(tid for tid, _ in done)}
        fields.update((tid, body) for tid, body in done if body is not None)
        p.xadd(self.cfg.done_stream, fields, maxlen=C.DONE_STREAM_MAXLEN, approximate=True)

    def _bury(
        self,
        consumer: str,
        entry_id: str,
        task_id: str | None,
        fields: Mapping[Any, Any],
        reason: str,
        deliveries: int,
    ) -> None:
        f = {_s(k): v for k, v in (fields or {}).items()}
        tid = task_id or (_s(f["id"]) if "id" in f else "")
        dead: dict[str, Any] = dict(f)
        if "img" not in f and "n" in f and is_task_id(tid):  # the dead letter keeps the image
            import redis

            with contextlib.suppress(QueueError, KeyError, ValueError, redis.ResponseError):
                dead["img"] = join_image(f, self.r.hgetall(image_key(tid)))
                del dead["n"]
        dead.update(
            {
                "entry": entry_id,
                "reason": reason,
                "deliveries": deliveries,
                "dead_ms": now_ms(),
                "consumer": consumer,
            }
        )
        with self.r.pipeline(transaction=True) as p:
            p.xadd(self.cfg.dead_stream, dead, maxlen=C.DEAD_STREAM_MAXLEN, approximate=True)
            if is_task_id(tid):
                failed = {
                    "id": tid,
                    "status": "failed",
                    "error": reason,
                    "dead_letter": True,
                    "deliveries": deliveries,
                    "finished_ms": now_ms(),
                }
                p.set(result_key(tid), json.dumps(failed), ex=self.cfg.result_ttl_s)
                p.delete(image_key(tid))
                self._notify(p, [(tid, None)])
            p.xack(self.cfg.stream, self.cfg.group, entry_id)
            p.xdel(self.cfg.stream, entry_id)
            p.hincrby(C.METRICS_KEY, "tasks_dead", 1)
            p.execute()

    def prune_consumers(self, older_than_ms: int, alive: set[str]) -> list[str]:
        """Forget consumers with nothing pending, idle past ``older_than_ms`` and no heartbeat."""
        import redis

        try:
            rows = self.r.xinfo_consumers(self.cfg.stream, self.cfg.group)
        except redis.ResponseError:
            return []
        gone = []
        for row in rows:
            name = _s(row["name"])
            if int(row["pending"]) == 0 and int(row["idle"]) > older_than_ms and name not in alive:
                self.r.xgroup_delconsumer(self.cfg.stream, self.cfg.group, name)
                gone.append(name)
        return gone

    def holding(self, consumer: str) -> int:
        """How many entries ``consumer`` has claimed and not acked."""
        rows = self.r.xpending_range(
            self.cfg.stream, self.cfg.group, "-", "+", 1, consumername=consumer
        )
        return len(rows)

    def forget(self, consumer: str) -> bool:
        """Remove ``consumer`` from the group if it holds nothing (a clean shutdown)."""
        if self.holding(consumer):
            return False
        self.r.xgroup_delconsumer(self.cfg.stream, self.cfg.group, consumer)
        return True

    def heartbeat(self, consumer: str, info: Mapping[str, Any], ttl_s: int) -> None:
        body = dict(info, consumer=consumer, ts_ms=now_ms())
        self.r.set(heartbeat_key(consumer), json.dumps(body), ex=ttl_s)

    def clear_heartbeat(self, consumer: str) -> None:
        self.r.delete(heartbeat_key(consumer))

    def dead_letters(self, count: int = 20) -> list[dict[str, Any]]:
        """The most recent dead-letter entries, newest first, without their image bytes."""
        rows = self.r.xrevrange(self.cfg.dead_stream, "+", "-", count=count)
        out = []
        for entry_id, fields in rows:
            f = {_s(k): v for k, v in fields.items()}
            image = f.pop("img", b"")
            item = {k: _s(v) for k, v in f.items()}
            item["dead_entry"] = _s(entry_id)
            item["image_bytes"] = str(len(image))
            out.append(item)
        return out


def _add_metrics(p: Any, metrics: Mapping[str, float]) -> None:
    for key, amount in metrics.items():
        if isinstance(amount, int):  # counters; floats (sums) stay floats for good
            p.hincrby(C.METRICS_KEY, key, amount)
        else:
            p.hincrbyfloat(C.METRICS_KEY, key, amount)


def _image_key_of(fields: Mapping[Any, Any] | None) -> str | None:
    """``tk:image:<id>`` for an entry whose image is in pieces; None otherwise."""
    if not fields:
        return None
    f = {_s(k): v for k, v in fields.items()}
    if "img" in f or "n" not in f or "id" not in f or not is_task_id(_s(f["id"])):
        return None
    return image_key(_s(f["id"]))


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _stream_entries(reply: Any) -> list[tuple[Any, list[tuple[Any, Any]]]]:
    """XREADGROUP's reply in RESP2 (list) or RESP3 (dict) shape -> [(stream, entries)]."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(k, v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
    return [(s, entries) for s, entries in reply]
