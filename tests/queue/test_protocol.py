"""The task protocol against real hardened servers (Redis 7.0, Valkey 8.1, Redis 6.2),
connected as the least-privilege ACL users the workers and the API use."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from toolkit.config import Settings
from toolkit.queue import constants as C
from toolkit.queue.client import binary_client
from toolkit.queue.depth import depth
from toolkit.queue.protocol import (
    Outcome,
    QueueConfig,
    QueueFull,
    TaskQueue,
    is_task_id,
    parse_entry,
)


@pytest.fixture
def clients(redis_server: Settings) -> Iterator[dict[str, Any]]:
    made = {u: binary_client(redis_server, u) for u in ("tk-api", "tk-worker", "tk-monitor")}
    yield made
    for c in made.values():
        c.close()


def queues(clients: dict[str, Any], **cfg: Any) -> tuple[TaskQueue, TaskQueue]:
    config = QueueConfig(**cfg)
    worker = TaskQueue(clients["tk-worker"], config)
    worker.ensure_group()
    return TaskQueue(clients["tk-api"], config), worker


def test_enqueue_claim_complete(clients: dict[str, Any]) -> None:
    api, worker = queues(clients)
    ids = [api.enqueue(bytes([i]) * 10, top_k=3) for i in range(5)]
    assert all(is_task_id(t) for t in ids)
    assert api.result(ids[0])["status"] == "pending"  # type: ignore[index]
    assert api.waiting() == 5

    got = worker.claim("w1", count=3, block_ms=100)
    assert [t.task_id for t in got] == ids[:3]
    assert got[0].image == b"\x00" * 10 and got[0].top_k == 3 and got[0].deliveries == 1
    d = depth(clients["tk-monitor"])
    assert (d.waiting, d.pending, d.dead) == (2, 3, 0)
    assert d.oldest_waiting_age_s is not None and d.oldest_pending_age_s is not None
    assert [c.name for c in d.consumers] == ["w1"] and d.consumers[0].pending == 3

    outcomes = [
        Outcome(got[0], "completed", {"top_k": [{"index": 1}]}),
        Outcome(got[1], "failed", error="not an image"),
    ]
    worker.complete("w1", outcomes)
    r0, r1 = api.result(ids[0]), api.result(ids[1])
    assert r0 is not None and r0["status"] == "completed" and r0["top_k"] == [{"index": 1}]
    assert r1 is not None and r1["status"] == "failed" and r1["error"] == "not an image"
    assert 0 < clients["tk-monitor"].ttl(C.RESULT_PREFIX + ids[0]) <= C.RESULT_TTL_S
    # done entries are deleted: the stream holds only work not done
    assert clients["tk-monitor"].xlen(C.TASK_STREAM) == 3
    done = clients["tk-monitor"].xrange(C.DONE_STREAM)
    assert done[-1][1][b"ids"].decode().split(",") == ids[:2]
    # the notification carries each result, exactly as stored (API long-polls need no GET)
    for tid in ids[:2]:
        stored = clients["tk-monitor"].get(C.RESULT_PREFIX + tid)
        assert done[-1][1][tid.encode()] == stored
    assert api.result("0" * 32) is None


def test_claim_waits_then_returns_empty(clients: dict[str, Any]) -> None:
    _, worker = queues(clients)
    t0 = time.monotonic()
    assert worker.claim("w1", count=4, block_ms=200) == []
    assert time.monotonic() - t0 >= 0.15


def test_backpressure_enqueues_nothing(clients: dict[str, Any]) -> None:
    api, worker = queues(clients)
    for _ in range(3):
        api.enqueue(b"x")
    with pytest.raises(QueueFull) as info:
        api.enqueue(b"x", max_depth=3)
    assert info.value.waiting == 3 and "queue full" in info.value.message
    assert clients["tk-monitor"].xlen(C.TASK_STREAM) == 3
    worker.claim("w1", count=1, block_ms=None)  # claimed tasks no longer count as waiting
    api.enqueue(b"x", max_depth=3)


def test_reclaim_from_dead_worker_then_dead_letter(clients: dict[str, Any]) -> None:
    api, worker = queues(clients, visibility_ms=100, max_deliveries=2)
    tid = api.enqueue(b"poison")
    (first,) = worker.claim("doomed-1", count=1, block_ms=100)  # a worker that dies holding it
    assert worker.reclaim("w2", count=10) == []  # not idle long enough yet
    time.sleep(0.15)
    (again,) = worker.reclaim("w2", count=10)
    assert again.task_id == tid and again.entry_id == first.entry_id and again.deliveries == 2
    time.sleep(0.15)  # w2 died too
    worker._reclaim_cursor = "0-0"
    assert worker.reclaim("w3", count=10) == []  # third delivery > max_deliveries: dead letter
    res = api.result(tid)
    assert res is not None and res["status"] == "failed" and res["dead_letter"] is True
    assert "delivered 2 times" in res["error"] and "max_deliveries 2" in res["error"]
    (dead,) = TaskQueue(clients["tk-monitor"]).dead_letters()
    assert dead["id"] == tid and "visibility timeout" in dead["reason"]
    assert dead["image_bytes"] == "6" and dead["deliveries"] == "2"
    d = depth(clients["tk-monitor"])
    assert (d.waiting, d.pending, d.dead) == (0, 0, 1)
    assert clients["tk-monitor"].hgetall(C.METRICS_KEY)[b"tasks_dead"] == b"1"


def test_metrics_written_with_results_or_on_their_own_add_up(clients: dict[str, Any]) -> None:
    """A busy worker writes its metrics with some batches' results and the rest on their own
    at shutdown (``add_metrics``), as the worker user: together they add up."""
    api, worker = queues(clients)
    tid = api.enqueue(b"img")
    (task,) = worker.claim("w1", count=1, block_ms=100)
    worker.complete("w1", [Outcome(task, "completed", {"top_k": []})],
                    {"tasks_completed": 1, "tk_model_latency_seconds:sum": 0.25})  # fmt: skip
    worker.add_metrics({"tasks_completed": 2, "tk_model_latency_seconds:sum": 0.5})
    worker.add_metrics({})  # nothing to write: no round trip, no error
    stored = clients["tk-monitor"].hgetall(C.METRICS_KEY)
    assert stored[b"tasks_completed"] == b"3"
    assert float(stored[b"tk_model_latency_seconds:sum"]) == 0.75
    assert api.result(tid)["status"] == "completed"  # type: ignore[index]


def test_reclaimed_task_completes_once_acked(clients: dict[str, Any]) -> None:
    api, worker = queues(clients, visibility_ms=50)
    tid = api.enqueue(b"img")
    worker.claim("doomed", count=1, block_ms=100)
    time.sleep(0.1)
    (task,) = worker.reclaim("w2", count=10)
    worker.complete("w2", [Outcome(task, "completed", {"top_k": []})])
    assert api.result(tid)["status"] == "completed"  # type: ignore[index]
    time.sleep(0.1)
    assert worker.reclaim("w3", count=10) == []
    assert depth(clients["tk-monitor"]).pending == 0


def test_not_a_task_entry_is_dead_lettered(clients: dict[str, Any]) -> None:
    _, worker = queues(clients)
    clients["tk-worker"].xadd(C.TASK_STREAM, {"junk": "1"})
    assert worker.claim("w1", count=5, block_ms=100) == []
    (dead,) = TaskQueue(clients["tk-monitor"]).dead_letters()
    assert "not a task" in dead["reason"]
    assert depth(clients["tk-monitor"]).pending == 0


def test_heartbeats_show_live_workers(clients: dict[str, Any]) -> None:
    _, worker = queues(clients)
    worker.heartbeat("w1", {"model": "m"}, ttl_s=5)
    d = depth(clients["tk-api"], consumers=False)  # the API can read depth too
    assert d.live_workers == ["w1"]
    worker.clear_heartbeat("w1")
    assert depth(clients["tk-monitor"]).live_workers == []


def test_depth_before_anything_exists(clients: dict[str, Any]) -> None:
    d = depth(clients["tk-monitor"])
    assert (d.waiting, d.pending, d.dead, d.group_exists) == (0, 0, 0, False)


def test_least_privilege(clients: dict[str, Any]) -> None:
    import redis

    for user in ("tk-api", "tk-worker", "tk-monitor"):
        with pytest.raises(redis.exceptions.NoPermissionError):
            clients[user].flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            clients[user].set("other:key", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        clients["tk-api"].xack(C.TASK_STREAM, C.GROUP, "0-1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        clients["tk-monitor"].xadd(C.TASK_STREAM, {"id": "x"})


def test_parse_entry_rejects_junk() -> None:
    from toolkit.queue.protocol import QueueError

    with pytest.raises(QueueError, match="not a task"):
        parse_entry(b"1-0", {b"id": b"x"})
    t = parse_entry(b"1-0", {b"id": b"a" * 32, b"img": b"i", b"t": b"5", b"k": b"2"}, 3)
    assert (t.task_id, t.enqueued_ms, t.top_k, t.deliveries) == ("a" * 32, 5, 2, 3)
    assert json.loads(Outcome(t, "failed", error="e").to_json("w", 9))["error"] == "e"


def test_queue_commands(redis_server: Settings, clients: dict[str, Any]) -> None:
    from tests.helpers import run_tk

    api, worker = queues(clients)
    api.enqueue(b"img")
    worker.claim("w1", count=1, block_ms=None)
    api.enqueue(b"img2")
    worker.heartbeat("w1", {}, ttl_s=5)
    r = run_tk(redis_server.project_dir, "queue", "depth")
    assert r.exit_code == 0, r.output
    assert "waiting   1" in r.output and "pending   1" in r.output and "w1" in r.output
    r = run_tk(redis_server.project_dir, "queue", "depth", "--json")
    figures = json.loads(r.output)
    assert figures["consumers"][0]["name"] == "w1" and figures["live_workers"] == ["w1"]
    r = run_tk(redis_server.project_dir, "queue", "dlq")
    assert r.exit_code == 0 and "0 dead-letter entries" in r.output


def test_waiting_task_costs_its_image_plus_little(
    redis_server: Settings, clients: dict[str, Any]
) -> None:
    """The issue's memory budget: Redis holds a waiting task in at most the image + 2 KB, on
    every server build (jemalloc rounds a 35 KB value up to 40 KB unless it is cut to fit)."""
    import io

    import skimage
    from PIL import Image

    out = io.BytesIO()
    Image.open(skimage.data.__path__[0] + "/chelsea.png").convert("RGB").save(out, "JPEG")
    photo = out.getvalue()
    api, _ = queues(clients)
    admin = binary_client(redis_server, "admin")
    for _ in range(20):  # the stream, its first nodes and the key tables exist
        api.enqueue(photo)
    before = int(admin.info("memory")["used_memory"])
    n = 200
    for _ in range(n):
        api.enqueue(photo)
    per_task = (int(admin.info("memory")["used_memory"]) - before) / n
    allocator = admin.info("memory")["mem_allocator"]
    admin.close()
    assert per_task - len(photo) <= 2048, (allocator, len(photo), per_task)


def test_image_pieces_live_and_die_with_the_task(clients: dict[str, Any]) -> None:
    api, worker = queues(clients)
    photo = bytes(range(256)) * 200  # 51,200 bytes: more than one piece
    tid = api.enqueue(photo)
    monitor = clients["tk-monitor"]
    stored = monitor.hgetall(C.IMAGE_PREFIX + tid)
    assert len(stored) > 1
    assert b"".join(stored[str(i).encode()] for i in range(len(stored))) == photo
    (task,) = worker.claim("w1", count=1, block_ms=100)
    assert task.image == photo
    worker.complete("w1", [Outcome(task, "completed", {"top_k": []})])
    assert monitor.exists(C.IMAGE_PREFIX + tid) == 0  # nothing left behind per task


def test_task_without_its_image_is_dead_lettered(
    redis_server: Settings, clients: dict[str, Any]
) -> None:
    api, worker = queues(clients)
    tid = api.enqueue(b"x" * 100)
    binary_client(redis_server, "admin").delete(C.IMAGE_PREFIX + tid)
    assert worker.claim("w1", count=1, block_ms=100) == []
    res = api.result(tid)
    assert res is not None and res["status"] == "failed"
    assert f"image of task {tid} is missing" in res["error"]
    assert depth(clients["tk-monitor"]).pending == 0


def test_entries_with_the_image_inline_still_run(clients: dict[str, Any]) -> None:
    """Tasks an earlier tk queued (image in the entry) are run after an upgrade."""
    _, worker = queues(clients)
    tid = "b" * 32
    clients["tk-api"].xadd(C.TASK_STREAM, {"id": tid, "img": b"old", "t": 1, "k": 2})
    (task,) = worker.claim("w1", count=1, block_ms=100)
    assert (task.task_id, task.image, task.top_k) == (tid, b"old", 2)
    worker.complete("w1", [Outcome(task, "completed", {"top_k": []})])
    assert clients["tk-monitor"].xlen(C.TASK_STREAM) == 0


def test_reclaim_racing_a_late_complete_keeps_the_result(
    redis_server: Settings, clients: dict[str, Any]
) -> None:
    """Worker A holds a task past the visibility timeout; B takes it over, and A completes
    it before B reads the image: B must leave A's result alone (not dead-letter it)."""
    api, a = queues(clients, visibility_ms=50)
    b = TaskQueue(binary_client(redis_server, "tk-worker"), QueueConfig(visibility_ms=50))
    tid = api.enqueue(b"x" * 5000)
    (task,) = a.claim("A", count=1, block_ms=100)
    time.sleep(0.1)
    counts = b._delivery_counts

    def a_completes_meanwhile(*args: Any, **kw: Any) -> dict[str, int]:
        out = counts(*args, **kw)  # B has XAUTOCLAIMed the entry; A finishes now
        a.complete("A", [Outcome(task, "completed", {"top_k": [{"index": 7}]})])
        return out

    b._delivery_counts = a_completes_meanwhile  # type: ignore[method-assign]
    assert b.reclaim("B", count=10) == []
    res = api.result(tid)
    assert res is not None and res["status"] == "completed" and res["top_k"] == [{"index": 7}]
    d = depth(clients["tk-monitor"])
    assert (d.waiting, d.pending, d.dead) == (0, 0, 0)
    b.r.close()


def test_duplicate_entry_of_a_done_task_is_dropped(clients: dict[str, Any]) -> None:
    """An enqueue that ran twice (a retried transaction whose reply was lost) leaves two
    entries for one task: the second is acked once the first is done, not dead-lettered."""
    api, worker = queues(clients)
    tid = api.enqueue(b"y" * 3000)
    clients["tk-api"].xadd(C.TASK_STREAM, {"id": tid, "t": 1, "k": 5, "n": 1})
    (first,) = worker.claim("w1", count=1, block_ms=100)
    worker.complete("w1", [Outcome(first, "completed", {"top_k": []})])
    assert worker.claim("w1", count=5, block_ms=100) == []  # the duplicate: dropped
    assert api.result(tid)["status"] == "completed"  # type: ignore[index]
    d = depth(clients["tk-monitor"])
    assert (d.waiting, d.pending, d.dead) == (0, 0, 0)


def test_image_key_of_the_wrong_type_is_dead_lettered(
    redis_server: Settings, clients: dict[str, Any]
) -> None:
    api, worker = queues(clients)
    tid = api.enqueue(b"z" * 100)
    admin = binary_client(redis_server, "admin")
    admin.delete(C.IMAGE_PREFIX + tid)
    admin.set(C.IMAGE_PREFIX + tid, "not a hash")
    admin.close()
    ok = api.enqueue(b"w" * 100)
    got = worker.claim("w1", count=5, block_ms=100)  # no exception: the worker keeps going
    assert [t.task_id for t in got] == [ok]
    res = api.result(tid)
    assert res is not None and res["status"] == "failed" and "missing" in res["error"]
