"""The HTTP API (FastAPI on uvicorn). Never imports torch: it only checks and queues images.

    POST /predict            multipart upload (field ``file``), JSON ``{"image_b64": ...}``,
                             a raw ``image/*`` body, or (only when enabled) JSON
                             ``{"image_path": ...}`` under an allow-listed root -> 202 + task id
    GET  /result/{id}        ?wait=SECONDS long-polls; pending | completed | failed; 404 unknown
    GET  /healthz            the process is alive
    GET  /readyz             Redis answers and at least one worker has a live heartbeat
    GET  /metrics            Prometheus text: queue depth, tasks by outcome, latencies, batches

Long-polls wait on one shared reader of ``tk:tasks:done`` (XREAD BLOCK), not on a spin.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import binascii
import contextlib
import errno
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from redis.exceptions import NoPermissionError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from toolkit.errors import PortInUse, TkError, UsageError
from toolkit.queue import constants as C
from toolkit.queue.protocol import (
    QueueConfig,
    add_enqueue,
    is_task_id,
    new_task_id,
    now_ms,
    parse_result,
    result_key,
)
from toolkit.redis.connect import NOPERM_FIX
from toolkit.serve import images, metrics
from toolkit.serve.admission import DepthGate
from toolkit.serve.groupcommit import GroupCommit

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # pragma: no cover
    from async_timeout import timeout as _timeout  # type: ignore[import-not-found]

log = logging.getLogger("tk.api")

RECHECK_S = 1.0
"""A long-poll re-reads the result at least this often, even without a notification."""

RETRY_AFTER_S = 2

STOP_S = 3.0
"""Shutdown waits at most this long for the done-stream reader, and as long again for the
Redis clients to close: a start-up failure or a signal must end the process, whatever Redis
is doing."""

REPEAT_WARNING_S = 60.0
"""The done-stream reader repeats an unchanged error in the log at most this often."""

READ_RETRY_S = 1.0
"""The done-stream reader tries again this long after a failed read."""


@dataclass(frozen=True)
class ApiConfig:
    client_factory: Callable[[], Any]
    commit_client_factory: Callable[[], Any] | None = None
    """The client the uploads' group commit uses (default: one more ``client_factory()``);
    ``tk api`` gives it one without per-reply timeouts and bounds each commit as a whole by
    ``redis_timeout``."""
    redis_timeout: float = 10.0
    queue: QueueConfig = field(default_factory=QueueConfig)
    max_depth: int = C.MAX_QUEUE_DEPTH
    max_image_bytes: int = C.MAX_IMAGE_BYTES
    max_pixels: int = C.MAX_IMAGE_PIXELS
    allow_roots: tuple[Path, ...] = ()
    token: str | None = None
    default_top_k: int = C.TOP_K

    @property
    def max_body(self) -> int:
        return self.max_image_bytes * 4 // 3 + 64 * 1024


@dataclass(frozen=True)
class Reply:
    """A JSON answer: status, body, extra headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


class ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def _redis_reason(exc: RedisError) -> str:
    """Redis's own message: redis-py prefixes a pipeline's error with the command (image
    bytes included; the async pipeline then writes the exception's args as a tuple): only the
    server's message goes to a client or a log."""
    text = str(exc.args[0] if exc.args else exc).split(" of pipeline caused error: ", 1)[-1]
    if text.startswith("(") and text.endswith(")"):  # the async pipeline writes the args tuple
        with contextlib.suppress(ValueError, SyntaxError):
            inner = ast.literal_eval(text)
            if isinstance(inner, tuple) and inner:
                text = str(inner[0])
    return text


def error_reply(exc: ApiError | RedisError) -> Reply:
    """What a client gets for a refused request (ApiError) or an unreachable Redis (503)."""
    if isinstance(exc, ApiError):
        return Reply(exc.status, _json({"detail": exc.detail}), exc.headers)
    text = _redis_reason(exc)
    log.warning("Redis: %s: %s", type(exc).__name__, text)
    if isinstance(exc, NoPermissionError):  # retrying will not help: the ACL must change
        detail = f"Redis refused the API's user a command ({text}); {NOPERM_FIX}"
        return Reply(503, _json({"detail": detail}))
    detail = f"Redis unavailable ({type(exc).__name__}: {text}); retry later"
    return Reply(503, _json({"detail": detail}), {"Retry-After": str(RETRY_AFTER_S)})


Waiter = asyncio.Future[bytes | None]
"""Set when the task is done: to its result (JSON bytes) when the notification carried it."""


class Notifier:
    """One XREAD BLOCK loop on the done stream wakes every long-poll waiting on those ids,
    handing over the result when the entry carries it (workers put it there)."""

    def __init__(self, client: Any, stream: str) -> None:
        self.r = client
        self.stream = stream
        self.waiters: dict[str, set[Waiter]] = {}
        self.last_id = f"{now_ms() - 1000}-0"
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def register(self, task_id: str) -> Waiter:
        fut: Waiter = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(task_id, set()).add(fut)
        return fut

    def unregister(self, task_id: str, fut: Waiter) -> None:
        futs = self.waiters.get(task_id)
        if futs is not None:
            futs.discard(fut)
            if not futs:
                del self.waiters[task_id]

    def wake(self, fields: dict[Any, Any]) -> None:
        """Wake the waiters of one done-stream entry (``ids`` plus results by task id)."""
        raw = fields.get(b"ids") or fields.get("ids") or b""
        for tid in _s(raw).split(","):
            futs = self.waiters.get(tid)
            if not futs:
                continue
            body = fields.get(tid.encode(), fields.get(tid))
            for fut in futs:
                if not fut.done():
                    fut.set_result(None if body is None else bytes(body))

    def start(self) -> None:
        """Run the reader in a task of the running loop (``stop`` ends it)."""
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name="tk-done-stream-reader")

    async def stop(self, within: float | None = None) -> None:
        """End the reader; wait for it at most ``within`` seconds (default STOP_S; a reader
        still busy then is left to end at its next turn of the loop).

        One ``cancel()`` is not enough: on Python < 3.12 ``asyncio.wait_for``, which
        redis-py awaits while it sends a command (the connection handshake among them),
        swallows a cancellation that lands as the awaited write completes (CPython
        gh-86296), and the reader would then block in XREAD again, for ever. So the loop
        also checks a flag, and the task is cancelled again until it is done."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        within = STOP_S if within is None else within
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not task.done():
            left = deadline - loop.time()
            if left <= 0:
                log.warning(
                    "done-stream reader did not stop within %g s; not waiting for it", within
                )
                return
            task.cancel()
            await asyncio.wait({task}, timeout=min(0.2, left))
        if not task.cancelled() and task.exception() is not None:
            log.warning("done-stream reader ended with %r", task.exception())

    async def run(self) -> None:
        failing = _Repeats()
        while not self._stopping:
            try:
                reply = await self.r.xread({self.stream: self.last_id}, block=2000, count=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failing.warn(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(READ_RETRY_S)
                continue
            failing.recovered()
            for _stream, entries in _entries(reply):
                for entry_id, fields in entries:
                    self.last_id = _s(entry_id)
                    self.wake(fields)


class _Repeats:
    """The done-stream reader's failures in the log: the first, then only a changed error
    or, while the same one goes on, one line a minute with the count since the last."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.logged_at = 0.0
        self.since = 0

    def warn(self, text: str) -> None:
        now = asyncio.get_running_loop().time()
        same = text == self.text
        if same and now - self.logged_at < REPEAT_WARNING_S:
            self.since += 1
            return
        more = f" ({self.since} more failures since it was logged)" if same else ""
        log.warning("done-stream reader: %s%s (retrying every %g s)", text, more, READ_RETRY_S)
        self.text, self.logged_at, self.since = text, now, 0

    def recovered(self) -> None:
        if self.text is not None:
            log.info("done-stream reader: Redis answers again")
            self.text, self.since = None, 0


@contextlib.asynccontextmanager
async def _within(seconds: float) -> AsyncIterator[None]:
    """Bound one whole Redis exchange (for a client without per-reply timeouts): past
    ``seconds`` it is cancelled (redis-py drops the connection) and redis-py's own
    TimeoutError is raised, so the caller answers 503 naming Redis as for any timeout."""
    try:
        async with _timeout(seconds):
            yield
    except asyncio.TimeoutError:
        raise RedisTimeoutError(f"Redis did not answer within {seconds:g} s") from None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _status(raw: Any) -> str | None:
    res = parse_result(raw)
    return None if res is None else res.get("status")


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(k, v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
    return [(s, e) for s, e in reply]


class Service:
    """What the routes call; holds the Redis client and the notifier."""

    def __init__(self, cfg: ApiConfig) -> None:
        self.cfg = cfg
        self.r: Any = cfg.client_factory()
        self._commit_r: Any = (cfg.commit_client_factory or cfg.client_factory)()
        self.notifier = Notifier(cfg.client_factory(), cfg.queue.done_stream)
        self.gate = DepthGate(cfg.max_depth)
        self._refresh: asyncio.Task[None] | None = None
        self._enqueues: GroupCommit[tuple[str, bytes, int, int]] = GroupCommit(
            self._commit_tasks, C.ENQUEUE_GROUP_MAX
        )

    async def _counts(self) -> tuple[int, int, Any, int]:
        """One pipeline: stream length, pending (claimed, not acked) and the oldest pending
        entry's id (0 and None before the group exists), dead-letter stream length."""
        q = self.cfg.queue
        async with self.r.pipeline(transaction=False) as p:
            p.xlen(q.stream)
            p.xpending(q.stream, q.group)
            p.xlen(q.dead_stream)
            length, pending, dead = await p.execute(raise_on_error=False)
        if isinstance(pending, Exception):
            return int(length), 0, None, int(dead)
        return int(length), int(pending["pending"]), pending.get("min"), int(dead)

    async def waiting(self) -> int:
        length, pending, _oldest, _dead = await self._counts()
        return max(0, length - pending)

    async def admit(self) -> None:
        """Backpressure: ApiError 503 (nothing queued) while max_depth tasks or more wait."""
        loop = asyncio.get_running_loop()
        if self.gate.admit():
            if self.gate.stale(loop.time()) and (self._refresh is None or self._refresh.done()):
                self._refresh = asyncio.create_task(self._read_depth_quietly())
            return
        waiting = await self._read_depth()
        if not self.gate.admit():
            raise ApiError(
                503,
                f"queue full: {waiting} tasks waiting (limit {self.cfg.max_depth}); retry later",
                {"Retry-After": str(RETRY_AFTER_S)},
            )

    async def _read_depth(self) -> int:
        token = self.gate.start_read()
        waiting = await self.waiting()
        self.gate.record(waiting, token, asyncio.get_running_loop().time())
        return waiting

    async def _read_depth_quietly(self) -> None:
        """The background refresh: a failed read leaves the estimate as it was (an upper
        bound); the next request that needs the exact figure reports the error."""
        with contextlib.suppress(Exception):
            await self._read_depth()

    async def enqueue(self, image: bytes, top_k: int, task_id: str | None = None) -> str:
        await self.admit()
        tid, t = task_id or new_task_id(), now_ms()
        await self._enqueues.submit((tid, image, top_k, t))
        return tid

    async def _commit_tasks(self, tasks: Sequence[tuple[str, bytes, int, int]]) -> None:
        """One transaction for a group of uploads: each one's pending marker, image, entry."""
        q = self.cfg.queue
        try:
            async with self._commit_r.pipeline(transaction=True) as p:
                for tid, image, top_k, t in tasks:
                    add_enqueue(p, q, tid, image, top_k, t)
                async with _within(self.cfg.redis_timeout):
                    await p.execute()
        finally:  # a depth read that starts from now on sees these (or they failed)
            self.gate.settle(len(tasks))

    async def predict(self, image: bytes, top_k: int, wait: float) -> Reply:
        """Check and queue one image; with ``wait`` > 0 hold on until it is done: 200 and its
        result, else (or on a Redis error once it is queued: never invite a resend) 202 and
        the task id."""
        try:
            images.inspect(image, self.cfg.max_pixels, self.cfg.max_image_bytes)
        except images.ImageRejected as exc:
            raise ApiError(exc.status, exc.message) from None
        tid = new_task_id()
        fut = self.notifier.register(tid) if wait > 0 else None
        try:
            await self.enqueue(image, top_k, tid)
        except BaseException:
            if fut is not None:
                self.notifier.unregister(tid, fut)
            raise
        if fut is not None:
            try:
                raw = await self.result(tid, wait, fut)
            except RedisError as exc:
                log.warning("Redis, waiting for %s: %s", tid, exc)
            else:
                if _status(raw) != "pending":
                    return Reply(200, raw)
        url = f"/result/{tid}"
        body = {"id": tid, "status": "pending", "result_url": url}
        return Reply(202, _json(body), {"Location": url})

    async def result(self, task_id: str, wait: float, fut: Waiter | None = None) -> bytes:
        """The task's stored JSON once it is final, or as it stands when ``wait`` runs out.

        ``fut``: a notification registered before the task was queued (POST ?wait): the
        first read is skipped, since the task cannot be done before it is queued.
        """
        if not is_task_id(task_id):
            raise ApiError(404, f"unknown task id {task_id[:80]!r}: ids are 32 hex digits")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(wait, 0.0), C.MAX_WAIT_S)
        just_queued = fut is not None
        while True:
            if fut is None and wait > 0:
                fut = self.notifier.register(task_id)
            try:
                raw = None if just_queued else await self._read(task_id)
                just_queued = False
                if raw is not None and (fut is None or _status(raw) != "pending"):
                    return raw
                assert fut is not None  # wait > 0 here: a waiter is registered
                left = deadline - loop.time()
                if left <= 0:  # the wait is spent: what was just read, or a last read
                    return raw if raw is not None else await self._read(task_id)
                with contextlib.suppress(asyncio.TimeoutError):
                    body = await asyncio.wait_for(fut, min(left, RECHECK_S))
                    if body is not None:  # the notification carried the result
                        return body
                if loop.time() >= deadline:
                    return await self._read(task_id)
            finally:
                if fut is not None:
                    self.notifier.unregister(task_id, fut)
                    fut = None

    async def _read(self, task_id: str) -> bytes:
        raw = await self.r.get(result_key(task_id))
        if raw is None:
            raise ApiError(404, f"unknown task id {task_id}: never queued, or expired")
        return bytes(raw)

    async def live_workers(self) -> int:
        n = 0
        async for _key in self.r.scan_iter(match=C.HEARTBEAT_PREFIX + "*", count=100):
            n += 1
        return n

    async def gauges(self) -> dict[str, tuple[str, float]]:
        length, n_pending, oldest, dead = await self._counts()
        age = (now_ms() - int(_s(oldest).split("-")[0])) / 1000 if oldest and n_pending else 0
        return {
            "tk_queue_waiting": ("tasks waiting to be claimed", max(0, length - n_pending)),
            "tk_queue_pending": ("tasks claimed by a worker, not yet acked", n_pending),
            "tk_queue_oldest_pending_age_seconds": ("age of the oldest claimed task", age),
            "tk_queue_dead": ("entries in the dead-letter stream", dead),
            "tk_workers_live": ("workers with a live heartbeat", await self.live_workers()),
        }

    def read_allowed_path(self, raw: Any) -> bytes:
        if not self.cfg.allow_roots:
            raise ApiError(403, "image_path is disabled on this server; upload the image instead")
        if not isinstance(raw, str) or not raw:
            raise ApiError(400, "image_path must be a non-empty string")
        path = Path(raw)
        if not path.is_absolute():
            raise ApiError(400, f"image_path must be absolute, got {raw[:200]!r}")
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ApiError(400, f"image_path {raw[:200]!r}: no such file") from None
        roots = [r.resolve() for r in self.cfg.allow_roots]
        if not any(real.is_relative_to(r) for r in roots):
            raise ApiError(403, f"image_path {raw[:200]!r} is outside the allowed roots")
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise ApiError(400, f"image_path {raw[:200]!r}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            if not os.path.isfile(real):
                raise ApiError(400, f"image_path {raw[:200]!r} is not a regular file")
            data = f.read(self.cfg.max_image_bytes + 1)
        return data


def _top_k(raw: Any, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        k = int(raw)
    except (TypeError, ValueError):
        raise ApiError(400, f"top_k must be a whole number, got {str(raw)[:40]!r}") from None
    if not 1 <= k <= C.MAX_TOP_K:
        raise ApiError(400, f"top_k must be between 1 and {C.MAX_TOP_K}, got {k}")
    return k


async def _collect(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The request body from its chunks; 413 as soon as it is known to be over ``limit``."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {int(declared):,} bytes, over the limit of {limit:,}")
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the limit of {limit:,} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def _read_body(request: Any, limit: int) -> bytes:
    body = await _collect(request.stream(), request.headers.get("content-length"), limit)
    request._body = body  # lets request.form() parse what was read
    return body


def _is_raw_image(ctype: str) -> bool:
    return ctype in images.CONTENT_TYPES or ctype == "application/octet-stream"


async def _from_multipart(request: Any, default_k: int) -> tuple[bytes, int]:
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception as exc:
        raise ApiError(400, f"malformed multipart body: {exc}") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "multipart body has no file field named 'file'")
        part_type = (upload.content_type or "").split(";")[0].strip().lower()
        if part_type and not (
            part_type.startswith("image/") or part_type == "application/octet-stream"
        ):
            raise ApiError(415, f"file part has content type {part_type!r}; send an image")
        return await upload.read(), _top_k(form.get("top_k"), default_k)
    finally:
        await form.close()


def _from_json(svc: Service, body: bytes, default_k: int) -> tuple[bytes, int]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "JSON body must be an object with image_b64 (or image_path)")
    k = _top_k(doc.get("top_k"), default_k)
    if "image_b64" in doc:
        if not isinstance(doc["image_b64"], str):
            raise ApiError(400, "image_b64 must be a string of base64")
        try:
            return base64.b64decode(doc["image_b64"], validate=True), k
        except (binascii.Error, ValueError):
            raise ApiError(400, "image_b64 is not valid base64") from None
    if "image_path" in doc:
        return svc.read_allowed_path(doc["image_path"]), k
    raise ApiError(400, "JSON body needs image_b64 (base64 of the image bytes)")


async def _image_from_request(svc: Service, request: Any) -> tuple[bytes, int]:
    """The image bytes and top_k from a multipart or JSON body; ApiError naming the problem.
    (A raw image body never gets here: ``RawUploads`` answers it.)"""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    default_k = _top_k(request.query_params.get("top_k"), svc.cfg.default_top_k)  # ?top_k=
    if ctype not in ("multipart/form-data", "application/json"):
        raise ApiError(
            415,
            f"unsupported content type {ctype or '(none)'!r}: use multipart/form-data, "
            "application/json or image/*",
        )
    body = await _read_body(request, svc.cfg.max_body)
    if ctype == "multipart/form-data":
        return await _from_multipart(request, default_k)
    return _from_json(svc, body, default_k)


_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": C.MAX_TOP_K},
                    },
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image_b64": {"type": "string", "description": "base64 image bytes"},
                        "image_path": {
                            "type": "string",
                            "description": "only when enabled; under an allowed root",
                        },
                        "top_k": {"type": "integer"},
                    },
                }
            },
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def check_token(cfg: ApiConfig, header: str | None) -> None:
    """Raise 401 unless the Authorization header carries the configured bearer token (if any)."""
    if cfg.token is None:
        return
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), cfg.token):
        raise ApiError(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})


def create_app(cfg: ApiConfig) -> Any:
    """The ASGI app to serve: the FastAPI application (routes, auth, limits, error format)
    behind the raw-upload front (``RawUploads``)."""
    from toolkit import __version__

    svc = Service(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        svc.notifier.start()
        try:
            yield
        finally:  # bounded: a shutdown that waits on Redis would hang the process
            await svc.notifier.stop()
            for client in (svc.r, svc._commit_r, svc.notifier.r):
                try:
                    await asyncio.wait_for(client.aclose(), STOP_S)  # never for ever
                except Exception as exc:  # asyncio.TimeoutError among them
                    log.warning("closing a Redis client: %s: %s", type(exc).__name__, exc)

    app = FastAPI(
        title="tk inference API",
        version=__version__,
        description="Queue images for classification; fetch results (long-poll).",
        lifespan=lifespan,
    )
    app.state.service = svc

    @app.exception_handler(ApiError)
    @app.exception_handler(RedisError)
    async def refused(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError | RedisError)
        return _response(error_reply(exc))

    _task_routes(app, svc)
    _ops_routes(app, svc)
    return RawUploads(app, svc)


def _response(reply: Reply) -> Response:
    return Response(reply.body, reply.status, reply.headers, media_type="application/json")


class RawUploads:
    """ASGI front: ``POST /predict`` with a raw image body (what ``tk submit`` and the
    benchmark send) is answered here, without FastAPI's routing and request layers; every
    other request goes to the FastAPI app. Same checks, same answers (``Service.predict``,
    ``error_reply``), about a third less API CPU per upload (BENCHMARKS.md)."""

    def __init__(self, app: FastAPI, svc: Service) -> None:
        self.app = app
        self.svc = svc

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = {k: v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get(b"content-type", "").split(";")[0].strip().lower()
        if not _is_raw_image(ctype):
            return await self.app(scope, receive, send)
        cfg = self.svc.cfg
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        try:
            check_token(cfg, headers.get(b"authorization"))
            wait = _wait_param(query.get("wait"))
            top_k = _top_k(query.get("top_k"), cfg.default_top_k)
            body = await _collect(_asgi_body(receive), headers.get(b"content-length"), cfg.max_body)
            reply = await self.svc.predict(body, top_k, wait)
        except (ApiError, RedisError) as exc:
            reply = error_reply(exc)
        except ClientGone:
            return
        head = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(reply.body)),
        ]
        head += [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": head})
        await send({"type": "http.response.body", "body": reply.body})


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def _asgi_body(receive: Any) -> AsyncIterator[bytes]:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone
        yield msg.get("body", b"")
        if not msg.get("more_body", False):
            return


def _task_routes(app: FastAPI, svc: Service) -> None:
    cfg = svc.cfg

    @app.post("/predict", status_code=202, openapi_extra=_PREDICT_BODY)
    async def predict(request: Request) -> Response:
        """Queue one image; answers 202 with the task id to fetch at /result/{id}.

        ``?wait=SECONDS`` (max 60): hold the request until the task is done and answer 200
        with its result (as GET /result gives it); 202 as above if it is not done by then.
        """
        check_token(cfg, request.headers.get("authorization"))
        wait = _wait_param(request.query_params.get("wait"))
        image, top_k = await _image_from_request(svc, request)
        return _response(await svc.predict(image, top_k, wait))

    @app.get("/result/{task_id}")
    async def result(request: Request, task_id: str, wait: str | None = None) -> Response:
        """The task's status: pending, completed (top-k) or failed (reason); 404 if unknown.

        ``wait``: seconds to hold the request until the task is done (long-poll, max 60).
        """
        check_token(cfg, request.headers.get("authorization"))
        raw = await svc.result(task_id, _wait_param(wait))
        return Response(raw, 200, media_type="application/json")


def _wait_param(raw: str | None) -> float:
    if raw is None or raw == "":
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait < float("inf"):
        raise ApiError(400, f"wait must be a number of seconds (0-60), got {raw[:40]!r}")
    return wait


def _ops_routes(app: FastAPI, svc: Service) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The API process is alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready when Redis answers and at least one worker has a live heartbeat."""
        try:
            await svc.r.ping()
            workers = await svc.live_workers()
        except Exception as exc:
            return JSONResponse({"status": "not ready", "reason": f"Redis: {exc}"}, 503)
        if workers == 0:
            return JSONResponse({"status": "not ready", "reason": "no live worker"}, 503)
        return JSONResponse({"status": "ready", "workers": workers})

    @app.get("/metrics")
    async def metrics_endpoint() -> PlainTextResponse:
        """Prometheus metrics: queue depth, tasks by outcome, latency and batch histograms."""
        stored = await svc.r.hgetall(C.METRICS_KEY)
        text = metrics.render(stored, await svc.gauges())
        return PlainTextResponse(text, media_type=CONTENT_TYPE_LATEST)


def check_port(host: str, port: int) -> None:
    """Raise PortInUse (or another TkError naming the fix) unless uvicorn can listen on
    ``host:port``; binds as asyncio's ``create_server`` does, then lets go."""
    if port == 0:
        return
    where = f"{host}:{port}"
    try:
        addrs = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise UsageError(
            f"cannot listen on {where}: {exc.strerror}",
            fix="give --host an address of this machine (or serve.host in tk.yaml)",
        ) from None
    for family, kind, proto, _name, addr in addrs:
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:  # an address family this host lacks (IPv6): asyncio skips it too
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                raise _bind_error(exc, host, port) from None


def _port_flag() -> str:
    """The flag that picks the API's port: `tk api`'s, or `tk up`'s for an API it started."""
    from toolkit.procs import supervised

    return "--api-port (tk up)" if supervised() else "--port"


def _bind_error(exc: OSError, host: str, port: int) -> TkError:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        from toolkit.redis.server import port_owner

        return PortInUse(
            f"API port {port} is already in use on {host}{port_owner(port)}",
            fix=f"stop that process or pick another with {_port_flag()} (or serve.port in tk.yaml)",
        )
    if exc.errno == errno.EACCES:
        return TkError(
            f"cannot listen on {where}: permission denied",
            fix=f"use a port above 1023 with {_port_flag()} (or serve.port in tk.yaml)",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return UsageError(
            f"cannot listen on {where}: {host} is not an address of this machine",
            fix="give --host an address of this machine (or serve.host in tk.yaml)",
        )
    return TkError(f"cannot listen on {where}: {exc.strerror or exc}")


def serve(cfg: ApiConfig, host: str, port: int, log_level: str = "warning") -> None:
    """Run the API under uvicorn until SIGTERM/SIGINT.

    A port that is taken (or any other start-up failure) raises a TkError; it never leaves
    the process hanging: the shutdown that follows a failed start-up is bounded (STOP_S).
    """
    import uvicorn

    check_port(host, port)  # a taken port: its one error line, nothing logged before it
    log.info("API on http://%s:%d (queue limit %d)", host, port, cfg.max_depth)
    app = create_app(cfg)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # SIGINT, raised again by uvicorn once it has shut down
        if server.started:
            return  # as uvicorn.run: a clean stop
        raise
    except SystemExit:  # uvicorn's start-up failure, already logged (say a lost bind race)
        if server.started:
            raise
    if not server.started:
        raise TkError(
            f"the API did not start on {host}:{port}; the lines above say why",
            fix=f"free the port or pick another with {_port_flag()} (or serve.port in tk.yaml)",
        )


__all__ = ["ApiConfig", "check_port", "create_app", "serve"]
