"""`tk up` preflight and launch, `tk down`, `tk status`: the effectful half of the stack."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

from toolkit.config import SPEC_BY_NAME, Settings
from toolkit.errors import FileWriteError, PortInUse, TkError, UsageError
from toolkit.fsutil import ensure_dir
from toolkit.procs import alive, same_process, spawn_detached, terminate
from toolkit.stack import state
from toolkit.stack.hints import tk
from toolkit.stack.logtail import telling_line
from toolkit.stack.plan import StackPlan


class AlreadyRunning(TkError):
    pass


class NotRunning(TkError):
    pass


def clean_stale(s: Settings) -> str | None:
    """A record left by a crashed supervisor: stop its orphaned children, drop the record."""
    data = state.read(s.run_dir)
    if data is None or state.running(s.run_dir) is not None:
        return None
    # drain order: api, workers, redis (SIGTERM makes redis sync its AOF)
    order = {"api": 0, "worker": 1, "redis": 2}
    orphans = sorted(
        (p for p in state.live_children(data) if _ours(p["pid"])),
        key=lambda p: order.get(p.get("role", ""), 3),
    )
    for p in orphans:
        terminate([p["pid"]], timeout=30)
    state.remove(s.run_dir)
    return f"cleaned up a crashed stack's record ({len(orphans)} orphaned processes stopped)"


def _ours(pid: int) -> bool:
    import psutil

    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return "toolkit" in cmd or "redis" in cmd or "valkey" in cmd


def check_flags(workers: int | None, api_port: int | None) -> None:
    """`tk up`'s own flags: --workers within the bounds tk.yaml's serve.workers has (1-1024),
    --api-port a port one can listen on (1-65535)."""
    if workers is not None:
        SPEC_BY_NAME["serve_workers"].parse(workers, "--workers")
    if api_port is not None and not 1 <= api_port <= 65535:
        raise UsageError(
            f"--api-port must be between 1 and 65535 for `tk up`, got {api_port}",
            fix="pick a free port, e.g. --api-port 8000",
        )


def validate(s: Settings, plan: StackPlan) -> None:
    """What the real run would refuse, checked without touching anything (so that
    `tk up --dry-run` refuses it too): ports, the Redis URL, the model."""
    _check_port(s, "serve_port", s.serve_port)
    if plan.redis_port is not None:
        _check_port(s, "redis_port", plan.redis_port)
    if s.redis_url:  # the message a worker would die with, before anything starts
        from toolkit.redis.connect import resolve_url

        resolve_url(s, "tk-worker")
    _check_model(s)


def _check_port(s: Settings, name: str, port: int) -> None:
    if 1 <= port <= 65535:
        return
    src = s.source(name)
    if name == "serve_port":
        where, fix = "--api-port", "pick a free port, e.g. --api-port 8000"
    else:
        where = "the Redis port"
        fix = f"pick a free port with {tk(s, 'redis harden --port N')}"
    if src != "flag":
        where += f" ({src.removeprefix('env ')})" if src != "default" else ""
    raise UsageError(f"{where} must be between 1 and 65535 for `tk up`, got {port}", fix=fix)


def preflight(s: Settings, plan: StackPlan) -> list[str]:
    """Everything that can be refused before anything starts. Returns notes for the user."""
    from toolkit.redis.server import port_in_use

    notes: list[str] = []
    data = state.running(s.run_dir)
    if data is not None:
        raise AlreadyRunning(
            f"the stack is already running (supervisor pid {data['supervisor_pid']}, "
            f"api {data.get('api_url')})",
            fix=f"{tk(s, 'status')} to see it, {tk(s, 'down')} to stop it",
        )
    for d in (s.state_dir, s.run_dir, s.log_dir, s.redis_data_dir):
        try:
            ensure_dir(d)
        except FileWriteError as exc:
            raise FileWriteError(exc.message, fix="make .tk writable or set TK_STATE_DIR") from None
    stale = clean_stale(s)
    if stale:
        notes.append(stale)
    ports = [("API", s.serve_port)]
    if plan.redis_port is not None:
        ports.insert(0, ("Redis", plan.redis_port))
    for what, port in ports:
        if port_in_use(port, "127.0.0.1" if what == "Redis" else s.serve_host):
            raise _port_taken(s, what, port)
    if plan.redis_port is not None and not plan.harden_first:
        from toolkit.redis.server import ServerPaths, acl_note, refresh_acl, server_for

        version = server_for(s, ServerPaths.from_settings(s).conf).version
        notes += acl_note(refresh_acl(s, version))
    return notes


def _port_taken(s: Settings, what: str, port: int) -> PortInUse:
    """The port is taken: by whom, and how to free it or pick another."""
    from toolkit.redis.server import port_owner

    if what == "API":
        return PortInUse(
            f"API port {port} is already in use{port_owner(port)}",
            fix="stop that process or pick another with --api-port (or serve.port in tk.yaml)",
        )
    own = _managed_redis(s, port)
    if own is not None:
        return PortInUse(
            f"Redis port {port} is already in use by this project's own Redis "
            f"(pid {own}, started with `tk redis start`)",
            fix=f"stop it with {tk(s, 'redis stop')}: `tk up` starts and stops Redis itself",
        )
    src = s.source("redis_port")
    if src.startswith("env"):
        other = f"set another TK_REDIS_PORT and run {tk(s, 'redis harden')}"
    elif src != "default":
        other = f"set another redis.port in tk.yaml and run {tk(s, 'redis harden')}"
    else:
        other = f"pick another with {tk(s, 'redis harden --port N')}"
    return PortInUse(
        f"Redis port {port} is already in use{port_owner(port)}",
        fix=f"stop that process, or {other}",
    )


def _managed_redis(s: Settings, port: int) -> int | None:
    """The pid of this project's `tk redis start` server when it is what holds ``port``."""
    import psutil

    from toolkit.redis.server import ServerPaths, read_pid

    pid = read_pid(ServerPaths.from_settings(s).pidfile)
    if pid is None:
        return None
    try:
        conns = psutil.Process(pid).net_connections("tcp")
    except psutil.Error:  # its sockets hidden from us: a reused pid cannot be ruled out
        return None
    listening = any(c.laddr and c.laddr.port == port and c.status == "LISTEN" for c in conns)
    return pid if listening else None


def _check_model(s: Settings) -> None:
    from toolkit.serve.models import parse_spec

    spec = parse_spec(s.serve_model)
    if spec.path is not None and not spec.path.is_file():
        raise UsageError(
            f"model file {spec.path} does not exist",
            fix="check serve.model in tk.yaml / TK_SERVE_MODEL "
            "(e.g. torchvision:resnet50=/path/resnet50.pth)",
        )


def supervisor_argv(s: Settings, workers: int | None) -> list[str]:
    argv = [sys.executable, "-m", "toolkit", "-C", str(s.project_dir), "up", "--supervise"]
    if workers:
        argv += ["--workers", str(workers)]
    return argv


def supervisor_env(s: Settings) -> dict[str, str]:
    """The environment of a detached supervisor: the flags it was given travel as TK_*
    variables (a Redis URL may hold a password: never on a command line)."""
    env = dict(os.environ)
    for name in ("redis_url", "serve_port"):
        if s.source(name) == "flag":
            env["TK_" + name.upper()] = str(getattr(s, name))
    return env


def launch_detached(s: Settings, argv: list[str], timeout: float = 420.0) -> dict[str, Any]:
    """Start the supervisor in the background; wait until the stack is ready or it gives up."""
    log = s.log_dir / "tk-up.log"
    mark = log.stat().st_size if log.exists() else 0
    pid = spawn_detached(argv, cwd=s.project_dir, out=log, env=supervisor_env(s))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = state.read(s.run_dir)
        if data and data.get("supervisor_pid") == pid and data.get("ready"):
            return data
        if not alive(pid):
            said, fix = telling_line(log, mark)
            raise TkError(f"the stack did not start: {said}", fix=fix)
        time.sleep(0.2)
    terminate([pid], timeout=120)
    raise TkError(f"the stack was not ready within {timeout:.0f}s", fix=f"see {log}")


def down(s: Settings, timeout: float = 180.0) -> str:
    data = state.read(s.run_dir)
    if data is None:
        raise NotRunning("no stack is running here", fix=f"start one with {tk(s, 'up')}")
    pid = data.get("supervisor_pid")
    if isinstance(pid, int) and state.running(s.run_dir) is not None:
        # the supervisor drains its children in order: api, workers, redis
        killed = terminate([pid], timeout=timeout)
        left = [p["pid"] for p in state.live_children(data)]
        if left:
            terminate(left, timeout=30)
        with contextlib.suppress(OSError):
            state.remove(s.run_dir)
        if killed or left:
            return (f"stack stopped, but not cleanly: the supervisor (pid {pid}) had to be "
                    f"killed and {len(left)} processes stopped after it")  # fmt: skip
        return f"stack stopped (supervisor pid {pid}): api, workers, then redis"
    note = clean_stale(s) or "nothing was running"
    return f"the supervisor was gone: {note}"


def status(s: Settings) -> dict[str, Any]:
    import psutil

    data = state.read(s.run_dir)
    out: dict[str, Any] = {"running": False, "procs": []}
    if data is None:
        return out
    sup = data.get("supervisor_pid")
    out["running"] = state.running(s.run_dir) is not None
    out["supervisor_pid"] = sup
    out["ready"] = data.get("ready")
    out["api_url"] = data.get("api_url")
    out["python"] = data.get("python")
    out["env_prefix"] = data.get("env_prefix")
    now = time.time()
    for p in data.get("procs", []):
        row = dict(p, alive=False, uptime_s=None, rss_bytes=None)
        pid = p.get("pid")
        if isinstance(pid, int) and same_process(pid, p.get("pid_started")):
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                row.update(alive=True, uptime_s=round(now - proc.create_time(), 1),
                           rss_bytes=proc.memory_info().rss)  # fmt: skip
        out["procs"].append(row)
    with contextlib.suppress(Exception):
        from toolkit.health.context import Ctx

        ctx = Ctx(s)
        out["queue"] = ctx.depth.to_dict()
        out["heartbeats"] = ctx.heartbeats
    return out
