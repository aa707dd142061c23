"""`tk doctor` against real broken states: each is reported by the right check with exit 1."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartServer
from tests.helpers import first_kind, run_tk
from toolkit.config import Settings
from toolkit.queue.protocol import TaskQueue, heartbeat_key
from toolkit.redis import connect
from toolkit.redis import server as srv


def doctor(project: Path, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = run_tk(project, "doctor", "--json", *args)
    data = json.loads(result.output)
    assert data["schema"] == 1 and data["exit_code"] == result.exit_code
    return result.exit_code, {f"{c['group']}.{c['id']}": c for c in data["checks"]}


def _beat(s: Settings, name: str, age_s: float = 0) -> None:
    w = connect.client(s, "tk-worker")
    ts = int((time.time() - age_s) * 1000)
    w.set(heartbeat_key(name), json.dumps({"consumer": name, "ts_ms": ts}), ex=600)
    w.close()


@pytest.fixture
def bare(redis_factory: StartServer) -> Settings:
    """A hardened Redis with one fresh worker heartbeat and nothing else."""
    s = redis_factory(first_kind())
    _beat(s, "w1")
    return s


def test_healthy_redis_queue_and_workers_pass(bare: Settings) -> None:
    code, checks = doctor(bare.project_dir, "--skip", "api")
    assert code == 0, {k: v for k, v in checks.items() if v["status"] == "fail"}
    assert checks["redis.auth-required"]["status"] == "ok"
    assert checks["workers.alive"]["finding"].startswith("1 live")


Breaker = Callable[[Settings], None]


def _no_password(s: Settings) -> None:
    connect.client(s, "admin").acl_setuser("default", enabled=True, nopass=True,
                                          commands=["+@all"], keys=["*"])  # fmt: skip


def _lru(s: Settings) -> None:
    connect.client(s, "admin").config_set("maxmemory-policy", "allkeys-lru")


def _aof_off(s: Settings) -> None:
    connect.client(s, "admin").config_set("appendonly", "no")


def _no_worker(s: Settings) -> None:
    connect.client(s, "admin").delete(heartbeat_key("w1"))


def _dead_consumer(s: Settings) -> None:
    """A worker that claimed tasks and died: no heartbeat, its tasks unacked and idle."""
    (s.project_dir / "tk.yaml").write_text("queue:\n  visibility_ms: 100\n")
    q = TaskQueue(connect.client(s, "tk-api"))
    q.enqueue(b"image bytes")
    worker = TaskQueue(connect.client(s, "tk-worker"))
    worker.ensure_group()
    assert len(worker.claim("ghost", count=10, block_ms=None)) == 1
    time.sleep(0.3)  # idle past 2 x the visibility timeout


def _down(s: Settings) -> None:
    srv.stop(s)


@pytest.mark.parametrize(
    ("breaker", "check"),
    [
        (_down, "redis.reachable"),
        (_no_password, "redis.auth-required"),
        (_lru, "redis.eviction-policy"),
        (_aof_off, "redis.aof"),
        (_no_worker, "workers.alive"),
        (_dead_consumer, "workers.dead-consumers"),
    ],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_broken_state_is_named(bare: Settings, breaker: Breaker, check: str) -> None:
    breaker(bare)
    t0 = time.monotonic()
    code, checks = doctor(bare.project_dir, "--skip", "api")
    assert time.monotonic() - t0 < 5
    assert code == 1
    assert checks[check]["status"] == "fail", checks[check]
    assert checks[check]["fix"]
    failed = {k for k, v in checks.items() if v["status"] == "fail"}
    if check != "redis.reachable":
        assert failed == {check}
    else:
        assert {v["status"] for k, v in checks.items() if k.startswith("queue.")} == {"skip"}


def test_full_queue(bare: Settings) -> None:
    (bare.project_dir / "tk.yaml").write_text("queue:\n  max_depth: 3\n")
    q = TaskQueue(connect.client(bare, "tk-api"))
    for _ in range(3):
        q.enqueue(b"not really an image")
    code, checks = doctor(bare.project_dir, "--only", "queue")
    assert code == 1
    assert checks["queue.depth"]["status"] == "fail"
    assert "3 waiting" in checks["queue.depth"]["finding"]


def test_missing_environment(bare: Settings) -> None:
    (bare.project_dir / "tk.yaml").write_text("serve:\n  env: no-such-env\n")
    code, checks = doctor(bare.project_dir, "--only", "env")
    assert code == 1
    assert checks["env.exists"]["status"] == "fail"
    assert "no-such-env" in checks["env.exists"]["finding"]
    up = run_tk(bare.project_dir, "up", "--dry-run")
    assert up.exit_code == 2 and "does not exist" in up.output


def test_a_hanging_api_is_reported_within_the_timeout(project: Path) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        (project / "tk.yaml").write_text(f"doctor:\n  timeout: 0.5\nserve:\n  port: {port}\n")
        t0 = time.monotonic()
        code, checks = doctor(project, "--only", "api")
        assert time.monotonic() - t0 < 3
    assert code == 1 and checks["api.ready"]["status"] == "fail"
    assert "does not answer" in checks["api.ready"]["finding"]
    assert "tk up" in checks["api.ready"]["fix"]


def test_strict_and_group_selection(bare: Settings) -> None:
    w = connect.client(bare, "tk-worker")
    w.xadd("tk:tasks:dead", {"reason": "test"})  # one dead letter: a warning
    code, checks = doctor(bare.project_dir, "--only", "queue")
    assert code == 0 and checks["queue.dead-letters"]["status"] == "warn"
    assert set(k.split(".")[0] for k in checks) == {"queue"}
    code, _ = doctor(bare.project_dir, "--only", "queue", "--strict")
    assert code == 2
    bad = run_tk(bare.project_dir, "doctor", "--only", "nope")
    assert bad.exit_code == 2 and "unknown check group 'nope'" in bad.output


def test_a_reused_pid_in_a_stale_record_is_left_alone(project: Path) -> None:
    """After a crash and a reboot, the recorded pids may belong to someone else now."""
    import subprocess

    from toolkit.stack import state

    stranger = subprocess.Popen(["sleep", "60"])
    try:
        run_dir = project / ".tk" / "run"
        run_dir.mkdir(parents=True)
        state.write(run_dir, {
            "supervisor_pid": stranger.pid, "supervisor_started": 1.0,
            "procs": [{"role": "redis", "name": "redis", "pid": stranger.pid,
                       "pid_started": 1.0}],
        })  # fmt: skip
        status = run_tk(project, "status", "--json")
        assert status.exit_code == 1 and json.loads(status.output)["running"] is False
        down = run_tk(project, "down")
        assert down.exit_code == 0 and "0 orphaned processes stopped" in down.output
        assert stranger.poll() is None  # not ours: not signalled
        assert not (run_dir / "stack.json").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_disk_is_judged_against_what_redis_can_need(bare: Settings) -> None:
    """Warn when free disk is under 2 x maxmemory (an AOF rewrite's need), not at a share."""
    import shutil

    admin = connect.client(bare, "admin")
    free = shutil.disk_usage(bare.redis_data_dir).free
    admin.config_set("maxmemory", str(free))  # 2 x maxmemory > free
    _, checks = doctor(bare.project_dir, "--only", "host")
    disk = checks["host.disk"]
    assert disk["status"] == "warn" and "keep 2 x maxmemory" in disk["fix"], disk
    admin.config_set("maxmemory", str(64 * 2**20))
    _, checks = doctor(bare.project_dir, "--only", "host")
    assert checks["host.disk"]["status"] == "ok", checks["host.disk"]
    assert "2 x maxmemory is 128.0 MiB" in checks["host.disk"]["finding"]
    admin.close()


def test_a_selection_that_contradicts_itself_or_leaves_nothing_is_refused(project: Path) -> None:
    both = run_tk(project, "doctor", "--only", "api", "--skip", "api")
    assert both.exit_code == 2
    assert "tk: error: group 'api' is both in --only and in --skip" in both.output
    assert "exit 0" not in both.output  # no (empty) table
    every = [
        arg for g in ("host", "env", "redis", "queue", "workers", "api") for arg in ("--skip", g)
    ]
    nothing = run_tk(project, "doctor", "--json", *every)
    assert nothing.exit_code == 2 and "--skip leaves no check to run" in nothing.output
    unknown = run_tk(project, "doctor", "--only", "nope", "--skip", "nope")
    assert unknown.exit_code == 2 and "unknown check group 'nope'" in unknown.output
