"""Re-running `tk redis harden` (also with the server running), `tk redis stop` when SHUTDOWN
cannot be sent, and the errors and hints around them. Real servers on free ports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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
from toolkit.redis import connect, credentials
from toolkit.redis.profile import check_tls
from toolkit.redis.server import STATUS_KEYS, ServerPaths


def _pid(s: Settings) -> int:
    return int(ServerPaths.from_settings(s).pidfile.read_text())


def _conf(project: Path) -> str:
    return (project / "redis-conf" / "redis.conf").read_text()


def _one_line(output: str) -> str:
    assert len(output.strip().splitlines()) == 1, output
    return " ".join(output.split())


def test_rotate_while_running_loads_the_new_passwords(redis_server: Settings) -> None:
    project = redis_server.project_dir
    old = credentials.load(redis_server.redis_conf_dir)
    assert old is not None
    worker = connect.client(redis_server, "tk-worker")
    worker.set("tk:kept", "1")
    worker.close()
    result = run_tk(project, "redis", "harden", "--rotate")
    assert result.exit_code == 0, result.output
    assert "ACL LOAD" in result.output and "new passwords are in effect" in result.output
    assert "warning" not in result.output
    ping = run_tk(project, "redis", "ping")
    assert ping.exit_code == 0 and "PONG" in ping.output
    assert connect.client(redis_server, "tk-worker").get("tk:kept") == "1"
    stale = redis.Redis(
        port=old.port,
        username="tk-api",
        password=old.passwords["tk-api"],
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )
    with pytest.raises(redis.AuthenticationError):
        stale.ping()
    stale.close()
    again = run_tk(project, "redis", "harden")  # nothing changes: no "next: tk redis start"
    assert again.exit_code == 0 and "tk redis start" not in again.output, again.output
    assert "the server is running with these files" in again.output
    stopped = run_tk(project, "redis", "stop")
    assert stopped.exit_code == 0 and "stopped with SHUTDOWN" in stopped.output


def test_port_change_while_running_warns_and_stop_still_works(
    redis_factory: StartServer, tmp_path: Path
) -> None:
    s = redis_factory(first_kind(), proj=tmp_path / "port")
    project = s.project_dir
    connect.client(s, "tk-worker").set("tk:before", "1")
    pid = _pid(s)
    new_port = free_port()
    result = run_tk(project, "redis", "harden", "--port", str(new_port))
    assert result.exit_code == 0, result.output
    assert f"-> {new_port}" in result.output
    assert "tk redis stop && tk redis start" in result.output
    ping = run_tk(project, "redis", "ping")
    assert ping.exit_code == 1
    assert f"pid {pid}" in ping.output and "`tk redis stop` then `tk redis start`" in ping.output
    t0 = time.monotonic()
    stopped = run_tk(project, "redis", "stop")
    assert stopped.exit_code == 0, stopped.output
    assert "SIGTERM" in stopped.output and time.monotonic() - t0 < 10
    assert not alive(pid)
    started = run_tk(project, "redis", "start")
    assert started.exit_code == 0 and f"port {new_port}" in started.output
    assert "PONG" in run_tk(project, "redis", "ping").output
    assert connect.client(s, "admin").get("tk:before") == "1"  # SIGTERM synced the AOF


def test_stop_after_an_auth_failure_uses_sigterm(
    redis_factory: StartServer, tmp_path: Path
) -> None:
    s = redis_factory(first_kind(), proj=tmp_path / "auth")
    project = s.project_dir
    path = credentials.credentials_path(s.redis_conf_dir)
    data = json.loads(path.read_text())
    data["users"] = {user: "0" * 64 for user in data["users"]}  # as if rotated elsewhere
    path.write_text(json.dumps(data))
    ping = _one_line(run_tk(project, "redis", "ping").output)
    assert "refused the credentials" in ping and "start it with" not in ping
    assert "`tk redis stop` then `tk redis start`" in ping
    pid = _pid(s)
    stopped = run_tk(project, "redis", "stop")
    assert stopped.exit_code == 0, stopped.output
    assert "SIGTERM" in stopped.output
    assert not alive(pid)


def test_stop_does_not_signal_another_projects_redis(project: Path, tmp_path: Path) -> None:
    kind = first_kind()
    assert run_tk(
        project, "redis", "harden", "--server", str(kind.path), "--port", str(free_port())
    )
    other_dir = tmp_path / "other-project-data"
    other_dir.mkdir()
    other = subprocess.Popen(
        [str(kind.path), "--port", str(free_port()), "--bind", "127.0.0.1", "--dir", str(other_dir),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)  # it has chdir'd to its --dir
        pidfile = project / ".tk/run/redis.pid"  # a stale pidfile whose pid it now has
        pidfile.parent.mkdir(parents=True)
        pidfile.write_text(str(other.pid))
        result = run_tk(project, "redis", "stop")
        assert result.exit_code == 1
        line = _one_line(result.output)
        assert f"working in {other_dir.resolve()}, not in this project's" in line, line
        assert other.poll() is None  # left alone
    finally:
        other.kill()
        other.wait()


def test_stop_does_not_signal_a_process_that_is_not_redis(project: Path) -> None:
    port = str(free_port())
    kind = first_kind()
    assert run_tk(project, "redis", "harden", "--server", str(kind.path), "--port", port)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pidfile = project / ".tk/run/redis.pid"
        pidfile.parent.mkdir(parents=True)
        pidfile.write_text(str(sleeper.pid))
        result = run_tk(project, "redis", "stop")
        assert result.exit_code == 1
        line = _one_line(result.output)
        assert "cannot send SHUTDOWN" in line and "not a redis/valkey server" in line
        assert "fix:" in line
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_rerun_keeps_earlier_choices(project: Path) -> None:
    server = ["--server", str(first_kind().path)]
    first = run_tk(
        project, "redis", "harden", *server, "--durable", "--maxmemory", "256mb",
        "--maxmemory-policy", "allkeys-lru", "--bind", "127.0.0.1 10.9.8.7", "--force",
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    before = _conf(project)
    again = run_tk(project, "redis", "harden", *server)
    assert again.exit_code == 0, again.output
    assert _conf(project) == before
    for kept in ("--durable", "maxmemory 256mb", "allkeys-lru", "10.9.8.7"):
        assert kept in again.output
    assert "silently disappear" in again.output  # the kept eviction policy still warns
    changed = run_tk(project, "redis", "harden", *server, "--no-durable", "--maxmemory", "512mb")
    assert changed.exit_code == 0, changed.output
    conf = _conf(project)
    assert "\nappendfsync everysec\n" in conf and "\nmaxmemory 512mb\n" in conf
    assert "\nbind 127.0.0.1 10.9.8.7\n" in conf


def _ssl(d: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)


def _need_tls_server() -> Path:
    debian = Path("/usr/bin/redis-server")
    if not debian.exists() or shutil.which("openssl") is None:
        pytest.skip("needs Debian's redis-server (built with TLS) and openssl")
    return debian


def _self_signed(d: Path) -> tuple[Path, Path]:
    _ssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ss.key",
         "-out", "ss.pem", "-days", "2", "-subj", "/CN=localhost")  # fmt: skip
    return d / "ss.pem", d / "ss.key"


def test_self_signed_cert_is_its_own_ca_and_tls_is_kept(
    redis_factory: StartServer, tmp_path: Path
) -> None:
    debian = _need_tls_server()
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = _self_signed(certs)
    tls = check_tls(cert, key, None)
    assert tls is not None and tls.ca == cert.resolve()
    s = redis_factory(ServerKind("debian-redis", debian), proj=tmp_path / "tls", tls=tls)
    project = s.project_dir
    assert "PONG" in run_tk(project, "redis", "ping").output  # the server is verified
    assert run_tk(project, "redis", "stop").exit_code == 0
    again = run_tk(project, "redis", "harden")
    assert again.exit_code == 0, again.output
    assert "TLS" in again.output and f"\ntls-cert-file {cert.resolve()}\n" in _conf(project)
    creds = credentials.load(s.redis_conf_dir)
    assert creds is not None and creds.tls and creds.ca_file == str(cert.resolve())
    plain = run_tk(project, "redis", "harden", "--no-tls")
    assert plain.exit_code == 0, plain.output
    assert "tls-cert-file" not in _conf(project)
    creds = credentials.load(s.redis_conf_dir)
    assert creds is not None and not creds.tls


def test_cert_signed_by_another_ca_needs_tls_ca(project: Path, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    d = tmp_path / "certs"
    d.mkdir()
    _ssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
         "-out", "ca.pem", "-days", "2", "-subj", "/CN=tk-test-ca")  # fmt: skip
    _ssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "s.csr",
         "-subj", "/CN=localhost")  # fmt: skip
    _ssl(d, "x509", "-req", "-in", "s.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "cert.pem", "-days", "2")  # fmt: skip
    args = ["--tls-cert", str(d / "cert.pem"), "--tls-key", str(d / "key.pem")]
    result = run_tk(project, "redis", "harden", "--server", str(first_kind().path), *args)
    assert result.exit_code == 2
    line = _one_line(result.output)
    assert "not self-signed" in line and "fix: add --tls-ca" in line
    assert not (project / "redis-conf").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "port must be between 1 and 65535, got 0"),
        (["--port", "70000"], "port must be between 1 and 65535, got 70000"),
        (["--maxmemory", "0"], "maxmemory 0 means no limit"),
        (["--maxmemory", "1000"], "too small"),
        (["--bind", "foo"], "'foo' is not an IP address"),
        (["--bind", "127.0.0.1 -::1 foo"], "'foo' is not an IP address"),
        (["--server", "/bin/true"], "/bin/true is not a redis-server/valkey-server"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/etc/hostname"], "no such file"),
        (["--tls-cert", "/etc/hostname"], "needs both --tls-cert and --tls-key"),
    ],
)
def test_bad_values_are_refused_with_a_fix(project: Path, args: list[str], message: str) -> None:
    server = [] if "--server" in args else ["--server", str(first_kind().path)]
    result = run_tk(project, "redis", "harden", *server, *args)
    line = _one_line(result.output)
    assert result.exit_code == 2, line
    assert message in line and "; fix: " in line
    assert "\\n" not in line
    assert not (project / "redis-conf").exists()


def test_optional_ipv6_bind_address_is_accepted(project: Path) -> None:
    args = ["--server", str(first_kind().path), "--bind", "127.0.0.1 -::1"]
    assert run_tk(project, "redis", "harden", *args).exit_code == 0


def test_gitignore_keeps_secrets_out_of_git(project: Path) -> None:
    server = ["--server", str(first_kind().path)]
    assert run_tk(project, "redis", "harden", *server).exit_code == 0
    ignore = project / "redis-conf" / ".gitignore"
    assert "*" in ignore.read_text().splitlines()
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(project)], check=True)
        tracked = subprocess.run(
            ["git", "-C", str(project), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "credentials.json" not in tracked and "redis-conf" not in tracked
    ignore.write_text("# mine\ncredentials.json\n")
    assert run_tk(project, "redis", "harden", *server).exit_code == 0
    assert ignore.read_text() == "# mine\ncredentials.json\n"


def test_status_json_has_the_same_keys_running_or_not(
    redis_factory: StartServer, tmp_path: Path
) -> None:
    kind = first_kind()
    s = redis_factory(kind, proj=tmp_path / "st")
    up: dict[str, Any] = json.loads(run_tk(s.project_dir, "redis", "status", "--json").output)
    assert run_tk(s.project_dir, "redis", "stop").exit_code == 0
    result = run_tk(s.project_dir, "redis", "status", "--json")
    down: dict[str, Any] = json.loads(result.output)
    assert result.exit_code == 1
    assert list(up) == list(down) == list(STATUS_KEYS)
    assert up["running"] is True and down["running"] is False
    assert down["binary"] == up["binary"] == str(kind.path)
    assert down["version"] == up["version"]


def test_audit_without_a_server_audits_the_managed_conf(project: Path) -> None:
    missing = run_tk(project, "redis", "audit")
    assert missing.exit_code == 2
    assert "fix: run `tk redis harden` first" in _one_line(missing.output)
    server = ["--server", str(first_kind().path), "--port", str(free_port())]
    assert run_tk(project, "redis", "harden", *server).exit_code == 0
    result = run_tk(project, "redis", "audit", "--json")
    assert result.exit_code == 0, result.output
    start = result.output.index("{")
    report = json.loads(result.output[start:])
    assert report["source"] != "live"
    assert "not running: auditing" in result.output


def test_ping_unknown_user_lists_the_users(redis_server: Settings) -> None:
    result = run_tk(redis_server.project_dir, "redis", "ping", "--user", "nobody")
    assert result.exit_code == 1
    line = _one_line(result.output)
    assert "no password for Redis user 'nobody'" in line
    assert "fix: use one of: admin, tk-api, tk-monitor, tk-worker" in line


def test_both_conf_and_url_has_a_fix(project: Path) -> None:
    result = run_tk(project, "redis", "audit", "--url", "redis://127.0.0.1:1", "--conf", "x")
    assert result.exit_code == 2 and "; fix: " in _one_line(result.output)


def test_stop_when_not_running_has_a_fix(project: Path) -> None:
    result = run_tk(project, "redis", "stop")
    assert result.exit_code == 1
    assert "not running" in result.output and "; fix: " in _one_line(result.output)


def test_start_brings_an_older_users_acl_up_to_date(project: Path) -> None:
    """A server hardened by an earlier tk, whose API user could not yet HSET (the image
    pieces): starting it rewrites users.acl for this tk, passwords kept, and the API can
    queue again."""
    kind = first_kind()
    assert run_tk(
        project, "redis", "harden", "--server", str(kind.path), "--port", str(free_port())
    )
    acl = project / "redis-conf" / "users.acl"
    current = acl.read_text()
    older = current.replace(" +hset +expire +hgetall", " +hgetall", 1)  # the API's line
    assert older != current
    acl.write_text(older)
    started = run_tk(project, "redis", "start")
    assert started.exit_code == 0, started.output
    try:
        assert f"rewrote {acl} for this tk's users (passwords kept)" in started.output
        assert acl.read_text() == current and acl.stat().st_mode & 0o777 == 0o600
        s = Settings.resolve(flags={"project_dir": project})
        with connect.client(s, "tk-api") as api:
            assert api.hset("tk:image:x", "0", "1") == 1
    finally:
        run_tk(project, "redis", "stop")


def test_a_refused_command_names_harden_not_start(redis_server: Settings) -> None:
    with (
        connect.client(redis_server, "tk-monitor") as monitor,
        pytest.raises(redis.exceptions.NoPermissionError) as info,
    ):
        monitor.hset("tk:image:x", "0", "1")
    err = connect.describe_connection_error(info.value, "redis://tk-monitor@127.0.0.1:1")
    assert "refused a command to this user" in err.message and "hset" in err.message
    assert "tk redis harden" in (err.fix or "") and "start" not in (err.fix or "")


def test_start_keeps_a_users_acl_the_server_saved(project: Path) -> None:
    """users.acl rewritten by the server (ACL SAVE, here with a user of the operator's) is
    left as it is; a command it no longer grants a tk user is refused with a fix."""
    kind = first_kind()
    assert run_tk(
        project, "redis", "harden", "--server", str(kind.path), "--port", str(free_port())
    )
    s = Settings.resolve(flags={"project_dir": project})
    assert run_tk(project, "redis", "start").exit_code == 0
    try:
        with connect.client(s, "admin") as admin:
            admin.acl_setuser("backup", enabled=True, passwords=["+pw-1234"], commands=["+info"])
            admin.acl_setuser("tk-api", enabled=True, commands=["-hset"])
            admin.acl_save()
    finally:
        run_tk(project, "redis", "stop")
    saved = (project / "redis-conf" / "users.acl").read_text()
    started = run_tk(project, "redis", "start")
    try:
        assert started.exit_code == 0, started.output
        assert (project / "redis-conf" / "users.acl").read_text() == saved
        assert "rewrote" not in started.output
        with connect.client(s, "admin") as admin:
            assert "backup" in admin.acl_users()
        with connect.client(s, "tk-api") as api, pytest.raises(redis.exceptions.NoPermissionError):
            api.hset("tk:image:x", "0", "1")
    finally:
        run_tk(project, "redis", "stop")


def test_ping_and_stop_speak_json(redis_server: Settings) -> None:
    proj = redis_server.project_dir
    pong = run_tk(proj, "redis", "ping", "--json")
    assert pong.exit_code == 0, pong.output
    doc = json.loads(pong.stdout)
    assert doc["pong"] is True and doc["user"] == "tk-monitor" and doc["ms"] > 0
    bad = run_tk(proj, "redis", "ping", "--user", "nobody", "--json")
    assert bad.exit_code == 1 and "no password for Redis user" in json.loads(bad.stdout)["error"]
    stopped = run_tk(proj, "redis", "stop", "--json")
    assert stopped.exit_code == 0, stopped.output
    assert json.loads(stopped.stdout)["stopped"] is True
    again = run_tk(proj, "redis", "stop", "--json")
    assert again.exit_code != 0 and "not running" in json.loads(again.stdout)["error"]


def test_memory_limit_policy_and_fsync_change_live_without_restart(redis_server: Settings) -> None:
    proj = redis_server.project_dir
    pid = _pid(redis_server)
    result = run_tk(proj, "redis", "harden", "--maxmemory", "64mb", "--durable")
    assert result.exit_code == 0, result.output
    assert "took the new maxmemory 64mb, appendfsync always (CONFIG SET)" in result.output
    assert "restart" not in result.output
    with connect.client(redis_server, "admin") as admin:
        assert admin.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        assert admin.config_get("appendfsync")["appendfsync"] == "always"
    assert _pid(redis_server) == pid and "maxmemory 64mb" in _conf(proj)
