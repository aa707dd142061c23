"""`tk redis harden`: what it writes, what it refuses, and that it never leaves a partial file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.helpers import ServerKind, run_tk
from toolkit.redis.profile import HardenProfile, render_acl, render_conf
from toolkit.redis.version import ServerVersion, parse_version_output

V62 = ServerVersion("redis", 6, 2, 14)
V70 = ServerVersion("redis", 7, 0, 15)
V72 = ServerVersion("redis", 7, 2, 5)
VK8 = ServerVersion("valkey", 8, 1, 8)


def _profile(tmp: Path, **kw: object) -> HardenProfile:
    base: dict[str, object] = dict(
        port=6400, maxmemory=512 * 2**20, policy="noeviction", appendfsync="everysec",
        data_dir=tmp / "d", logfile=tmp / "l.log", pidfile=tmp / "p.pid", aclfile=tmp / "u.acl",
    )  # fmt: skip
    base.update(kw)
    return HardenProfile(**base)  # type: ignore[arg-type]


def _directives(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value
    return out


def test_conf_has_the_hardened_directives(tmp_path: Path) -> None:
    d = _directives(render_conf(_profile(tmp_path), V70))
    assert d["bind"] == "127.0.0.1 -::1"
    assert d["protected-mode"] == "yes"
    assert d["port"] == "6400"
    assert (d["appendonly"], d["appendfsync"]) == ("yes", "everysec")
    assert (d["aof-use-rdb-preamble"], d["no-appendfsync-on-rewrite"]) == ("yes", "no")
    assert (d["maxmemory"], d["maxmemory-policy"]) == ("512mb", "noeviction")
    assert d["enable-debug-command"] == "no" and d["enable-module-command"] == "no"
    assert int(d["tcp-keepalive"]) > 0 and int(d["timeout"]) > 0
    assert d["aclfile"] == str(tmp_path / "u.acl")


def test_directives_follow_the_server_version(tmp_path: Path) -> None:
    assert "enable-debug-command" not in render_conf(_profile(tmp_path), V62)
    pw = {u: "x" * 64 for u in ("admin", "tk-api", "tk-worker", "tk-monitor")}
    acl62, acl70, acl72, vk8 = (render_acl(pw, v) for v in (V62, V70, V72, VK8))
    assert "%R~" not in acl62 and "%R~tk:*" in acl70
    assert "client|setinfo" not in acl70 and "client|setinfo" in acl72
    assert "client|setinfo" in vk8 and "%R~" in vk8


def test_tls_profile(tmp_path: Path) -> None:
    from toolkit.redis.profile import TlsFiles

    tls = TlsFiles(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem")
    d = _directives(render_conf(_profile(tmp_path, tls=tls), V70))
    assert d["port"] == "0" and d["tls-port"] == "6400"
    assert d["tls-protocols"] == '"TLSv1.2 TLSv1.3"'
    assert d["tls-cert-file"] == str(tmp_path / "c.pem")


def test_version_output_is_parsed() -> None:
    assert parse_version_output("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc") == V70
    assert parse_version_output("Valkey server v=8.1.8 sha=00000000:1 malloc=libc") == VK8


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def kind(server_kind: ServerKind) -> ServerKind:
    return server_kind


def test_harden_writes_0600_files_and_keeps_passwords(project: Path, kind: ServerKind) -> None:
    result = run_tk(project, "redis", "harden", "--server", str(kind.path), "--port", "6401")
    assert result.exit_code == 0, result.output
    conf_dir = project / "redis-conf"
    files = ["redis.conf", "users.acl", "credentials.json"]
    assert all(_mode(conf_dir / f) == 0o600 for f in files)
    first = json.loads((conf_dir / "credentials.json").read_text())["users"]
    assert set(first) == {"admin", "tk-api", "tk-worker", "tk-monitor"}
    assert all(len(pw) == 64 for pw in first.values())  # 256 bits, hex
    for pw in first.values():
        assert pw not in result.output
        assert pw not in (conf_dir / "users.acl").read_text()

    run_tk(project, "redis", "harden", "--server", str(kind.path), "--port", "6401")
    again = json.loads((conf_dir / "credentials.json").read_text())["users"]
    assert again == first
    result = run_tk(project, "redis", "harden", "--server", str(kind.path), "--rotate")
    rotated = json.loads((conf_dir / "credentials.json").read_text())["users"]
    assert result.exit_code == 0
    assert all(rotated[u] != first[u] for u in first)


def test_show_secrets_prints_them(project: Path, kind: ServerKind) -> None:
    result = run_tk(project, "redis", "harden", "--server", str(kind.path), "--show-secrets")
    creds = json.loads((project / "redis-conf" / "credentials.json").read_text())["users"]
    assert creds["admin"] in result.output


def test_evicting_policy_is_refused_without_force(project: Path, kind: ServerKind) -> None:
    args = ["redis", "harden", "--server", str(kind.path), "--maxmemory-policy", "allkeys-lru"]
    result = run_tk(project, *args)
    assert result.exit_code == 2
    assert "queued tasks" in result.output and "--force" in result.output
    assert not (project / "redis-conf").exists()
    result = run_tk(project, *args, "--force")
    assert result.exit_code == 0
    assert "warning" in result.output and "silently disappear" in result.output
    assert "maxmemory-policy allkeys-lru" in (project / "redis-conf/redis.conf").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--maxmemory", "lots"], "maxmemory 'lots' is not a size"),
        (["--maxmemory-policy", "lru"], "unknown maxmemory-policy 'lru'"),
        (["--port", "99999"], "between 1 and 65535"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "no such file"),
        (["--tls-cert", "/etc/hostname"], "needs both --tls-cert and --tls-key"),
        (["--server", "/nonexistent/redis-server"], "does not exist"),
    ],
)
def test_bad_input_one_line_no_files(
    project: Path, kind: ServerKind, args: list[str], message: str
) -> None:
    server = [] if "--server" in args else ["--server", str(kind.path)]
    result = run_tk(project, "redis", "harden", *server, *args)
    assert result.exit_code != 0
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (project / "redis-conf").exists()


def test_unwritable_conf_dir_leaves_old_files_intact(project: Path, kind: ServerKind) -> None:
    if os.geteuid() == 0:
        # root ignores directory modes: make the directory a file instead.
        env = {"TK_REDIS_CONF_DIR": str(project / "blocker" / "conf")}
        (project / "blocker").write_text("a file, not a directory")
    else:
        env = {"TK_REDIS_CONF_DIR": str(project / "ro")}
        (project / "ro").mkdir(mode=0o500)
    result = run_tk(project, "redis", "harden", "--server", str(kind.path), env=env)
    assert result.exit_code == 1
    assert result.output.startswith("tk: error: cannot")
    assert len(result.output.strip().splitlines()) == 1


def test_failed_write_keeps_all_old_files(project: Path, kind: ServerKind) -> None:
    ok = run_tk(project, "redis", "harden", "--server", str(kind.path))
    assert ok.exit_code == 0
    conf_dir = project / "redis-conf"
    before = {p.name: p.read_bytes() for p in conf_dir.iterdir()}
    # users.acl replaced by a directory: the rename onto it fails midway.
    (conf_dir / "users.acl").unlink()
    (conf_dir / "users.acl").mkdir()
    before.pop("users.acl")
    result = run_tk(project, "redis", "harden", "--server", str(kind.path), "--rotate")
    assert result.exit_code == 1
    after = {p.name: p.read_bytes() for p in conf_dir.iterdir() if p.is_file()}
    assert after == before  # nothing replaced, no temp files left


def test_bind_beyond_loopback_needs_tls_or_force(project: Path, kind: ServerKind) -> None:
    args = ["redis", "harden", "--server", str(kind.path), "--bind", "127.0.0.1 10.9.8.7"]
    refused = run_tk(project, *args)
    assert refused.exit_code == 2
    assert "clear text" in refused.output and "--tls-cert" in refused.output
    assert not (project / "redis-conf").exists()
    forced = run_tk(project, *args, "--force")
    assert forced.exit_code == 0
    assert "\nbind 127.0.0.1 10.9.8.7\n" in (project / "redis-conf/redis.conf").read_text()
