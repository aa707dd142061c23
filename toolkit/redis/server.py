"""Running the managed redis-server: start, wait until it answers, stop with SHUTDOWN.

The server is always started with the generated config file as its only argument: no
password ever appears on a command line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.config import Settings
from toolkit.errors import (
    CredentialsError,
    PortInUse,
    RedisError,
    ServerNotRunning,
    ServerStartError,
)
from toolkit.fsutil import ensure_dir
from toolkit.procs import alive, spawn_detached
from toolkit.redis import binary as binaries
from toolkit.redis import connect, credentials, datafiles
from toolkit.redis.profile import header_value, rendered_for
from toolkit.redis.version import ServerVersion

CONF_FILE = "redis.conf"
ACL_FILE = "users.acl"
PID_FILE = "redis.pid"
LOG_FILE = "redis.log"
OUT_FILE = "redis-server.out"


@dataclass(frozen=True)
class ServerPaths:
    conf: Path
    aclfile: Path
    pidfile: Path
    logfile: Path
    outfile: Path
    data_dir: Path

    @classmethod
    def from_settings(cls, s: Settings) -> ServerPaths:
        return cls(
            conf=s.redis_conf_dir / CONF_FILE,
            aclfile=s.redis_conf_dir / ACL_FILE,
            pidfile=s.run_dir / PID_FILE,
            logfile=s.log_dir / LOG_FILE,
            outfile=s.log_dir / OUT_FILE,
            data_dir=s.redis_data_dir,
        )


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_owner(port: int) -> str:
    import psutil

    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN" and conn.pid:
                with contextlib.suppress(psutil.Error):
                    return f" (by {psutil.Process(conn.pid).name()}, pid {conn.pid})"
                return f" (by pid {conn.pid})"
    return ""


def read_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` if that process is alive, else None (a stale file is removed)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if alive(pid):
        return pid
    with contextlib.suppress(OSError):
        pidfile.unlink()
    return None


def _check_conf_matches(conf: Path, version: ServerVersion, server: binaries.ServerBinary) -> None:
    try:
        text = conf.read_text()
    except FileNotFoundError:
        raise ServerStartError(f"no config at {conf}", fix="run `tk redis harden` first") from None
    target = rendered_for(text)
    if target is None:
        return
    flavor, _, number = target.partition(" ")
    from toolkit.redis.version import parse_version_string

    if parse_version_string(flavor, number).capabilities != version.capabilities:
        raise ServerStartError(
            f"{conf} was written for {target}, but the server to run is {server.describe()}",
            fix="run `tk redis harden` again (passwords are kept) or pass --server",
        )


def refresh_acl(settings: Settings, version: ServerVersion) -> Path | None:
    """Bring users.acl up to this tk's users before the server reads it, for the passwords
    kept in credentials.json: an upgrade that gave a user a command it now uses (the API's
    HSET of image pieces) must not lock it out of a server hardened by an earlier tk.
    Returns the file when it was rewritten.

    Rewritten only when the file is what an earlier tk wrote (this tk's text with fewer
    commands). A file edited by hand or saved by the server (``ACL SAVE``, which writes
    categories and its own token order) is left as it is: if it lacks a command tk uses,
    the refused command's error names `tk redis harden`. redis.conf is never touched."""
    from toolkit.fsutil import atomic_write
    from toolkit.redis import acl
    from toolkit.redis.profile import render_acl

    paths = ServerPaths.from_settings(settings)
    creds = credentials.load(settings.redis_conf_dir)
    if creds is None or not paths.aclfile.is_file():
        return None
    try:
        text = render_acl(creds.passwords, version)
        current = paths.aclfile.read_text()
    except (KeyError, OSError, UnicodeDecodeError):  # harden's business
        return None
    if current == text or not acl.only_commands_added(current, text):
        return None
    atomic_write(paths.aclfile, text, mode=0o600)
    return paths.aclfile


def acl_note(path: Path | None) -> list[str]:
    """What to tell the user about :func:`refresh_acl`'s result."""
    return [] if path is None else [f"rewrote {path} for this tk's users (passwords kept)"]


def server_for(settings: Settings, conf: Path) -> binaries.ServerBinary:
    """--server / TK_REDIS_SERVER, else the binary the conf was written for, else the usual."""
    if settings.redis_server is None:
        with contextlib.suppress(OSError):
            recorded = header_value(conf.read_text(), "server")
            if recorded and Path(recorded).is_file():
                return binaries.ServerBinary(
                    Path(recorded), binaries.probe(Path(recorded)), "redis.conf"
                )
    return binaries.locate(settings.redis_server)


def start(
    settings: Settings,
    *,
    foreground: bool = False,
    wait: float | None = None,
    notify: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Start redis-server on the generated config and wait until it answers PING.

    Returns facts about the running server. With ``foreground`` the call replaces this
    process with redis-server (logging to the terminal) and does not return.
    """
    paths = ServerPaths.from_settings(settings)
    server = server_for(settings, paths.conf)
    _check_conf_matches(paths.conf, server.version, server)
    creds = credentials.load(settings.redis_conf_dir)
    if creds is None:
        raise ServerStartError(
            f"no credentials in {settings.redis_conf_dir}", fix="run `tk redis harden` first"
        )
    running = read_pid(paths.pidfile)
    if running is not None:
        raise ServerStartError(
            f"Redis is already running (pid {running}, port {creds.port})",
            fix="`tk redis stop` first, or `tk redis status`",
        )
    if port_in_use(creds.port):
        raise PortInUse(
            f"port {creds.port} is already in use{port_owner(creds.port)}",
            fix="stop that server or run `tk redis harden --port N` with a free port",
        )
    for d in (paths.data_dir, paths.pidfile.parent, paths.logfile.parent):
        ensure_dir(d)
    acl_notes = acl_note(refresh_acl(settings, server.version))
    if notify is not None:
        for note in acl_notes:
            notify(note)  # before a foreground start replaces this process
    argv = [str(server.path), str(paths.conf)]
    if foreground:
        os.execv(argv[0], [*argv, "--logfile", ""])
    pid = spawn_detached(argv, cwd=paths.data_dir, out=paths.outfile)
    _wait_ready(settings, pid, paths, wait or settings.redis_timeout, server.describe())
    return {"pid": pid, "port": creds.port, "binary": server.describe(),
            "conf": str(paths.conf), "log": str(paths.logfile), "notes": acl_notes}  # fmt: skip


def _wait_ready(
    settings: Settings, pid: int, paths: ServerPaths, timeout: float, server: str = "the server"
) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive(pid):
            raise _start_failure(paths, server)
        try:
            with connect.client(settings, "admin", timeout=1.0) as c:
                if c.ping():
                    return
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    raise ServerStartError(
        f"redis-server did not answer within {timeout:.0f}s ({last})",
        fix=f"see {paths.logfile}",
    )


def _start_failure(paths: ServerPaths, server: str) -> ServerStartError:
    """Why the server died at start-up, with the fix; data it cannot read gets named."""
    line = _last_error(paths)
    if datafiles.unreadable_version(line) is not None:
        found = datafiles.data_format(paths.data_dir)
        what = found.describe() if found else line
        return ServerStartError(
            f"{server} cannot load the data in {paths.data_dir}: {what}",
            fix="run the server that wrote it (--server, or redis.server in tk.yaml, then "
            "`tk redis harden`), or move that directory aside to start empty",
        )
    return ServerStartError(
        f"redis-server exited during start-up: {line}",
        fix=f"see {paths.logfile} and {paths.outfile}",
    )


def _last_error(paths: ServerPaths) -> str:
    """The most telling line the server wrote before dying."""
    lines: list[str] = []
    for f in (paths.outfile, paths.logfile):
        with contextlib.suppress(OSError):
            lines += f.read_text(errors="replace").splitlines()[-30:]
    for marker in ("FATAL", "Bad directive", "Address already in use", "Can't", "Error", "#"):
        for line in reversed(lines):
            if marker in line:
                return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"


SERVER_NAMES = ("redis-server", "valkey-server", "redis", "valkey")


def _is_redis_process(pid: int, data_dir: Path) -> str | None:
    """None when ``pid`` is this project's redis/valkey server; else what it is (for the
    error). A server works in its ``dir`` (it chdirs there), so another project's server,
    or one that took over a stale pidfile's pid, has another working directory."""
    import psutil

    try:
        proc = psutil.Process(pid)
        names = [proc.name()]
        with contextlib.suppress(psutil.Error, IndexError):
            names.append(Path(_exe_of(proc)).name)
    except psutil.Error as exc:
        return f"unknown ({exc})"
    if not any(n.split(" ")[0] in SERVER_NAMES for n in names):
        return f"{names[0]}, not a redis/valkey server"
    try:
        cwd = Path(proc.cwd()).resolve()
    except psutil.Error:
        return "a redis/valkey server whose working directory cannot be read"
    if cwd != data_dir.resolve():
        return f"a redis/valkey server working in {cwd}, not in this project's {data_dir}"
    return None


def _send_shutdown(settings: Settings) -> str | None:
    """SHUTDOWN as admin; None when it was sent, else why it could not be (one line)."""
    import redis as redis_py

    try:
        with connect.client(settings, "admin", timeout=5.0) as c:
            c.ping()  # an authentication or connection failure shows here, not below
            # The server closing the connection means it is going down.
            with contextlib.suppress(redis_py.ConnectionError, redis_py.TimeoutError):
                c.execute_command("SHUTDOWN")
    except Exception as exc:
        if isinstance(exc, CredentialsError):
            return exc.one_line()
        return str(exc).split("\n")[0] or type(exc).__name__
    return None


def stop(settings: Settings, timeout: float = 30.0) -> str:
    """SHUTDOWN the managed server (the AOF is fsynced) and wait for the process to exit.

    When SHUTDOWN cannot be sent (the passwords or port changed while it ran, no
    credentials), the pidfile's process gets SIGTERM, which Redis handles the same way,
    after checking that it is a redis/valkey server.
    """
    paths = ServerPaths.from_settings(settings)
    pid = read_pid(paths.pidfile)
    if pid is None:
        raise ServerNotRunning(
            f"Redis is not running (no live pid in {paths.pidfile})",
            fix="nothing to stop; `tk redis status` shows the state, `tk redis start` starts it",
        )
    how = "SHUTDOWN"
    why = _send_shutdown(settings)
    if why is not None:
        what = _is_redis_process(pid, paths.data_dir)
        if what is not None:
            raise RedisError(
                f"cannot send SHUTDOWN ({why}), and pid {pid} in {paths.pidfile} is {what}: "
                "not signalling it",
                fix=f"remove {paths.pidfile} if that server is gone; check the credentials "
                "in credentials.json",
            )
        how = f"SIGTERM (SHUTDOWN failed: {why})"
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError as exc:
            raise RedisError(
                f"cannot send SHUTDOWN ({why}) nor SIGTERM to pid {pid}: {exc.strerror}",
                fix=f"stop it as the user that started it (kill {pid})",
            ) from None
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            raise RedisError(
                f"Redis (pid {pid}) did not exit within {timeout:.0f}s after {how}",
                fix=f"see {paths.logfile}; kill {pid} if it is stuck",
            )
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        paths.pidfile.unlink()
    return f"Redis (pid {pid}) stopped with {how}; data synced to {paths.data_dir}"


STATUS_KEYS = (
    "running", "pid", "conf", "port", "binary", "version", "uptime_s", "rss_bytes",
    "reachable", "aof_enabled", "used_memory", "maxmemory", "keys", "error",
)  # fmt: skip


def status(settings: Settings) -> dict[str, Any]:
    """Facts about the managed server: running?, pid, binary and version, port, memory, AOF.

    The keys are the same whether it runs or not (None for what is not known): ``binary``
    is a path, ``version`` comes from the server or, when it is not reachable, from the
    binary's ``--version``.
    """
    import psutil

    paths = ServerPaths.from_settings(settings)
    pid = read_pid(paths.pidfile)
    out: dict[str, Any] = dict.fromkeys(STATUS_KEYS)
    out.update({"running": pid is not None, "pid": pid, "conf": str(paths.conf)})
    creds = credentials.load(settings.redis_conf_dir)
    out["port"] = creds.port if creds else None
    if pid is not None:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            out["binary"] = _exe_of(proc)
            out["uptime_s"] = round(time.time() - proc.create_time(), 1)
            out["rss_bytes"] = proc.memory_info().rss
    try:
        with connect.client(settings, "admin", timeout=2.0) as c:
            info = c.info()
        out["reachable"] = True
        name = info.get("server_name", "redis")
        out["version"] = f"{name} {info.get('valkey_version') or info.get('redis_version')}"
        out["aof_enabled"] = bool(info.get("aof_enabled"))
        out["used_memory"] = info.get("used_memory")
        out["maxmemory"] = info.get("maxmemory")
        out["keys"] = sum(v.get("keys", 0) for k, v in info.items() if k.startswith("db"))
    except Exception as exc:
        out["reachable"] = False
        out["error"] = str(exc).split("\n")[0]
    with contextlib.suppress(Exception):
        if out["binary"] is None:
            out["binary"] = str(server_for(settings, paths.conf).path)
        if out["version"] is None:
            out["version"] = str(binaries.probe(Path(out["binary"])))
    return out


def _exe_of(proc: Any) -> str:
    """The binary a server was started as (redis rewrites its argv to 'path host:port')."""
    first = str((proc.cmdline() or [proc.exe()])[0])
    return first if Path(first).exists() else first.split(" ")[0]


def ping(settings: Settings, user: str = "tk-monitor", url: str | None = None) -> float:
    """PING as ``user``; returns the round trip in milliseconds."""
    full = connect.resolve_url(settings, user, url)
    try:
        with connect.client(settings, user, url=url, timeout=settings.redis_timeout) as c:
            t0 = time.perf_counter()
            c.ping()
            return (time.perf_counter() - t0) * 1000
    except CredentialsError:
        raise
    except Exception as exc:
        import redis as redis_py

        error = connect.describe_connection_error(exc, full)
        pid = None
        if url is None and settings.redis_url is None:
            pid = read_pid(ServerPaths.from_settings(settings).pidfile)
        if pid is not None and not isinstance(exc, redis_py.AuthenticationError):
            error.fix = (
                f"the managed server (pid {pid}) runs, but not where credentials.json points "
                "(was the port changed while it ran?): restart it, `tk redis stop` then "
                "`tk redis start`"
            )
        raise error from None
