"""The API under many simultaneous clients, and with its Redis gone: every request gets an
HTTP answer (no reset connection), nothing accepted is lost, and the errors name Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from tests.serve.stack import Stack, jpeg
from toolkit.queue import constants as C
from toolkit.redis import server as srv

pytestmark = pytest.mark.slow


def test_hundreds_of_simultaneous_uploads_are_all_queued(make: Callable[..., Stack]) -> None:
    stack = make()
    stack.start_api()  # no worker: every accepted task stays waiting, countable
    data, n = jpeg("chelsea.png"), 400

    async def burst() -> list[int | str]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=stack.url, limits=limits, timeout=60) as client:

            async def one() -> int | str:
                try:
                    r = await client.post("/predict", content=data,
                                          headers={"content-type": "image/jpeg"})  # fmt: skip
                except httpx.HTTPError as exc:
                    return f"{type(exc).__name__}: {exc}"
                return r.status_code

            return list(await asyncio.gather(*(one() for _ in range(n))))

    answers = asyncio.run(burst())
    assert answers == [202] * n, {a: answers.count(a) for a in set(answers)}
    assert stack.redis("tk-monitor").xlen(C.TASK_STREAM) == n  # every 202 is a queued task


def test_redis_gone_gets_503_naming_redis_and_the_api_stays_up(
    make: Callable[..., Stack],
) -> None:
    stack = make()
    stack.start_api()
    queued = stack.post_image(jpeg("chelsea.png")).json()["id"]
    srv.stop(stack.settings, timeout=10)

    for raw in (False, True):
        r = stack.post_image(jpeg("chelsea.png"), raw=raw)
        assert r.status_code == 503 and "Redis" in r.json()["detail"], r.text
        assert r.headers["retry-after"]
    r = httpx.get(f"{stack.url}/result/{queued}", timeout=30)
    assert r.status_code == 503 and "Redis" in r.json()["detail"], r.text
    assert httpx.get(stack.url + "/readyz", timeout=30).status_code == 503
    assert httpx.get(stack.url + "/healthz", timeout=30).status_code == 200
    assert stack.procs["api"].poll() is None


def test_a_frozen_redis_gets_503_within_the_redis_timeout_not_a_hung_upload(
    make: Callable[..., Stack],
) -> None:
    """The uploads' group commit reads its replies without redis-py's per-reply timeout (a
    tenth of the API's CPU per upload); the commit as a whole is bounded instead. Redis
    stopped dead (SIGSTOP: the connection stays open, nothing answers): the upload still
    gets its 503 naming Redis after about redis.timeout, and once Redis runs again so do
    uploads."""
    stack = make(TK_REDIS_TIMEOUT="1.5")
    stack.start_api()
    assert stack.post_image(jpeg("chelsea.png"), raw=True).status_code == 202
    pid = srv.status(stack.settings)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = stack.post_image(jpeg("chelsea.png"), raw=True)
        took = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert r.status_code == 503 and "Redis did not answer within 1.5 s" in r.json()["detail"]
    assert 1.4 < took < 10, took
    deadline = time.monotonic() + 30
    while (r := stack.post_image(jpeg("chelsea.png"), raw=True)).status_code != 202:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    # the timed-out transaction may still run: Redis reads it once it runs again
    assert stack.redis("tk-monitor").xlen(C.TASK_STREAM) in (2, 3)


def test_a_refused_enqueue_names_harden_and_keeps_image_bytes_out(
    make: Callable[..., Stack],
) -> None:
    """A server whose ACL no longer lets the API user write image pieces (users.acl saved
    by hand, say): 503 naming the fix, no retry invitation, no command echo in the detail."""
    stack = make()
    stack.start_api()
    stack.redis("admin").acl_setuser("tk-api", enabled=True, commands=["-hset"])
    r = stack.post_image(jpeg("chelsea.png"), raw=True)
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    assert "refused the API's user a command" in detail and "tk redis harden" in detail
    assert "retry-after" not in r.headers
    assert "of pipeline" not in detail and "Command #" not in detail and "((" not in detail
    assert stack.redis("tk-monitor").xlen(C.TASK_STREAM) == 0  # nothing half-queued
