"""Fixtures: a clean environment per test, and real redis-server processes on free ports.

Every server a fixture starts is stopped at teardown, by PID, even when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import ServerKind, alive, free_port, require_all_servers, server_kinds
from toolkit.config import Settings
from toolkit.redis import server as srv
from toolkit.redis.harden import harden


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run only where an NVIDIA GPU and driver are found."""
    gpu_items = [i for i in items if i.get_closest_marker("gpu")]
    if not gpu_items:
        return
    from toolkit.envs import gpu

    probe = gpu.detect()
    if probe.present:
        return
    skip = pytest.mark.skip(reason=f"needs an NVIDIA GPU: {probe.describe()}")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No TK_* variable from the caller leaks in; cwd and sys.path are restored."""
    for key in list(os.environ):
        if key.startswith("TK_") and key != "TK_TEST_REQUIRE_SERVERS":
            monkeypatch.delenv(key)
    cwd, path = os.getcwd(), list(sys.path)
    yield
    os.chdir(cwd)
    sys.path[:] = path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project directory."""
    d = tmp_path / "proj"
    d.mkdir()
    return d


def _kind_param(kind: ServerKind) -> object:
    marks = []
    if kind.path is None and not require_all_servers():
        marks.append(pytest.mark.skip(reason=f"{kind.name} not installed"))
    return pytest.param(kind, id=kind.name, marks=marks)


ALL_KINDS = [_kind_param(k) for k in server_kinds()]


@pytest.fixture(params=ALL_KINDS)
def server_kind(request: pytest.FixtureRequest) -> ServerKind:
    kind: ServerKind = request.param
    if kind.path is None:
        pytest.fail(f"{kind.name} is required (TK_TEST_REQUIRE_SERVERS=1) but not installed")
    return kind


def _kill_tree(pid: int) -> None:
    if not alive(pid):
        return
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        for p in [*proc.children(recursive=True), proc]:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs([proc], timeout=5)


StartServer = Callable[..., Settings]


@pytest.fixture
def redis_factory(project: Path) -> Iterator[StartServer]:
    """Harden and start real servers: ``start(kind, project=..., **flags) -> Settings``."""
    started: list[Settings] = []
    pids: list[int] = []

    def start(kind: ServerKind, proj: Path | None = None, **flags: object) -> Settings:
        proj = proj or project
        proj.mkdir(parents=True, exist_ok=True)
        values = {"project_dir": proj, "redis_port": free_port(), "redis_server": kind.path}
        values.update(flags)
        tls = values.pop("tls", None)
        s = Settings.resolve(flags=values)
        harden(s, tls=tls)  # type: ignore[arg-type]
        info = srv.start(s)
        pids.append(int(info["pid"]))
        started.append(s)
        return s

    yield start
    for s in started:
        with contextlib.suppress(Exception):
            srv.stop(s, timeout=10)
    for pid in pids:
        _kill_tree(pid)


@pytest.fixture
def redis_server(redis_factory: StartServer, server_kind: ServerKind) -> Settings:
    """One hardened server of each supported build (the test runs once per build)."""
    return redis_factory(server_kind)
