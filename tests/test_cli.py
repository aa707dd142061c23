"""The command line as a user meets it: help, version, stubs, bad flags, start-up cost."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from tests.helpers import run_tk
from toolkit import __version__
from toolkit.cli import app


def _all_commands() -> list[list[str]]:
    """Every command path, e.g. ['redis', 'harden'], walked from the Typer app."""
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd: Any, prefix: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*prefix, name])
        paths.append(prefix)

    walk(root, [])
    return [p for p in paths if p]


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p))
def test_every_command_has_help(project: Path, path: list[str]) -> None:
    result = run_tk(project, *path, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    assert (cmd.help or "").strip(), f"`tk {' '.join(path)}` has no help text"


def _flat(text: str) -> str:
    """Help output as one line: box borders gone, whitespace collapsed (Rich wraps lines)."""
    return " ".join(text.replace("\u2502", " ").split())


@pytest.mark.parametrize("path", [[], *_all_commands()], ids=lambda p: " ".join(["tk", *p]))
def test_help_shows_the_defaults_and_variables_it_names(project: Path, path: list[str]) -> None:
    # Rich reads "[default: 4]" as a markup tag and drops it unless it is escaped.
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    notes = [
        note.replace("\\[", "[")
        for param in cmd.params
        for note in re.findall(r"\\?\[(?:default|env): [^\]]*\]", getattr(param, "help", "") or "")
    ]
    shown = _flat(run_tk(project, *path, "--help").output)
    missing = [note for note in notes if _flat(note) not in shown]
    assert not missing, f"`tk {' '.join(path)} --help` does not show {missing}"


def test_every_command_is_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [" ".join(p) for p in _all_commands() if f"tk {' '.join(p)}" not in readme]
    assert not missing, f"commands missing from README.md: {missing}"


def test_version(project: Path) -> None:
    result = run_tk(project, "--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"tk {__version__}"


def test_unknown_flag_is_a_usage_error(project: Path) -> None:
    result = run_tk(project, "redis", "harden", "--no-such-flag")
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys; from toolkit.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'torchvision', 'fastapi', 'uvicorn', 'rattler', 'redis')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out


def test_installed_entry_point_runs() -> None:
    """One smoke test of the real `tk` script, as installed by pip."""
    tk = Path(sys.executable).parent / "tk"
    out = subprocess.run([str(tk), "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"tk {__version__}"


def test_status_says_where_a_worker_runs_once_it_is_not_a_cpu() -> None:
    from toolkit.cli.stack import _beat

    cpu = {"completed": 4, "forward_batch": 2, "device": "cpu", "decode_threads": 1}
    assert _beat("worker-1", cpu) == "worker-1 (4 done, passes of 2)"
    gpu = {"completed": 9, "forward_batch": 16, "device": "cuda:0", "decode_threads": 8}
    assert _beat("worker-1", gpu) == "worker-1 (9 done, passes of 16, on cuda:0, 8 decode threads)"


def test_status_tables_print_findings_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.cli._common import print_status_table

    print_status_table(None, ("check", "status", "finding"), [("x", "warn", "[default: 4]")], 1)
    assert "[default: 4]" in capsys.readouterr().out


def test_redis_status_reads_as_words_and_units() -> None:
    from toolkit.cli.redis import status_lines

    info = {"running": False, "pid": None, "rss_bytes": 13205504, "maxmemory": 0,
            "aof_enabled": True, "reachable": False, "error": "connection refused"}  # fmt: skip
    lines = dict(status_lines(info))
    assert lines["running"] == "no" and lines["pid"] == "-" and lines["memory"] == "12.6 MiB"
    assert lines["maxmemory"] == "none" and lines["aof"] == "on"
    assert lines["error"] == "connection refused"


def test_doctor_without_credentials_says_it_once(project: Path) -> None:
    result = run_tk(project, "doctor", "--only", "redis", "--json")
    finding = next(c for c in json.loads(result.output)["checks"] if c["id"] == "reachable")
    assert finding["finding"].startswith("no Redis credentials in ")
    assert finding["finding"].count("no Redis credentials") == 1
    assert finding["fix"] == "run `tk redis harden` first, or set TK_REDIS_URL"


@pytest.mark.parametrize("args", [["queue", "depth"], ["queue", "dlq"], ["redis", "audit"]])
def test_json_commands_report_errors_as_json_too(project: Path, args: list[str]) -> None:
    from tests.helpers import free_port

    env = {"TK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # nothing listens there
    result = run_tk(project, *args, "--json", env=env)
    assert result.exit_code == 1
    err = json.loads(result.stdout)
    assert err["error"].startswith("cannot reach Redis at redis://127.0.0.1:")
    assert err["exit_code"] == 1 and "tk redis start" in err["fix"]
    assert result.stderr.startswith("tk: error: cannot reach Redis")


@pytest.mark.parametrize(
    "args",
    [
        ["doctor", "--json", "--only", "host", "--skip", "host"],
        ["up", "--dry-run", "--json", "--workers", "0"],
    ],
)
def test_json_errors_reach_stdout_whatever_the_command_passes_on(
    project: Path, args: list[str]
) -> None:
    result = run_tk(project, *args)
    assert result.exit_code == 2
    err = json.loads(result.stdout)
    assert err["exit_code"] == 2 and err["error"] and result.stderr.startswith("tk: error: ")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["queue", "dlq", "--count", "abc", "--json"], "Invalid value for '--count'"),
        (["doctor", "--json", "--bogus"], "No such option: --bogus"),
    ],
)
def test_usage_errors_of_json_commands_are_json_too(
    project: Path, args: list[str], said: str
) -> None:
    """Errors Click finds itself (before the command runs) also reach a script as JSON."""
    tk = Path(sys.executable).parent / "tk"
    out = subprocess.run(
        [str(tk), "-C", str(project), *args], capture_output=True, text=True, check=False
    )
    assert out.returncode == 2
    err = json.loads(out.stdout)
    assert said in err["error"] and err["exit_code"] == 2 and "--help" in err["fix"]
    assert said in out.stderr  # the human message as before


def test_json_commands_keep_their_exit_codes(project: Path) -> None:
    tk = Path(sys.executable).parent / "tk"
    ok = subprocess.run([str(tk), "-C", str(project), "config", "show", "--json"],
                        capture_output=True, text=True, check=False)  # fmt: skip
    assert ok.returncode == 0 and json.loads(ok.stdout)
    stopped = subprocess.run([str(tk), "-C", str(project), "redis", "status", "--json"],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert stopped.returncode == 1 and json.loads(stopped.stdout)["running"] is False
