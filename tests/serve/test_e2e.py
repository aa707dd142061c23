"""End to end: real redis-server (hardened), the API and workers as processes, real photos."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serve.stack import SKIMAGE_DATA, Stack, jpeg
from toolkit.queue import constants as C
from toolkit.queue.depth import depth, live_workers
from toolkit.queue.protocol import QueueConfig, TaskQueue

pytestmark = pytest.mark.slow


def test_real_photos_get_the_right_labels(make: Callable[..., Stack]) -> None:
    stack = make()
    stack.start_api()
    stack.start_worker("w1")
    stack.start_worker("w2")
    stack.wait_ready(workers=2)

    images = [str(SKIMAGE_DATA / "chelsea.png"), str(SKIMAGE_DATA / "coffee.png")]

    proc = stack.submit(*images)
    assert proc.returncode == 0, proc.stdout + proc.stderr + stack.logs()
    chelsea, coffee = (json.loads(line) for line in proc.stdout.splitlines())
    assert chelsea["status"] == "completed" and chelsea["model"] == "efficientnet-lite0"
    assert chelsea["top_k"][0]["index"] in range(281, 286), chelsea  # a cat
    assert "cat" in chelsea["top_k"][0]["label"] or chelsea["top_k"][0]["label"] == "tabby"
    assert coffee["top_k"][0]["index"] in (967, 968), coffee  # espresso / cup
    assert len(coffee["top_k"]) == 5 and coffee["model_version"].startswith("efficientnet-lite0")

    # a file that is not an image: that one fails with the API's reason, exit 1
    bad = stack.log_dir / "notes.jpg"
    bad.write_text("not a photo")
    proc = stack.submit(str(bad), images[0])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed, ok = (json.loads(line) for line in proc.stdout.splitlines())
    assert failed["status"] == "error" and "HTTP 415" in failed["error"], failed
    assert ok["status"] == "completed"
    proc = stack.submit(images[1], "--top-k", "2")  # the raw body's ?top_k=
    assert [len(json.loads(line)["top_k"]) for line in proc.stdout.splitlines()] == [2]
    proc = stack.submit(images[0], "--top-k", "4", as_json=False)  # a human asks for 4 labels
    assert proc.returncode == 0 and proc.stdout.startswith(f"{images[0]}: completed (task ")
    labels = proc.stdout.split("): ", 1)[1].split(", ")
    assert len(labels) == 4 and "cat" in labels[0], proc.stdout

    # JSON with base64 bytes works too
    import base64

    body = {"image_b64": base64.b64encode(jpeg("coffee.png")).decode(), "top_k": 2}
    r = httpx.post(stack.url + "/predict", json=body, timeout=30)
    assert r.status_code == 202 and r.headers["location"] == f"/result/{r.json()['id']}"
    res = stack.result(r.json()["id"])
    assert res["status"] == "completed" and len(res["top_k"]) == 2
    assert res["top_k"][0]["index"] in (967, 968)

    # POST ?wait: one request answers with the result; a bad wait is refused by name
    r = httpx.post(stack.url + "/predict", params={"wait": 30}, json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed" and r.json()["top_k"][0]["index"] in (967, 968)
    done_id = r.json()["id"]
    assert stack.result(done_id) == r.json()  # the same stored result
    r = httpx.post(stack.url + "/predict", params={"wait": "soon"}, json=body, timeout=30)
    assert r.status_code == 400 and "wait must be a number" in r.json()["detail"]
    for wait in ("soon", "-1", "nan"):  # GET /result validates wait the same way
        r = httpx.get(f"{stack.url}/result/{done_id}", params={"wait": wait}, timeout=30)
        assert r.status_code == 400 and "wait must be a number" in r.json()["detail"], r.text
    assert httpx.get(f"{stack.url}/result/{done_id}", params={"wait": "2.5"}).status_code == 200

    metrics = httpx.get(stack.url + "/metrics").text
    assert 'tk_tasks_total{outcome="completed"} 7' in metrics  # the 7 photos above that completed
    assert "tk_workers_live 2" in metrics and "tk_batch_size_bucket" in metrics
    assert httpx.get(stack.url + "/openapi.json").json()["paths"]["/predict"]
    # the API process never loads torch
    assert stack.rss_mb("api") < 150
    import psutil

    maps = {m.path for m in psutil.Process(stack.procs["api"].pid).memory_maps()}
    assert not any("libtorch" in p for p in maps)


def _post_many(stack: Stack, data: bytes, n: int) -> list[str]:
    with httpx.Client(base_url=stack.url, timeout=30) as client:

        def one(_: int) -> str:
            r = client.post("/predict", files={"file": ("i.jpg", data, "image/jpeg")})
            assert r.status_code == 202, r.text
            return str(r.json()["id"])

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(n)))


def _wait_all(stack: Stack, ids: list[str], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    statuses = ["pending"] * len(ids)
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        for i, tid in enumerate(ids):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r = client.get(f"/result/{tid}", params={"wait": min(10.0, left)})
            statuses[i] = r.json()["status"]
    return statuses


def test_sigkill_mid_run_loses_nothing_and_sigterm_drains(make: Callable[..., Stack]) -> None:
    stack = make(TK_QUEUE_VISIBILITY_MS="1500")
    stack.start_api()
    stack.start_worker("victim")
    stack.start_worker("survivor")
    stack.wait_ready(workers=2)
    ids = _post_many(stack, jpeg("chelsea.png", size=128, quality=80), 500)

    mon = stack.redis("tk-monitor")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill the victim mid-run, holding tasks
        d = depth(mon)
        held = {c.name: c.pending for c in d.consumers}
        if d.waiting < 400 and held.get("victim", 0) > 0:
            break
        time.sleep(0.02)
    stack.signal("victim", signal.SIGKILL)
    assert stack.procs["victim"].wait(10) == -signal.SIGKILL
    lost = held.get("victim", 0)
    assert lost > 0

    statuses = _wait_all(stack, ids, timeout=90)
    assert statuses.count("completed") == 500, (depth(mon), stack.logs())
    d = depth(mon)
    assert (d.waiting, d.pending, d.dead) == (0, 0, 0)
    deadline = time.monotonic() + C.HEARTBEAT_TTL_S + 2  # its heartbeat key expires
    while "victim" in depth(mon).live_workers and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "victim" not in depth(mon).live_workers

    # SIGTERM with work in hand: the survivor finishes its batch and exits 0
    more = _post_many(stack, jpeg("coffee.png", size=128), 40)
    time.sleep(0.3)
    stack.signal("survivor", signal.SIGTERM)
    assert stack.procs["survivor"].wait(30) == 0, stack.logs()
    d = depth(mon)
    assert d.pending == 0 and d.live_workers == [], d
    done = sum(TaskQueue(mon).result(t)["status"] == "completed" for t in more)  # type: ignore[index]
    assert done + d.waiting == 40


def test_poison_task_is_dead_lettered_and_workers_keep_serving(
    make: Callable[..., Stack],
) -> None:
    stack = make(TK_QUEUE_VISIBILITY_MS="300", TK_QUEUE_MAX_DELIVERIES="2")
    stack.start_api()
    r = stack.post_image(jpeg("chelsea.png", size=64))
    poison = r.json()["id"]
    # Two workers take the task and die holding it (what a poison task does to them).
    w = TaskQueue(stack.redis("tk-worker"), QueueConfig(visibility_ms=300, max_deliveries=2))
    w.ensure_group()
    assert [t.task_id for t in w.claim("crashed-1", 1, 100)] == [poison]
    time.sleep(0.4)
    assert [t.task_id for t in w.reclaim("crashed-2", 1)] == [poison]
    time.sleep(0.4)
    stack.start_worker("w1")
    res = stack.result(poison, wait=60)
    assert res["status"] == "failed" and res["dead_letter"] is True, res
    assert "delivered 2 times" in res["error"] and "max_deliveries 2" in res["error"]

    out = subprocess.run(
        [sys.executable, "-m", "toolkit", "queue", "dlq", "--json"],
        capture_output=True,
        text=True,
        env=stack.env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    (dead,) = json.loads(out.stdout)["entries"]
    assert dead["id"] == poison and "max_deliveries 2" in dead["reason"]
    # the worker keeps serving
    ok = stack.post_image(jpeg("coffee.png")).json()["id"]
    assert stack.result(ok)["status"] == "completed"
    depth_out = subprocess.run(
        [sys.executable, "-m", "toolkit", "queue", "depth", "--json"],
        capture_output=True,
        text=True,
        env=stack.env,
        timeout=60,
    )
    figures = json.loads(depth_out.stdout)
    assert figures["dead"] == 1 and figures["pending"] == 0 and figures["live_workers"] == ["w1"]
    assert C.DEAD_STREAM == "tk:tasks:dead"


@pytest.mark.parametrize(
    ("flags", "decoder"),
    [(["--device", "cpu"], "runner"), (["--decode-threads", "3"], "loader")],
    ids=["cpu-default-decodes-in-runner", "three-loader-threads"],
)
def test_bad_images_fail_alone_and_results_keep_their_images(
    make: Callable[..., Stack], flags: list[str], decoder: str
) -> None:
    """Wherever the worker decodes (on a CPU by default the runner, just before the forward
    pass; with --decode-threads N the loader, on N threads), an undecodable image fails only
    its own task and every result stays with its image."""
    stack = make()
    TaskQueue(stack.redis("tk-worker")).ensure_group()
    q = TaskQueue(stack.redis("tk-api"))
    cat, coffee, bad = jpeg("chelsea.png"), jpeg("coffee.png"), b"\xff\xd8\xff not a jpeg"
    mix = [cat, coffee, bad, cat, coffee, cat, bad, coffee]
    ids = [q.enqueue(img) for img in mix]  # all waiting before the worker claims: one batch
    stack.start_worker("w1", *flags, "--max-batch", "8", "--forward-batch", "8")
    mon = TaskQueue(stack.redis("tk-monitor"))
    deadline = time.monotonic() + 120
    while True:
        got = [mon.result(t) or {"status": "missing"} for t in ids]
        if all(g["status"] in ("completed", "failed") for g in got):
            break
        assert time.monotonic() < deadline, f"{got}\n{stack.logs()}"
        time.sleep(0.2)
    labels = [g["top_k"][0]["index"] if g["status"] == "completed" else "failed" for g in got]
    assert [g["batch_size"] for g in got if g["status"] == "completed"] == [6] * 6, got
    want_cat, want_coffee = range(281, 286), (967, 968)
    for img, label in zip(mix, labels, strict=True):
        if img is bad:
            assert label == "failed"
        else:
            assert label in (want_cat if img is cat else want_coffee), labels
    reasons = {g["error"] for g in got if g["status"] == "failed"}
    assert reasons == {"not an image in a supported format (JPEG, PNG, WEBP, GIF, BMP)"}, got
    beat = live_workers(stack.redis("tk-monitor"))["w1"]  # what `tk status --json` shows
    assert beat["decode_in"] == decoder, beat
