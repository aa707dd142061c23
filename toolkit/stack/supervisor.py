"""Run a StackPlan: start in order, restart crashed children with backoff, drain in order.

Order up:   redis (wait for PING) -> workers (wait for a heartbeat) -> api (wait for /healthz)
Order down: api (stops taking work) -> workers (finish the batch in hand) -> redis (SHUTDOWN,
            AOF synced). Children run in their own sessions so a terminal Ctrl-C reaches only
            the supervisor, which then drains in that order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from toolkit.config import Settings
from toolkit.errors import TkError
from toolkit.fsutil import ensure_dir
from toolkit.procs import started_at
from toolkit.stack import state
from toolkit.stack.logtail import telling_line
from toolkit.stack.plan import ProcSpec, StackPlan

CRASH_LIMIT = 5
"""A child that dies this many times in a row stops the stack."""
STABLE_S = 60.0
"""A child that ran this long before dying starts a new count (and a short backoff)."""
BACKOFF_MAX_S = 30.0
READY_TIMEOUT_S = {"redis": 600.0, "worker": 300.0, "api": 60.0}
"""Redis may be loading a large AOF; a worker loads torch and the model."""
LOCK_FILE = "up.lock"
DRAIN_TIMEOUT_S = {"api": 20.0, "worker": 90.0, "redis": 30.0}


class StackError(TkError):
    """The stack could not start or had to stop."""


@dataclass
class Child:
    spec: ProcSpec
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    started_mono: float = 0.0
    restarts: int = 0
    deaths: int = 0  # in a row, without a stable run in between
    restart_at: float | None = None
    last_exit: int | None = None
    log_mark: int = 0  # the log's size when this run of the child began: its output follows


class Supervisor:
    def __init__(self, settings: Settings, plan: StackPlan, say: Callable[[str], None]) -> None:
        self.s = settings
        self.plan = plan
        self.say = say
        self.children = [Child(p) for p in plan.procs]
        self.stop_reason: str | None = None
        self.failed = False
        self.ready = False

    # --- state ---------------------------------------------------------------------------
    def record(self) -> None:
        procs = [
            {
                "role": c.spec.role,
                "name": c.spec.name,
                "pid": c.proc.pid if c.proc and c.proc.poll() is None else None,
                "pid_started": started_at(c.proc.pid) if c.proc else None,
                "started": c.started,
                "restarts": c.restarts,
                "log": str(c.spec.log),
            }
            for c in self.children
        ]
        state.write(
            self.s.run_dir,
            {
                "supervisor_pid": os.getpid(),
                "supervisor_started": started_at(os.getpid()),
                "started": self.started,
                "ready": self.ready,
                "stopping": self.stop_reason,
                "api_url": self.plan.api_url,
                "redis_port": self.plan.redis_port,
                "external_redis": self.plan.external_redis,
                "python": str(self.plan.worker_python),
                "env_prefix": str(self.plan.env_prefix) if self.plan.env_prefix else None,
                "workers": self.plan.workers,
                "procs": procs,
            },
        )

    # --- children ------------------------------------------------------------------------
    def _spawn(self, c: Child) -> None:
        ensure_dir(c.spec.log.parent)
        env = dict(os.environ, **c.spec.env)
        if self.s.redis_url:  # may hold a password: environment only, never argv or plan
            env["TK_REDIS_URL"] = self.s.redis_url
        log: IO[bytes]
        with open(c.spec.log, "ab") as log:
            # logs are appended to across runs: quote only what this run writes
            c.log_mark = log.seek(0, os.SEEK_END)
            c.proc = subprocess.Popen(
                list(c.spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.s.project_dir,
                start_new_session=True,
            )
        c.started = time.time()
        c.started_mono = time.monotonic()
        c.restart_at = None

    def _wait_ready(self, c: Child) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S[c.spec.role]
        while time.monotonic() < deadline:
            if self.stop_reason:
                raise StackError(f"stopped while starting {c.spec.name}: {self.stop_reason}")
            for other in self.children:
                if other.proc is not None and other.proc.poll() is not None:
                    said, fix = _tail(other)
                    raise StackError(
                        f"{other.spec.name} exited during start-up "
                        f"(code {other.proc.returncode}): {said}",
                        fix=f"{fix}; log: {other.spec.log}" if fix else f"see {other.spec.log}",
                    )
            if self._is_ready(c):
                return
            time.sleep(0.2)
        raise StackError(
            f"{c.spec.name} was not ready within {READY_TIMEOUT_S[c.spec.role]:.0f}s",
            fix=f"see {c.spec.log}",
        )

    def _is_ready(self, c: Child) -> bool:
        try:
            if c.spec.role == "redis":
                from toolkit.redis import connect

                with connect.client(self.s, "admin", timeout=1.0, retry=None) as r:
                    return bool(r.ping())
            if c.spec.role == "worker":
                return c.spec.name in self._heartbeats()
            with urllib.request.urlopen(self.plan.api_url + "/healthz", timeout=1.0) as resp:
                return int(resp.status) == 200
        except Exception:
            return False

    def _heartbeats(self) -> set[str]:
        from toolkit.queue.depth import live_workers
        from toolkit.redis import connect

        with connect.client(self.s, "tk-monitor", timeout=1.0, retry=None) as r:
            return set(live_workers(r))

    def start_all(self) -> None:
        self.started = time.time()
        self.record()
        for role in ("redis", "worker", "api"):
            group = [c for c in self.children if c.spec.role == role]
            for c in group:
                self._spawn(c)
                self.say(f"started {c.spec.name} (pid {c.proc.pid if c.proc else '?'})")
            self.record()
            for c in group:
                self._wait_ready(c)
            if group:
                self.say(f"{role} ready")
        self.ready = True
        self.record()

    def watch_once(self) -> None:
        """One supervision step: notice deaths, schedule and perform restarts."""
        now = time.monotonic()
        changed = False
        for c in self.children:
            if c.proc is not None and c.proc.poll() is not None and c.restart_at is None:
                c.last_exit = c.proc.returncode
                c.deaths = 1 if now - c.started_mono >= STABLE_S else c.deaths + 1
                if c.deaths >= CRASH_LIMIT:
                    self.failed = True
                    said, fix = _tail(c)
                    self.stop_reason = (
                        f"{c.spec.name} died {c.deaths} times in a row "
                        f"(last exit code {c.last_exit}): {said}"
                        + (f"; fix: {fix}" if fix else "")
                        + f"; log: {c.spec.log}"
                    )
                    self.say(f"stopping the stack: {self.stop_reason}")
                    return
                delay = min(BACKOFF_MAX_S, 0.5 * 2 ** (c.deaths - 1))
                c.restart_at = now + delay
                self.say(
                    f"{c.spec.name} exited with code {c.last_exit}; restarting in {delay:.1f}s"
                )
                changed = True
            elif c.restart_at is not None and now >= c.restart_at:
                self._spawn(c)
                c.restarts += 1
                self.say(f"restarted {c.spec.name} (pid {c.proc.pid if c.proc else '?'}, "
                         f"restart #{c.restarts})")  # fmt: skip
                changed = True
        if changed:
            self.record()

    def loop(self) -> None:
        while self.stop_reason is None:
            self.watch_once()
            time.sleep(0.2)

    # --- drain ---------------------------------------------------------------------------
    def drain(self) -> None:
        with contextlib.suppress(Exception):  # stopping the children matters more
            self.record()
        for role in ("api", "worker", "redis"):
            group = [c for c in self.children if c.spec.role == role and c.proc is not None]
            live = [c for c in group if c.proc is not None and c.proc.poll() is None]
            if not live:
                continue
            self.say(f"stopping {role} ({len(live)})")
            for c in live:
                self._ask_to_stop(c)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S[role]
            for c in live:
                assert c.proc is not None
                try:
                    c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.say(f"{c.spec.name} did not stop in time: killing it")
                    c.proc.kill()
                    c.proc.wait()
        self.say("stack stopped")

    def _ask_to_stop(self, c: Child) -> None:
        """SIGTERM: uvicorn stops taking requests, a worker finishes its batch, and Redis
        does what SHUTDOWN does (fsync the AOF, save, exit)."""
        assert c.proc is not None
        with contextlib.suppress(OSError):
            c.proc.send_signal(signal.SIGTERM)

    # --- the whole run -------------------------------------------------------------------
    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Start, supervise until a signal or a crash loop, drain. Returns the exit code."""
        lock = _take_lock(self.s)

        def handler(signum: int, _: Any) -> None:
            if self.stop_reason is None:
                self.stop_reason = f"signal {signal.Signals(signum).name}"

        sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        old = {sig: signal.signal(sig, handler) for sig in sigs}
        try:
            try:
                self.start_all()
            except TkError as exc:
                self.failed = True
                self.stop_reason = exc.one_line()
                raise
            if on_ready:
                on_ready()
            self.loop()
        finally:
            self.drain()
            with contextlib.suppress(Exception):
                data = state.read(self.s.run_dir)
                if data and data.get("supervisor_pid") == os.getpid():
                    state.remove(self.s.run_dir)
            for sig, h in old.items():
                signal.signal(sig, h)
            lock.close()
        return 1 if self.failed else 0


def _take_lock(s: Settings) -> IO[str]:
    """One supervisor per project: an exclusive lock held for the supervisor's life."""
    import fcntl

    from toolkit.stack.hints import tk

    ensure_dir(s.run_dir)
    fh = open(s.run_dir / LOCK_FILE, "w")  # noqa: SIM115 - held open until run() returns
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise StackError(
            "another `tk up` is already running for this project",
            fix=f"{tk(s, 'status')} to see it, {tk(s, 'down')} to stop it",
        ) from None
    return fh


def _tail(c: Child) -> tuple[str, str | None]:
    """What this run of a child said last that tells why it stopped, and the fix it named."""
    return telling_line(c.spec.log, c.log_mark)
