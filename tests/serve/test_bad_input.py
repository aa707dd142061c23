"""Bad input gets a 4xx naming the problem, and the workers keep serving."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.serve.stack import Stack, jpeg
from toolkit.queue.protocol import TaskQueue

pytestmark = pytest.mark.slow


def _png_20k() -> bytes:
    """A real 20,000 x 20,000 PNG (one colour: a few hundred KB, 400 MP when decoded)."""
    import struct
    import zlib

    w = h = 20_000
    row = b"\x00" + b"\x00" * (w * 3)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _expect(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    for w in words:
        assert w in detail, (w, detail)


def test_bad_inputs_get_4xx_and_workers_keep_serving(
    make: Callable[..., Stack], tmp_path: Path
) -> None:
    allowed = tmp_path / "images"
    allowed.mkdir()
    (allowed / "cat.jpg").write_bytes(jpeg("chelsea.png"))
    (tmp_path / "secret.jpg").write_bytes(jpeg("coffee.png"))
    (allowed / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    stack = make(TK_SERVE_ALLOW_PATHS=str(allowed), TK_SERVE_MAX_IMAGE_BYTES="2mb")
    stack.start_api()
    stack.start_worker("w1")
    stack.wait_ready(workers=1)
    post = stack.url + "/predict"
    good = jpeg("chelsea.png")

    for raw in (False, True):  # multipart (FastAPI) and a raw body (the RawUploads front)
        _expect(stack.post_image(b"hello, not an image", "image/png", raw), 415, "not an image")
        _expect(stack.post_image(good[: len(good) // 2], raw=raw), 400, "truncated JPEG")
        _expect(stack.post_image(_png_20k(), "image/png", raw), 413, "20000x20000", "pixels")
        _expect(stack.post_image(good, raw=raw, params={"wait": "soon"}), 400, "wait must be")
        _expect(stack.post_image(good, raw=raw, params={"top_k": 0}), 400, "top_k must be")
    big = b"\xff" * (4 * 1024 * 1024)
    _expect(
        httpx.post(post, content=big, headers={"content-type": "image/jpeg"}), 413, "over the limit"
    )
    _expect(
        httpx.post(
            post, content=b'{"image_b64": "abc', headers={"content-type": "application/json"}
        ),
        400,
        "malformed JSON",
    )
    _expect(httpx.post(post, json={"image_b64": "***"}), 400, "not valid base64")
    _expect(httpx.post(post, json={"image_path": "/etc/passwd"}), 403, "outside the allowed")
    _expect(
        httpx.post(post, json={"image_path": str(allowed / "link.jpg")}), 403, "outside the allowed"
    )
    _expect(
        httpx.post(post, json={"image_path": str(allowed / "../secret.jpg")}),
        403,
        "outside the allowed",
    )
    _expect(httpx.post(post, json={"image_path": str(allowed / "nope.jpg")}), 400, "no such")
    _expect(
        httpx.post(post, content=b"x", headers={"content-type": "text/plain"}),
        415,
        "unsupported content type",
    )
    _expect(
        httpx.post(post, json={"image_b64": base64.b64encode(good).decode(), "top_k": 99}),
        400,
        "top_k",
    )
    files = {"file": ("a.txt", b"abc", "text/plain")}
    _expect(httpx.post(post, files=files), 415, "content type")
    _expect(httpx.post(post, files={"other": ("a.jpg", good, "image/jpeg")}), 400, "'file'")
    _expect(httpx.get(stack.url + "/result/" + "0" * 32), 404, "unknown task id")
    _expect(httpx.get(stack.url + "/result/../../etc"), 404, "")
    _expect(httpx.get(stack.url + "/result/nothex"), 404, "unknown task id")

    # allowed path works
    r = httpx.post(post, json={"image_path": str(allowed / "cat.jpg")})
    assert r.status_code == 202, r.text
    assert stack.result(r.json()["id"])["top_k"][0]["index"] in range(281, 286)

    # A bad image that slips past the API (queued directly) fails alone, with its reason;
    # the good tasks around it complete.
    q = TaskQueue(stack.redis("tk-api"))
    ids = [q.enqueue(good), q.enqueue(b"\x89PNG\r\n\x1a\n garbage"), q.enqueue(good)]
    results = [stack.result(t) for t in ids]
    assert [r["status"] for r in results] == ["completed", "failed", "completed"], results
    assert "unreadable image" in results[1]["error"]

    # the worker is still serving
    ok = stack.post_image(jpeg("coffee.png"))
    assert stack.result(ok.json()["id"])["status"] == "completed"
    assert stack.procs["w1"].poll() is None


def test_backpressure_and_bearer_token(make: Callable[..., Stack], tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    stack = make(TK_QUEUE_MAX_DEPTH="3", TK_SERVE_TOKEN_FILE=str(token))
    stack.start_api()  # no worker: tasks stay waiting
    auth = {"Authorization": "Bearer s3cret-token"}
    img = jpeg("coffee.png", size=64)
    for raw in (False, True):
        _expect(stack.post_image(img, raw=raw), 401, "bearer token")
        _expect(stack.post_image(img, raw=raw, headers={"Authorization": "Bearer x"}), 401, "token")
    # POST ?wait with no worker: held for the wait, then the usual 202 with the task id
    t0 = time.monotonic()
    r = stack.post_image(img, headers=auth, params={"wait": 0.5})
    assert r.status_code == 202 and r.json()["status"] == "pending", r.text
    assert time.monotonic() - t0 >= 0.5
    ids = [r.json()["id"]] + [stack.post_image(img, headers=auth).json()["id"] for _ in range(2)]
    for raw in (False, True):
        r = stack.post_image(img, raw=raw, headers=auth)
        _expect(r, 503, "queue full", "3 tasks waiting")
        assert r.headers["retry-after"].isdigit()
    mon = stack.redis("tk-monitor")
    assert mon.xlen("tk:tasks") == 3  # nothing enqueued by the refused request
    gauges = httpx.get(stack.url + "/metrics").text
    for line in ("tk_queue_waiting 3", "tk_queue_pending 0", "tk_queue_dead 0"):
        assert f"\n{line}" in gauges, (line, gauges[:400])
    got = httpx.get(f"{stack.url}/result/{ids[0]}", params={"wait": 0.5}, headers=auth)
    assert got.status_code == 200 and got.json()["status"] == "pending"
    ready = httpx.get(stack.url + "/readyz")
    assert ready.status_code == 503 and json.loads(ready.text)["reason"] == "no live worker"
    assert httpx.get(stack.url + "/healthz").status_code == 200
