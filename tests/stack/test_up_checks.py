"""What `tk up` refuses before anything starts, with --dry-run too, and what it tells the user:
exit codes, one-line errors and warnings, runnable hints."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import StartServer
from tests.helpers import first_kind, free_port, run_tk
from toolkit.config import Settings
from toolkit.stack import hints


@pytest.fixture
def proj(project: Path) -> Iterator[Path]:
    """A project on free ports; whatever a test started in it is stopped at the end."""
    (project / "tk.yaml").write_text(
        f"redis:\n  port: {free_port()}\nserve:\n  port: {free_port()}\n"
    )
    yield project
    if (project / ".tk" / "run" / "stack.json").exists():  # a refusal that did not refuse
        run_tk(project, "down")


REFUSED = [
    pytest.param(["--api-port", "0"], {}, "--api-port must be between 1 and 65535 for `tk up`, "
                 "got 0; fix: pick a free port, e.g. --api-port 8000", id="api-port-0"),
    pytest.param(["--api-port", "70000"], {}, "--api-port must be between 1 and 65535 for "
                 "`tk up`, got 70000", id="api-port-70000"),
    pytest.param(["--redis-url", "notaurl"], {}, "bad Redis URL notaurl; fix: use "
                 "redis://[user[:password]@]host:port/0", id="redis-url"),
    pytest.param([], {"TK_SERVE_MODEL": "nosuchmodel"}, "unknown model 'nosuchmodel'; fix: "
                 "use one of: efficientnet-lite0", id="unknown-model"),
    pytest.param(["--workers", "5000"], {}, "--workers must be between 1 and 1024, got 5000",
                 id="workers-5000"),
    pytest.param(["--workers", "0"], {}, "--workers must be between 1 and 1024, got 0",
                 id="workers-0"),
]  # fmt: skip


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "real"])
@pytest.mark.parametrize(("args", "env", "message"), REFUSED)
def test_refused_up_front_with_and_without_dry_run(
    proj: Path, args: list[str], env: dict[str, str], message: str, dry: bool
) -> None:
    mode = ["--dry-run"] if dry else ["--detach"]
    result = run_tk(proj, "up", *mode, *args, env=env)
    assert result.exit_code == 2, result.output
    assert f"tk: error: {message}" in result.output
    assert len(result.output.strip().splitlines()) == 1  # the error, nothing before it
    assert not (proj / ".tk").exists() and not (proj / "redis-conf").exists()  # nothing started


def test_a_setting_out_of_range_for_up_names_where_it_came_from(proj: Path) -> None:
    (proj / "tk.yaml").write_text("serve:\n  port: 0\n")
    result = run_tk(proj, "up", "--dry-run")
    assert result.exit_code == 2
    assert "--api-port (tk.yaml serve.port) must be between 1 and 65535 for `tk up`, got 0" in (
        result.output
    )


def test_json_needs_dry_run(proj: Path) -> None:
    result = run_tk(proj, "up", "--json")
    assert result.exit_code == 2
    assert "tk: error: --json needs --dry-run; fix: `" in result.output
    assert " up --dry-run --json` prints the plan as JSON" in result.output
    assert not (proj / ".tk").exists()
    plan = run_tk(proj, "up", "--dry-run", "--json")
    assert plan.exit_code == 0 and '"warnings": []' in plan.output


def test_more_workers_than_the_machine_has_is_a_warning(proj: Path) -> None:
    n = min(1024, (os.cpu_count() or 1) + 1)
    result = run_tk(proj, "up", "--dry-run", "--workers", str(n))
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("tk: warning:")]
    assert len(warning) == 1
    assert f"--workers {n} is more than the {os.cpu_count()} CPU core" in warning[0]
    assert f"worker-{n}" in result.output  # still planned
    fits = run_tk(proj, "up", "--dry-run", "--workers", "1")
    assert fits.exit_code == 0 and "warning" not in fits.output


# --- hints name a command that runs -----------------------------------------------------


def _venv_tk() -> Path:
    return Path(sys.executable).parent / "tk"


def test_hint_names_tk_only_when_path_finds_this_tk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    cmd = hints.tk_command()
    assert cmd != "tk" and os.path.samefile(cmd, _venv_tk())
    assert shutil.which(cmd) is not None  # runnable from here as printed

    other = tmp_path / "bin"
    other.mkdir()
    (other / "tk").write_text("#!/bin/sh\necho another tk\n")
    (other / "tk").chmod(0o755)
    monkeypatch.setenv("PATH", f"{other}:/usr/bin:/bin")  # a `tk` that is not this one
    assert hints.tk_command() != "tk"

    monkeypatch.setenv("PATH", f"{_venv_tk().parent}:/usr/bin:/bin")
    assert hints.tk_command() == "tk"

    monkeypatch.chdir(_venv_tk().parent.parent.parent)  # the project holding .venv
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert hints.tk_command() in (".venv/bin/tk", str(_venv_tk()))


def test_hint_adds_the_project_when_it_is_not_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, project: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", f"{_venv_tk().parent}:/usr/bin:/bin")
    s = Settings.resolve(flags={"project_dir": project}, environ={})
    monkeypatch.chdir(project)
    assert hints.tk_command(s) == "tk"
    monkeypatch.chdir(tmp_path)
    assert hints.tk_command(s) == "tk -C proj"
    monkeypatch.chdir(project)
    down = run_tk(project, "down")
    assert down.exit_code == 1
    assert "tk: error: no stack is running here; fix: start one with `tk up`" in down.output


def test_ready_message_for_a_detached_and_a_foreground_stack(
    monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    from toolkit.cli.stack import _ready_message
    from toolkit.stack.plan import Facts, build_plan

    monkeypatch.chdir(project)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # tk not on PATH, as after ./scripts/up
    s = Settings.resolve(flags={"project_dir": project}, environ={})
    facts = Facts(
        cpu_count=2, gpu_count=0, mem_available=8 * 1024**3, worker_python=Path(sys.executable),
        env_prefix=None, python_reason="test", api_python=Path(sys.executable),
        redis_server=None, redis_version=None, conf_exists=True, redis_port=6390,
    )  # fmt: skip
    plan = build_plan(s, facts, workers=1)
    tk = shlex.quote(hints.shortest(_venv_tk()))
    detached = _ready_message(plan, s, detached=True).splitlines()
    assert f"  {tk} submit path/to/photo.jpg --wait" in detached
    assert detached[-1] == f"stop: `{tk} down`"
    assert not any("Ctrl-C" in line or " tk submit" in line for line in detached)
    foreground = _ready_message(plan, s, detached=False).splitlines()
    assert foreground[-1] == f"stop: Ctrl-C here (or `{tk} down` from another terminal)"


# --- tk logs and tk down: "nothing there" is exit 1, a bad flag exit 2 -------------------


def test_logs_flags_and_nothing_there(project: Path) -> None:
    none = run_tk(project, "logs")
    assert none.exit_code == 1
    assert "tk: error: no logs in" in none.output and "fix: start the stack with `" in none.output
    assert run_tk(project, "down").exit_code == 1  # the same "nothing there" code

    logs = project / ".tk" / "logs"
    logs.mkdir(parents=True)
    (logs / "tk-up.log").write_text("12:00:00 tk up: started worker-1 (pid 1)\n")
    (logs / "api.log").write_text("api line 1\napi line 2\n")
    negative = run_tk(project, "logs", "api", "-n", "-5")
    assert negative.exit_code == 2
    assert "tk: error: --lines must be 0 or more, got -5" in negative.output

    every = run_tk(project, "logs")
    assert every.exit_code == 0 and "tk-up     | 12:00:00 tk up: started worker-1" in every.output
    sup = run_tk(project, "logs", "tk-up")
    assert sup.exit_code == 0 and "api line" not in sup.output and "tk-up" in sup.output
    assert run_tk(project, "logs", "api", "-n", "1").output == "api       | api line 2\n"
    no_worker = run_tk(project, "logs", "worker")
    assert no_worker.exit_code == 1 and "no worker logs in" in no_worker.output
    bad = run_tk(project, "logs", "nginx")
    assert bad.exit_code == 2 and "use one of: redis, worker, api, tk-up" in bad.output
    assert "tk-up" in run_tk(project, "logs", "--help").output


# --- a Redis port that is taken ----------------------------------------------------------


def test_redis_port_held_by_this_projects_own_redis(redis_factory: StartServer) -> None:
    s = redis_factory(first_kind())  # what `tk redis harden && tk redis start` leave behind
    result = run_tk(s.project_dir, "up", "--detach", "--workers", "1")
    try:
        assert result.exit_code == 1, result.output
        assert (
            f"Redis port {s.redis_port} is already in use by this project's own Redis"
            in result.output
        )
        assert "redis stop`" in result.output and "--port" not in result.output
        assert not (s.run_dir / "stack.json").exists()
    finally:
        if (s.run_dir / "stack.json").exists():
            run_tk(s.project_dir, "down")


def test_redis_port_held_by_another_process(proj: Path) -> None:
    port = int((proj / "tk.yaml").read_text().split("port: ")[1].split()[0])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = run_tk(proj, "up", "--detach")
    assert result.exit_code == 1, result.output
    assert f"Redis port {port} is already in use" in result.output
    assert "fix: stop that process, or set another redis.port in tk.yaml and run `" in (
        result.output
    )
    assert "redis harden`" in result.output and "--port" not in result.output
    with contextlib.suppress(FileNotFoundError):
        assert not (proj / ".tk" / "run" / "stack.json").exists()
