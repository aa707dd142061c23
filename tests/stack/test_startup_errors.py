"""A child that dies during start-up: the error quoted is what this run wrote (logs are
appended to across runs), whole, or cut at a word boundary when very long."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, run_tk
from toolkit.config import Settings
from toolkit.errors import TkError
from toolkit.stack.logtail import QUOTE_LIMIT, clip
from toolkit.stack.plan import Facts, ProcSpec, build_plan
from toolkit.stack.supervisor import Supervisor


def _settings(project: Path) -> Settings:
    return Settings.resolve(flags={"project_dir": project}, environ={})


def _run_one_worker(s: Settings, script: str) -> str:
    """Supervise one fake worker running ``script``; the one-line error `tk up` prints."""
    facts = Facts(
        cpu_count=1, gpu_count=0, mem_available=2**30, worker_python=Path(sys.executable),
        env_prefix=None, python_reason="test", api_python=Path(sys.executable),
        redis_server=None, redis_version=None, conf_exists=True, redis_port=free_port(),
    )  # fmt: skip
    plan = build_plan(s, facts, workers=1)
    log = s.log_dir / "worker-1.log"
    fake = ProcSpec("worker", "worker-1", (sys.executable, "-c", script), log)
    sup = Supervisor(s, dataclasses.replace(plan, procs=(fake,)), lambda _msg: None)
    try:
        with pytest.raises(TkError) as err:
            sup.run()
    finally:
        for c in sup.children:  # never leave the fake behind, whatever happened
            if c.proc is not None and c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()
    return err.value.one_line()


@pytest.fixture
def s(project: Path) -> Iterator[Settings]:
    settings = _settings(project)
    settings.log_dir.mkdir(parents=True)
    yield settings


def test_the_error_quoted_is_this_runs_not_an_earlier_ones(s: Settings) -> None:
    log = s.log_dir / "worker-1.log"
    log.write_text(
        "tk: error: cannot reach Redis at redis://tk-worker:***@127.0.0.1:1: Error 111 "
        "connecting; fix: start it with `tk redis start`\nTraceback (most recent call last):\n"
        "ValueError: an older failure\n"
    )
    said = _run_one_worker(
        s,
        "import sys; print('loading'); print('UserWarning: something Error-ish'); "
        "print('tk: error: bad Redis URL notaurl; fix: use redis://[user[:password]@]host:port/0');"
        " print('after the error, no marker'); sys.exit(2)",
    )
    assert said == (
        "worker-1 exited during start-up (code 2): bad Redis URL notaurl; "
        f"fix: use redis://[user[:password]@]host:port/0; log: {log}"
    )
    assert "an older failure" not in said and "Error 111" not in said
    assert log.read_text().startswith("tk: error: cannot reach Redis")  # appended, not lost


def test_a_traceback_of_this_run_wins_over_an_older_tk_error(s: Settings) -> None:
    (s.log_dir / "worker-1.log").write_text("tk: error: an old refusal; fix: old fix\n")
    said = _run_one_worker(s, "raise ValueError('boom in this run')")
    assert "exited during start-up (code 1): ValueError: boom in this run; fix: see " in said
    assert "an old refusal" not in said and "old fix" not in said


def test_a_long_error_is_quoted_whole(s: Settings) -> None:
    words = " ".join(f"word{i}" for i in range(250))  # ~1700 characters, one line
    assert len(words) < QUOTE_LIMIT
    said = _run_one_worker(
        s, f"import sys; print('tk: error: cannot load model: {words} the end'); sys.exit(1)"
    )
    assert f"cannot load model: {words} the end; fix: see " in said


def test_a_very_long_error_is_cut_at_a_word_boundary() -> None:
    line = "the checkpoint was not saved by this torch " * 100
    cut = clip(line)
    assert len(cut) <= QUOTE_LIMIT + 4 and cut.endswith(" ...")
    assert line.startswith(cut.removesuffix(" ..."))
    assert cut.removesuffix(" ...").split()[-1] in line.split()  # no word cut in two
    assert clip("short line") == "short line"
    assert clip("x" * (QUOTE_LIMIT + 10)) == "x" * QUOTE_LIMIT + " ..."


def test_up_quotes_the_newest_error_of_a_real_worker(project: Path) -> None:
    """The review's repro through the CLI: an old error in the worker's log is not quoted."""
    import socket

    (project / "tk.yaml").write_text(f"serve:\n  port: {free_port()}\n")
    host = socket.gethostname().split(".")[0] or "localhost"
    logs = project / ".tk" / "logs"
    logs.mkdir(parents=True)
    (logs / f"{host}-worker-1.log").write_text("tk: error: OLD PROBLEM; fix: an old fix\n")
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    result = run_tk(project, "up", "--detach", "--workers", "1", "--redis-url", url)
    try:
        assert result.exit_code == 1, result.output
        assert f"{host}-worker-1 exited during start-up (code 1): cannot reach Redis" in (
            result.output
        )
        assert "OLD PROBLEM" not in result.output and "an old fix" not in result.output
        # the worker's own fix, worded for a stack: not `tk redis start` (tk up runs Redis)
        assert "fix: `tk logs redis` says why" in result.output, result.output
        assert "tk redis start" not in result.output
    finally:
        if (project / ".tk" / "run" / "stack.json").exists():  # it should not have started
            run_tk(project, "down")
