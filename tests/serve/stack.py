"""A real stack for tests: hardened redis-server, the API and workers as subprocesses.

Processes are started with ``sys.executable -m toolkit`` against the ``redis_factory``
server and stopped by PID (SIGTERM, then SIGKILL) even when the test failed.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.helpers import free_port
from toolkit.config import Settings

SKIMAGE_DATA = Path(str(__import__("skimage").__file__)).parent / "data"


def photo(name: str) -> bytes:
    """A sample photo shipped inside scikit-image's wheel (no download)."""
    return (SKIMAGE_DATA / name).read_bytes()


def jpeg(name: str = "chelsea.png", size: int | None = None, quality: int = 90) -> bytes:
    from PIL import Image

    img = Image.open(io.BytesIO(photo(name))).convert("RGB")
    if size:
        img = img.resize((size, size))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    log_dir: Path
    api_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    clients: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> int:
        log = (self.log_dir / f"{name}.log").open("wb")
        cmd = [sys.executable, "-m", "toolkit", "-C", str(self.settings.project_dir), *args]
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **(env or {})},
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc.pid

    def start_api(self, **env: str) -> int:
        self.api_port = free_port()
        pid = self._spawn("api", "api", "--port", str(self.api_port), env=env)
        self.wait_http("/healthz", 200)
        return pid

    def start_worker(self, name: str, *args: str, **env: str) -> int:
        return self._spawn(name, "worker", "--name", name, *args, env=env)

    def wait_http(self, path: str, status: int, timeout: float = 60.0) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: Any = None
        r: httpx.Response
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                r = httpx.get(self.url + path, timeout=5)
                last = r
                if r.status_code == status:
                    return r
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"{path} never answered {status}: {last}; logs:\n{self.logs()}")

    def wait_ready(self, workers: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.wait_http("/readyz", 200, timeout=max(1.0, deadline - time.monotonic()))
            if r.json()["workers"] >= workers:
                return
            time.sleep(0.2)
        raise AssertionError(f"fewer than {workers} workers ready; logs:\n{self.logs()}")

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None and name == "api":
                raise AssertionError(f"{name} exited with {p.returncode}:\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for f in sorted(self.log_dir.glob("*.log")):
            parts.append(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def signal(self, name: str, sig: int) -> None:
        os.kill(self.procs[name].pid, sig)

    def redis(self, user: str) -> Any:
        """A binary client as ``user``, closed by ``stop()``."""
        from toolkit.queue.client import binary_client

        client = binary_client(self.settings, user)
        self.clients.append(client)
        return client

    def stop(self) -> None:
        for c in self.clients:
            with contextlib.suppress(Exception):
                c.close()
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(p.pid).children(recursive=True):
                        child.kill()
                p.kill()
                p.wait(timeout=10)

    def rss_mb(self, name: str) -> float:
        return psutil.Process(self.procs[name].pid).memory_info().rss / 2**20

    def post_image(
        self, data: bytes, ctype: str = "image/jpeg", raw: bool = False, **kw: Any
    ) -> httpx.Response:
        """POST /predict as a multipart upload, or with ``raw`` as the body itself (the
        form `tk submit` sends, answered by the API's RawUploads front)."""
        if raw:
            headers = {"content-type": ctype, **kw.pop("headers", {})}
            return httpx.post(
                self.url + "/predict", content=data, headers=headers, timeout=30, **kw
            )
        files = {"file": ("img", data, ctype)}
        return httpx.post(self.url + "/predict", files=files, timeout=30, **kw)

    def submit(self, *paths: str, as_json: bool = True) -> subprocess.CompletedProcess[str]:
        """`tk submit PATHS --wait [--json]` as a user runs it, against this stack."""
        argv = [sys.executable, "-m", "toolkit", "submit", *paths, "--wait"]
        argv += ["--json"] if as_json else []
        return subprocess.run([*argv, "--url", self.url], capture_output=True, text=True,
                              timeout=120, env=self.env)  # fmt: skip

    def result(self, task_id: str, wait: float = 30.0) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/result/{task_id}", params={"wait": wait}, timeout=wait + 30)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def make_stack(settings: Settings, tmp: Path, **env: str) -> Stack:
    """A Stack bound to a started redis server; TK_* env carries the settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TK_")}
    base.update(
        TK_PROJECT_DIR=str(settings.project_dir),
        TK_REDIS_PORT=str(settings.redis_port),
        TK_SERVE_WORKERS="2",
        PYTHONUNBUFFERED="1",
    )
    base.update(env)
    log_dir = tmp / "logs"
    log_dir.mkdir(exist_ok=True)
    return Stack(settings, base, log_dir)
