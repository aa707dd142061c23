"""The checks `tk doctor` runs, by group. Each takes the shared Ctx and returns an Outcome."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from toolkit.errors import TkError
from toolkit.health.context import Ctx, Unreachable
from toolkit.health.model import Check, Outcome, fail, ok, skip, warn
from toolkit.units import human_size

# --- host ---------------------------------------------------------------------------------


def python_version(ctx: Ctx) -> Outcome:
    v = sys.version_info
    text = f"Python {v.major}.{v.minor}.{v.micro} ({sys.executable})"
    if v < (3, 10):
        return fail(text, "use Python 3.10 or newer")
    return ok(text)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_free(ctx: Ctx) -> Outcome:
    """Fail under ``doctor.min_disk``; warn under 2 x maxmemory, what an AOF rewrite can need
    (a new base file of up to the dataset's size beside the old files). A share of the disk
    says little: 20 GiB free of 250 is plenty for a 6 GiB Redis."""
    where = _existing(ctx.s.redis_data_dir)
    usage = shutil.disk_usage(where)
    text = f"{human_size(usage.free)} free of {human_size(usage.total)} at {where} (Redis AOF)"
    if usage.free < ctx.s.doctor_min_disk:
        return fail(text, "free disk space: Redis stops accepting writes when the AOF can't grow")
    limit = _redis_maxmemory(ctx)
    if limit is None:  # no Redis and no config to read it from: fall back to a share
        if usage.free < usage.total * 0.10:
            return warn(text, "less than 10% free: free some space before the AOF fills the disk")
        return ok(text)
    need = 2 * limit
    if usage.free < need:
        return warn(text, f"keep 2 x maxmemory ({human_size(need)}) free: an AOF rewrite "
                    "writes up to the dataset's size beside the current files")  # fmt: skip
    return ok(f"{text}; 2 x maxmemory is {human_size(need)}")


def _redis_maxmemory(ctx: Ctx) -> int | None:
    """maxmemory of the live server, else of the generated redis.conf; None if unknown or 0."""
    from toolkit.redis.audit import facts_from_conf
    from toolkit.redis.server import ServerPaths
    from toolkit.units import parse_size

    try:
        return int(ctx.info.get("maxmemory", 0)) or None
    except Exception:  # unreachable, or not allowed: the config says what it will be
        pass
    try:
        value = facts_from_conf(ServerPaths.from_settings(ctx.s).conf).get("maxmemory")
        return parse_size(value or "0", "maxmemory") or None
    except (OSError, ValueError, TkError):
        return None


def memory(ctx: Ctx) -> Outcome:
    import psutil

    vm = psutil.virtual_memory()
    text = f"{human_size(vm.available)} available of {human_size(vm.total)}"
    if vm.available < vm.total * 0.05:
        return fail(text, "less than 5% memory available: stop something or add memory")
    if vm.available < vm.total * 0.15:
        return warn(text, "less than 15% memory available: workers may be OOM-killed")
    return ok(text)


def cpu_count(ctx: Ctx) -> Outcome:
    import os

    n = os.cpu_count() or 1
    return ok(f"{n} CPU cores")


# --- redis ----------------------------------------------------------------------------------


def redis_reachable(ctx: Ctx) -> Outcome:
    from toolkit.redis import connect
    from toolkit.redis.urls import mask_url

    try:
        url = connect.resolve_url(ctx.s, "tk-monitor")
    except TkError as exc:  # no credentials.json and no TK_REDIS_URL, or a bad URL
        return fail(exc.message, exc.fix or "run `tk redis harden`, or set TK_REDIS_URL")
    try:
        t0 = time.perf_counter()
        ctx.monitor.ping()
        ms = (time.perf_counter() - t0) * 1000
    except Unreachable as exc:
        return fail(f"cannot reach {mask_url(url)}: {exc}", "start it: `tk up` or `tk redis start`")
    return ok(f"PONG from {mask_url(url)} in {ms:.1f} ms")


def _needs_redis(func: Callable[[Ctx], Outcome]) -> Callable[[Ctx], Outcome]:
    def wrapped(ctx: Ctx) -> Outcome:
        try:
            return func(ctx)
        except Unreachable:
            return skip("Redis unreachable")

    wrapped.__name__ = func.__name__
    return wrapped


@_needs_redis
def redis_auth(ctx: Ctx) -> Outcome:
    import redis

    from toolkit.redis import connect

    _ = ctx.monitor  # reachable at all?
    parts = urlsplit(connect.resolve_url(ctx.s, "tk-monitor"))
    anon_url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    tls: dict[str, Any] = {"ssl_cert_reqs": "none"} if parts.scheme == "rediss" else {}
    anon = redis.Redis.from_url(
        anon_url, socket_timeout=ctx.timeout, socket_connect_timeout=ctx.timeout, retry=None,
        **tls,
    )  # fmt: skip
    try:
        anon.dbsize()
    except (redis.AuthenticationError, redis.exceptions.NoPermissionError):
        return ok("a client without a password is refused")
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "NOPERM" in str(exc):
            return ok("a client without a password is refused")
        raise
    finally:
        anon.close()
    return fail(
        "a client without a password is accepted",
        "turn the default user off (`tk redis harden`, then restart Redis)",
    )


@_needs_redis
def redis_aof(ctx: Ctx) -> Outcome:
    if int(ctx.info.get("aof_enabled", 0)) == 1:
        return ok("appendonly yes: queued tasks survive a crash")
    return fail("appendonly no: a crash loses every queued task", "CONFIG SET appendonly yes")


@_needs_redis
def redis_maxmemory(ctx: Ctx) -> Outcome:
    limit = int(ctx.info.get("maxmemory", 0))
    if limit == 0:
        return fail("maxmemory 0 (no limit): Redis can exhaust the host", "set maxmemory")
    return ok(f"maxmemory {human_size(limit)}")


@_needs_redis
def redis_policy(ctx: Ctx) -> Outcome:
    policy = str(ctx.info.get("maxmemory_policy", "?"))
    if policy == "noeviction":
        return ok("maxmemory-policy noeviction")
    return fail(
        f"maxmemory-policy {policy}: queued tasks can be silently evicted",
        "CONFIG SET maxmemory-policy noeviction (and fix redis.conf)",
    )


@_needs_redis
def redis_bind(ctx: Ctx) -> Outcome:
    admin = ctx.admin
    if admin is None:
        return skip("needs the admin password (not on this machine)")
    cfg = admin.config_get("bind")
    cfg.update(admin.config_get("tls-port"))
    bind = str(cfg.get("bind", ""))
    tls = str(cfg.get("tls-port", "0")) not in {"", "0"}
    loop = all(
        a.lstrip("-") in {"127.0.0.1", "::1", "localhost"} or a.startswith("127.")
        for a in bind.split()
    )
    if bind and loop:
        return ok(f"bind {bind}")
    if tls:
        return ok(f"bind {bind or '*'} with TLS")
    return fail(f"bind {bind or '*'} without TLS", "bind to 127.0.0.1 -::1 or turn TLS on")


@_needs_redis
def redis_evicted(ctx: Ctx) -> Outcome:
    n = int(ctx.info.get("evicted_keys", 0))
    if n:
        return fail(f"{n} keys evicted since start", "set maxmemory-policy noeviction")
    return ok("evicted_keys 0")


@_needs_redis
def redis_headroom(ctx: Ctx) -> Outcome:
    used, limit = int(ctx.info.get("used_memory", 0)), int(ctx.info.get("maxmemory", 0))
    if not limit:
        return skip("no maxmemory")
    share = used / limit
    text = f"{human_size(used)} used of {human_size(limit)} ({share:.0%})"
    if share >= 0.95:
        return fail(text, "producers will get OOM errors: drain the queue or raise maxmemory")
    if share >= 0.80:
        return warn(text, "drain the queue or raise maxmemory")
    return ok(text)


# --- queue ----------------------------------------------------------------------------------


@_needs_redis
def queue_depth(ctx: Ctx) -> Outcome:
    d, limit = ctx.depth, ctx.s.queue_max_depth
    text = f"{d.waiting} waiting, {d.pending} pending (limit {limit})"
    if d.waiting >= limit:
        return fail(text + ": the API answers 503", "add workers (`tk up --workers N`)")
    if d.waiting >= 0.8 * limit:
        return warn(text, "add workers before the API starts refusing tasks")
    return ok(text)


@_needs_redis
def queue_age(ctx: Ctx) -> Outcome:
    age, limit = ctx.depth.oldest_waiting_age_s, ctx.s.doctor_max_wait_s
    if age is None:
        return ok("nothing waiting")
    text = f"oldest waiting task {age:.0f}s old (limit {limit:.0f}s)"
    if age > limit:
        return fail(text, "workers are not keeping up or not running: `tk status`")
    if age > limit / 2:
        return warn(text, "workers are falling behind")
    return ok(text)


@_needs_redis
def queue_dead(ctx: Ctx) -> Outcome:
    n, limit = ctx.depth.dead, ctx.s.doctor_max_dead
    if n == 0:
        return ok("dead-letter stream empty")
    text = f"{n} tasks in the dead-letter stream"
    if n > limit:
        return fail(text, "read them with `tk queue dlq` and fix the cause")
    return warn(text, "read them with `tk queue dlq`")


@_needs_redis
def queue_stuck(ctx: Ctx) -> Outcome:
    age = ctx.depth.oldest_pending_age_s
    vis = ctx.s.queue_visibility_ms / 1000
    if age is None:
        return ok("no claimed task waiting for an ack")
    text = f"oldest claimed task {age:.0f}s old (visibility timeout {vis:.0f}s)"
    if age > 3 * vis + 60:
        return fail(text, "no live worker reclaims it: start workers (`tk up`)")
    return ok(text)


# --- workers --------------------------------------------------------------------------------


@_needs_redis
def workers_alive(ctx: Ctx) -> Outcome:
    beats = ctx.heartbeats
    if not beats:
        return fail("no live worker heartbeat", "start workers: `tk up` (or `tk worker`)")
    return ok(f"{len(beats)} live: {', '.join(sorted(beats))}")


@_needs_redis
def workers_expected(ctx: Ctx) -> Outcome:
    state = ctx.stack_state
    if not state or not state.get("procs"):
        return skip("no stack started here (`tk up`): nothing to compare with")
    want = sorted(p["name"] for p in state["procs"] if p.get("role") == "worker")
    missing = [w for w in want if w not in ctx.heartbeats]
    if missing:
        return fail(
            f"no heartbeat from {', '.join(missing)} ({len(want) - len(missing)} of "
            f"{len(want)} live)",
            "see `tk status` and `tk logs worker`; a hung worker: `tk down && tk up`",
        )
    return ok(f"all {len(want)} workers of this stack are live")


@_needs_redis
def workers_silent(ctx: Ctx) -> Outcome:
    """A consumer that holds claimed tasks, has no heartbeat and has been idle for long:
    a dead worker whose tasks no live worker has reclaimed."""
    limit_ms = 2 * ctx.s.queue_visibility_ms
    stuck = [
        f"{c.name} ({c.pending} tasks, idle {c.idle_ms / 1000:.0f}s)"
        for c in ctx.depth.consumers
        if c.pending and not c.alive and c.idle_ms > limit_ms
    ]
    if stuck:
        return fail(
            f"dead consumers still hold tasks: {', '.join(stuck)}",
            "start a worker (it reclaims them after the visibility timeout): `tk up`",
        )
    return ok("no dead consumer holds tasks")


# --- api ------------------------------------------------------------------------------------


def api_ready(ctx: Ctx) -> Outcome:
    import json
    import urllib.error
    import urllib.request

    url = ctx.api_url + "/readyz"
    try:
        with urllib.request.urlopen(url, timeout=ctx.timeout) as resp:
            return ok(f"{url}: {resp.status}")
    except urllib.error.HTTPError as exc:
        try:
            body: Any = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        reason = body.get("detail") or body.get("reason") or exc.reason
        return fail(f"{url}: {exc.code} {reason}", "see `tk status` and `tk logs api`")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return fail(f"{url} does not answer ({reason})", "start the stack: `tk up`")


CHECKS: tuple[Check, ...] = (
    Check("host", "python", python_version),
    Check("host", "disk", disk_free),
    Check("host", "memory", memory),
    Check("host", "cpu", cpu_count),
    Check("redis", "reachable", redis_reachable),
    Check("redis", "auth-required", redis_auth),
    Check("redis", "aof", redis_aof),
    Check("redis", "maxmemory", redis_maxmemory),
    Check("redis", "eviction-policy", redis_policy),
    Check("redis", "bind", redis_bind),
    Check("redis", "evicted-keys", redis_evicted),
    Check("redis", "memory-headroom", redis_headroom),
    Check("queue", "depth", queue_depth),
    Check("queue", "oldest-waiting", queue_age),
    Check("queue", "dead-letters", queue_dead),
    Check("queue", "stuck-pending", queue_stuck),
    Check("workers", "alive", workers_alive),
    Check("workers", "expected", workers_expected),
    Check("workers", "dead-consumers", workers_silent),
    Check("api", "ready", api_ready),
)
