"""``tk submit``'s client: send images to the API concurrently, optionally wait for results."""

from __future__ import annotations

import asyncio
import mimetypes
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.queue import constants as C
from toolkit.serve.images import CONTENT_TYPES

FINAL = ("completed", "failed")


@dataclass
class Submission:
    image: str
    id: str | None = None
    status: str = "error"
    top_k: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    model: str | None = None
    model_version: str | None = None
    seconds: float = 0.0
    unreachable: str | None = None
    """Why the API could not be reached at all (connection refused, unknown host, ...)."""

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "pending")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "image": self.image,
            "id": self.id,
            "status": self.status,
            "top_k": self.top_k,
        }
        if self.model:
            out["model"], out["model_version"] = self.model, self.model_version
        if self.error:
            out["error"] = self.error
        out["seconds"] = round(self.seconds, 3)
        return out


def _detail(resp: Any) -> str:
    try:
        body: Any = resp.json()
        return str(body.get("detail") or body) if isinstance(body, dict) else str(body)
    except ValueError:
        return str(resp.text[:200] or resp.reason_phrase)


def _fill(sub: Submission, body: dict[str, Any]) -> None:
    sub.id = body.get("id", sub.id)
    sub.status = body.get("status", "error")
    sub.top_k = body.get("top_k", [])
    sub.error = body.get("error")
    sub.model, sub.model_version = body.get("model"), body.get("model_version")


async def _one(
    client: Any, path: Path, wait: bool, timeout: float, top_k: int | None
) -> Submission:
    sub = Submission(image=str(path))
    t0 = time.monotonic()
    try:
        data = path.read_bytes()
    except OSError as exc:
        sub.error = f"cannot read {path}: {exc.strerror}"
        return sub
    # The image itself is the body (the API's cheapest form); the API reads the bytes to
    # tell what they are, so a type it does not list goes as octet-stream.
    ctype = mimetypes.guess_type(path.name)[0] or ""
    if ctype not in CONTENT_TYPES:
        ctype = "application/octet-stream"
    try:
        # --wait: one request (POST ?wait) answers with the result when it is done in time;
        # otherwise the 202's task id is long-polled at /result until the timeout.
        first = min(timeout, C.MAX_WAIT_S)
        params = {"wait": f"{first:.1f}"} if wait else {}
        if top_k:
            params["top_k"] = str(top_k)
        resp = await client.post(
            "/predict",
            content=data,
            headers={"content-type": ctype},
            params=params,
            timeout=first + 30 if wait else 30.0,
        )
        if resp.status_code not in (200, 202):
            sub.error = f"HTTP {resp.status_code}: {_detail(resp)}"
            return sub
        _fill(sub, resp.json())
        deadline = t0 + timeout
        while wait and sub.status not in FINAL and time.monotonic() < deadline:
            left = max(0.1, min(30.0, deadline - time.monotonic()))
            r = await client.get(
                f"/result/{sub.id}", params={"wait": f"{left:.1f}"}, timeout=left + 10
            )
            if r.status_code != 200:
                sub.status, sub.error = "error", f"HTTP {r.status_code}: {_detail(r)}"
                break
            _fill(sub, r.json())
        if wait and sub.status == "pending":
            sub.status, sub.error = "timeout", f"no result within {timeout:g} s"
    except Exception as exc:  # network errors: one line, this image only
        import httpx

        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            sub.unreachable = reason
            reason = f"cannot reach the API at {client.base_url}: {reason}"
        sub.status, sub.error = "error", reason
    finally:
        sub.seconds = time.monotonic() - t0
    return sub


async def submit_all(
    url: str,
    paths: list[Path],
    wait: bool,
    timeout: float = 120.0,
    concurrency: int = 8,
    token: str | None = None,
    top_k: int | None = None,
) -> list[Submission]:
    """Submit every image (at most ``concurrency`` at a time); results in input order."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30.0
    ) as client:

        async def guarded(p: Path) -> Submission:
            async with sem:
                return await _one(client, p, wait, timeout, top_k)

        return list(await asyncio.gather(*(guarded(p) for p in paths)))
