"""The serving commands' arguments as a user gets them wrong: one line, the right exit code,
nothing sent or started."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import free_port, run_tk
from tests.serve.stack import jpeg


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "0"], "--top-k must be between 1 and 20, got 0"),
        (["--top-k", "21"], "--top-k must be between 1 and 20, got 21"),
        (["--timeout", "-1"], "--timeout must be more than 0 seconds, got -1"),
        (["--url", "notaurl"], "API URL 'notaurl' is not an http:// or https:// URL"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
    ],
)
def test_submit_refuses_bad_arguments_before_sending(
    project: Path, args: list[str], message: str
) -> None:
    photo = project / "cat.jpg"
    photo.write_bytes(jpeg("chelsea.png"))
    result = run_tk(project, "submit", str(photo), *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tk: error: {message}"), result.output


def test_submit_without_an_api_says_where_it_looked(project: Path) -> None:
    photos = []
    for name in ("chelsea.png", "coffee.png"):
        photos.append(project / name.replace(".png", ".jpg"))
        photos[-1].write_bytes(jpeg(name))
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run_tk(project, "submit", *map(str, photos), "--wait", "--url", url)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tk: error: cannot reach the API at {url}")
    assert "fix: start the stack with `tk up`" in lines[0] and "--url" in lines[0]


@pytest.mark.parametrize("command", ["worker", "api"])
def test_a_log_level_that_does_not_exist_is_a_usage_error(project: Path, command: str) -> None:
    result = run_tk(project, command, "--log-level", "loud")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "tk: error: --log-level must be one of debug, info, warning, error, got 'loud'"
    )


def test_dead_letter_count_must_be_positive(project: Path) -> None:
    result = run_tk(project, "queue", "dlq", "--count", "0")
    assert result.exit_code == 2 and "--count" in result.output and "Traceback" not in result.output


def test_api_port_out_of_range(project: Path) -> None:
    for port in ("0", "70000"):
        result = run_tk(project, "api", "--port", port)
        assert result.exit_code == 2 and "Invalid value for '--port'" in result.output
