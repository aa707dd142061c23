"""`tk api` start-up and shutdown: a taken port is one error line and exit 1, a signal
stops it promptly whatever Redis does, and the API's shutdown can never hang on Redis.

The processes are real `tk api` subprocesses, each in its own session, killed (the whole
group) at teardown even when the test failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port
from tests.serve.stack import Stack
from toolkit.errors import PortInUse
from toolkit.serve import api

PROMPT_S = 8.0
"""A failed start-up or a signal must end `tk api` within this (it used to hang for ever)."""


@contextlib.contextmanager
def listening() -> Iterator[socket.socket]:
    """A socket listening on a free port of 127.0.0.1 that never answers: a port in use,
    or, as a Redis URL, a Redis that accepts connections and says nothing."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock


@contextlib.contextmanager
def tk_api(project: Path, port: int, redis: dict[str, str], *pre: str) -> Iterator[Proc]:
    """`tk -C PROJECT api --port PORT`, ``redis``: the TK_REDIS_* variables to reach it;
    ``pre``: Python run first, in the process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TK_")}
    env.update(TK_PROJECT_DIR=str(project), PYTHONUNBUFFERED="1", **redis)
    code = "\n".join([*pre, "from toolkit.cli import app", "app()"])
    argv = [sys.executable, "-c", code, "-C", str(project), "api", "--port", str(port)]
    log = project / f"api-{port}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=out, env=env,
                                 start_new_session=True)  # fmt: skip
    proc = Proc(popen, log)
    try:
        yield proc
    finally:
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(10)


class Proc:
    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = PROMPT_S) -> int:
        """The exit status; fails (naming what it printed) if it runs past ``timeout``."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"tk api still running after {timeout} s; stderr:\n{self.stderr}")

    def wait_until_up(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen.poll() is None, f"tk api exited:\n{self.stderr}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail(f"tk api never answered /healthz; stderr:\n{self.stderr}")


def refused_redis() -> dict[str, str]:
    return {"TK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # nothing listens there


def test_a_port_in_use_is_one_error_line_and_exit_1(tmp_path: Path) -> None:
    with listening() as taken, tk_api(tmp_path, taken.getsockname()[1], refused_redis()) as p:
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        assert p.wait() == 1, p.stderr
        assert time.monotonic() - t0 < PROMPT_S
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("tk: error:")]
    assert lines == errors and len(errors) == 1, p.stderr  # the one line, nothing before it
    assert f"API port {port} is already in use" in errors[0], errors[0]
    assert "; fix: " in errors[0] and "--port" in errors[0], errors[0]
    assert "Traceback" not in p.stderr and "ERROR:" not in p.stderr, p.stderr


@pytest.mark.parametrize(
    ("redis", "sig", "status"),
    [
        ("refused", signal.SIGTERM, -signal.SIGTERM),  # uvicorn re-raises it once stopped
        ("silent", signal.SIGINT, 0),  # Ctrl-C: a clean stop, as before
        ("silent", signal.SIGTERM, -signal.SIGTERM),
    ],
)
def test_a_signal_stops_the_api_promptly_when_redis_cannot_be_reached(
    tmp_path: Path, redis: str, sig: int, status: int
) -> None:
    port = free_port()
    with contextlib.ExitStack() as stack:
        if redis == "refused":
            env = refused_redis()
        else:  # accepts the connection, never answers the handshake
            silent = stack.enter_context(listening()).getsockname()[1]
            env = {"TK_REDIS_URL": f"redis://127.0.0.1:{silent}/0"}
        p = stack.enter_context(tk_api(tmp_path, port, env))
        p.wait_until_up(port)
        time.sleep(0.5)  # the done-stream reader is mid-connect or retrying
        p.popen.send_signal(sig)
        t0 = time.monotonic()
        assert p.wait() == status, p.stderr
        assert time.monotonic() - t0 < PROMPT_S
    if redis == "refused":  # the reader's failure is logged once, not every second
        assert p.stderr.count("done-stream reader: ConnectionError") == 1, p.stderr


def test_a_failed_bind_with_redis_up_exits_instead_of_hanging(
    make: Callable[..., Stack],
) -> None:
    """The original hang: uvicorn's bind fails after the lifespan has started the reader,
    whose connection handshake swallowed the one cancel the shutdown sent. (Past the port
    check, as when another process takes the port between the check and the bind.)"""
    stack = make()
    project, redis = stack.settings.project_dir, {"TK_REDIS_PORT": stack.env["TK_REDIS_PORT"]}
    skip_check = "import toolkit.serve.api as a; a.check_port = lambda *_: None"
    with listening() as taken, tk_api(project, taken.getsockname()[1], redis, skip_check) as p:
        assert p.wait() == 1, p.stderr
    assert "address already in use" in p.stderr, p.stderr
    assert p.stderr.rstrip().splitlines()[-1].startswith("tk: error: the API did not start")


class SwallowsCancel:
    """A Redis client whose XREAD swallows cancellation, as redis-py's can on Python < 3.12,
    and whose close never finishes."""

    def __init__(self) -> None:
        self.reads = 0

    async def xread(self, *_args: Any, **_kw: Any) -> Any:
        self.reads += 1
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.3)
        return None

    async def aclose(self) -> None:
        await asyncio.sleep(3600)


def test_the_lifespan_shutdown_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "STOP_S", 0.5)
    client = SwallowsCancel()
    app = api.create_app(api.ApiConfig(client_factory=lambda: client)).app

    async def run() -> float:
        async with app.router.lifespan_context(app):
            await asyncio.sleep(0.1)
            t0 = time.monotonic()
        return time.monotonic() - t0

    took = asyncio.run(asyncio.wait_for(run(), 10))
    assert took < 0.5 + 2 * 0.5 + 0.5, took  # the reader's wait, then each close's
    assert client.reads >= 1


class Failing:
    def __init__(self) -> None:
        self.error = "Connection refused"

    async def xread(self, *_args: Any, **_kw: Any) -> Any:
        raise ConnectionError(self.error)


def test_the_reader_logs_a_lasting_redis_failure_once_and_a_new_one_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(api, "READ_RETRY_S", 0.01)
    client = Failing()
    notifier = api.Notifier(client, "done")

    async def run() -> None:
        notifier.start()
        await asyncio.sleep(0.3)  # some 30 failed reads
        client.error = "Timeout"
        await asyncio.sleep(0.3)
        await notifier.stop()

    with caplog.at_level(logging.WARNING, logger="tk.api"):
        asyncio.run(run())
    warnings = [r.getMessage() for r in caplog.records if "done-stream reader:" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert "Connection refused" in warnings[0] and "Timeout" in warnings[1], warnings


def test_a_taken_port_names_tk_ups_flag_in_a_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    with listening() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse) as alone:
            api.check_port("127.0.0.1", port)
        monkeypatch.setenv("TK_SUPERVISED", "1")  # what `tk up` sets for its children
        with pytest.raises(PortInUse) as in_stack:
            api.check_port("127.0.0.1", port)
    assert "--port" in str(alone.value.fix) and "--api-port" not in str(alone.value.fix)
    assert "--api-port (tk up)" in str(in_stack.value.fix)
