"""`tk up --detach` / `status` / `down` through the CLI against real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import alive, first_kind, free_port, run_tk
from tests.serve.stack import jpeg

pytestmark = pytest.mark.slow


def _project(tmp: Path) -> Path:
    project = tmp / "proj"
    project.mkdir(parents=True)
    (project / "tk.yaml").write_text(
        f"redis:\n  port: {free_port()}\nserve:\n  port: {free_port()}\n"
        "queue:\n  visibility_ms: 3000\n"
    )
    return project


def _status(project: Path) -> dict[str, Any]:
    return json.loads(run_tk(project, "status", "--json").output)  # type: ignore[no-any-return]


def _pids(info: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in info["procs"] if p["pid"]}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Path]:
    project = _project(tmp_path)
    seen: set[int] = set()
    result = run_tk(project, "up", "--detach", "--workers", "2")
    assert result.exit_code == 0, result.output
    try:
        _check_ready_hints(result.output, project)
        yield project
    finally:
        info = _status(project)
        seen |= set(_pids(info).values()) | {info.get("supervisor_pid") or 0}
        run_tk(project, "down")
        for pid in seen - {0}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _check_ready_hints(output: str, project: Path) -> None:
    """A detached stack says how to stop it (not Ctrl-C), with a command that runs from here."""
    import shlex
    import shutil

    assert "Ctrl-C" not in output
    stop = output.strip().splitlines()[-1]
    assert stop.startswith("stop: `") and stop.endswith(" down`"), stop
    cmd = shlex.split(stop.removeprefix("stop: ").strip("`"))
    assert shutil.which(cmd[0]) is not None, cmd  # `tk` on PATH, or a path to it
    if "-C" in cmd:  # the project, when it is not the current directory
        assert Path(cmd[cmd.index("-C") + 1]).resolve() == project.resolve()
    submit = next(line for line in output.splitlines() if " submit " in line)
    assert submit.strip().startswith(" ".join(shlex.quote(c) for c in cmd[:-1]) + " submit")


def _api(project: Path) -> str:
    return str(_status(project)["api_url"])


def _post(url: str, image: bytes) -> str:
    r = httpx.post(url + "/predict", files={"file": ("x.jpg", image, "image/jpeg")}, timeout=30)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _result(url: str, tid: str, wait: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    while True:
        r = httpx.get(f"{url}/result/{tid}", params={"wait": 10}, timeout=30)
        body: dict[str, Any] = r.json()
        if body.get("status") in {"completed", "failed"} or time.monotonic() > deadline:
            return body


def _wait_restarted(project: Path, name: str, old_pid: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _status(project)
        row = next(p for p in info["procs"] if p["name"] == name)
        if row["pid"] and row["pid"] != old_pid and row["alive"] and row["restarts"] >= 1:
            return row  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise AssertionError(f"{name} was not restarted")


def test_up_serves_restarts_and_down_leaves_nothing(stack: Path) -> None:
    project, url = stack, _api(stack)
    info = _status(project)
    assert info["running"] and info["ready"]
    assert {p["role"] for p in info["procs"]} == {"redis", "worker", "api"}
    assert all(p["alive"] for p in info["procs"])

    again = run_tk(project, "up", "--detach")
    assert again.exit_code == 1 and "already running" in again.output

    # a real photo over real HTTP
    body = _result(url, _post(url, jpeg("chelsea.png")))
    assert body["status"] == "completed"
    assert 281 <= body["top_k"][0]["index"] <= 285

    # a worker killed mid-run: restarted, and every task completes
    pids = _pids(info)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: _post(url, jpeg("coffee.png")), range(40)))
    os.kill(pids["worker-1"], signal.SIGKILL)
    _wait_restarted(project, "worker-1", pids["worker-1"])
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: _result(url, t, wait=90), ids))
    assert [r["status"] for r in results] == ["completed"] * 40

    # Redis killed: restarted from its AOF, results still there (appendfsync everysec: what
    # was written more than a second before the kill is on disk)
    time.sleep(2)
    os.kill(pids["redis"], signal.SIGKILL)
    _wait_restarted(project, "redis", pids["redis"])
    deadline, again_body = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        try:
            again_body = httpx.get(f"{url}/result/{ids[0]}", timeout=5).json()
            if again_body.get("status") == "completed":
                break
        except (httpx.HTTPError, ValueError):
            pass  # the API answers 503 while Redis restarts
        time.sleep(0.3)
    assert again_body.get("status") == "completed", again_body

    code = run_tk(project, "doctor", "--json")
    assert json.loads(code.output)["exit_code"] == 0, code.output

    # no password in any command line or log of the stack
    import subprocess

    from toolkit.redis import credentials

    creds = credentials.load(project / "redis-conf")
    assert creds is not None
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    logs = "".join(p.read_text(errors="replace") for p in (project / ".tk/logs").glob("*"))
    for pw in creds.passwords.values():
        assert pw not in ps and pw not in logs

    everyone = set(_pids(_status(project)).values()) | {_status(project)["supervisor_pid"]}
    down = run_tk(project, "down")
    assert down.exit_code == 0, down.output
    assert [pid for pid in everyone if alive(pid)] == []
    assert not (project / ".tk/run/stack.json").exists()
    assert run_tk(project, "status").exit_code == 1


def test_no_task_lost_across_down_and_up(stack: Path) -> None:
    project, url = stack, _api(stack)
    image = jpeg("chelsea.png")
    workers = [p["pid"] for p in _status(project)["procs"] if p["role"] == "worker"]
    for pid in workers:  # hold the workers so that a backlog builds up
        os.kill(pid, signal.SIGSTOP)
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda _: _post(url, image), range(300)))
    depth = json.loads(run_tk(project, "queue", "depth", "--json").output)
    assert depth["waiting"] + depth["pending"] >= 290  # queued or claimed, none done
    for pid in workers:
        os.kill(pid, signal.SIGCONT)
    assert run_tk(project, "down").exit_code == 0  # drains while most tasks still wait
    assert run_tk(project, "up", "--detach", "--workers", "2").exit_code == 0
    url = _api(project)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: _result(url, t, wait=120), ids))
    assert [r["status"] for r in results] == ["completed"] * 300


def test_refusals_start_nothing(tmp_path: Path) -> None:
    project = _project(tmp_path)
    api_port = int((project / "tk.yaml").read_text().split("port: ")[2].split()[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", api_port))
        s.listen()
        busy = run_tk(project, "up", "--detach")
    assert busy.exit_code == 1
    assert f"API port {api_port} is already in use" in busy.output
    assert len(busy.output.strip().splitlines()) <= 2  # maybe the harden line, then the error
    assert not (project / ".tk/run/stack.json").exists()
    assert not (project / ".tk/run/redis.pid").exists()

    conf = project / "tk.yaml"
    good = conf.read_text()
    model = "torchvision:resnet50=/nonexistent/resnet50.pth"
    conf.write_text(good.replace("serve:\n", f"serve:\n  model: {model}\n"))
    missing = run_tk(project, "up", "--detach")
    assert missing.exit_code == 2
    assert "model file /nonexistent/resnet50.pth does not exist" in missing.output
    dry = run_tk(project, "up", "--dry-run")  # refused by the plan alone, too
    assert dry.exit_code == 2 and "does not exist" in dry.output
    conf.write_text(good)

    blocker = tmp_path / "blocker"
    blocker.write_text("a file where .tk should be a directory")
    bad_state = run_tk(project, "up", "--detach", env={"TK_STATE_DIR": str(blocker / "tk")})
    assert bad_state.exit_code == 1
    assert "cannot create directory" in bad_state.output


def test_a_child_that_keeps_dying_stops_the_stack(stack: Path) -> None:
    from toolkit.stack.supervisor import CRASH_LIMIT

    project = stack
    info = _status(project)
    supervisor = info["supervisor_pid"]
    everyone = set(_pids(info).values())
    pid = _pids(info)["worker-2"]
    for _ in range(CRASH_LIMIT):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and alive(supervisor):
            rows = [p for p in _status(project).get("procs", []) if p["name"] == "worker-2"]
            if rows and rows[0]["pid"] not in (None, pid) and rows[0]["alive"]:
                pid = rows[0]["pid"]
                everyone.add(pid)
                break
            time.sleep(0.1)
    deadline = time.monotonic() + 120
    while alive(supervisor) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(supervisor)
    log = (project / ".tk/logs/tk-up.log").read_text()
    assert f"worker-2 died {CRASH_LIMIT} times" in log
    assert [p for p in everyone if alive(p)] == []  # drained: nothing left running


def test_up_against_an_existing_redis(redis_factory: Any, tmp_path: Path) -> None:
    """Workers and API on one machine, Redis elsewhere: --redis-url, no Redis started here."""
    import shutil

    remote = redis_factory(first_kind(), proj=tmp_path / "redis-host")
    project = _project(tmp_path / "app-host")
    # the documented way to share credentials: copy credentials.json (mode 0600)
    (project / "redis-conf").mkdir(mode=0o700)
    shutil.copy2(remote.redis_conf_dir / "credentials.json", project / "redis-conf")
    url = f"redis://127.0.0.1:{remote.redis_port}/0"
    result = run_tk(project, "up", "--detach", "--workers", "1", "--redis-url", url)
    try:
        assert result.exit_code == 0, result.output
        info = _status(project)
        assert [p["role"] for p in info["procs"]] == ["worker", "api"]
        body = _result(_api(project), _post(_api(project), jpeg("coffee.png")))
        assert body["status"] == "completed" and body["top_k"][0]["index"] in (967, 968)
    finally:
        run_tk(project, "down")
    assert run_tk(remote.project_dir, "redis", "ping").exit_code == 0  # left running


def test_crashed_supervisor_is_cleaned_up_by_the_next_up(stack: Path) -> None:
    project = stack
    info = _status(project)
    orphans = set(_pids(info).values())
    os.kill(info["supervisor_pid"], signal.SIGKILL)  # the children live on, orphaned
    deadline = time.monotonic() + 10
    while alive(info["supervisor_pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    status = run_tk(project, "status")
    assert status.exit_code == 1 and "supervisor gone" in status.output
    again = run_tk(project, "up", "--detach", "--workers", "1")
    assert again.exit_code == 0, again.output
    assert f"{len(orphans)} orphaned processes stopped" in again.output
    assert [p for p in orphans if alive(p)] == []
    fresh = _status(project)
    assert fresh["running"] and all(p["alive"] for p in fresh["procs"])
    logs = run_tk(project, "logs", "api", "--lines", "5")
    assert logs.exit_code == 0 and "api" in logs.output
    assert run_tk(project, "logs", "nginx").exit_code == 2
