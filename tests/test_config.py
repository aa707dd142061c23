"""Settings precedence: flag > TK_* env > tk.yaml > default, and `tk config show`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import run_tk
from toolkit.config import Settings
from toolkit.errors import ConfigError


def test_precedence_flag_env_yaml_default(project: Path) -> None:
    (project / "tk.yaml").write_text("redis:\n  port: 7001\n  maxmemory: 1gb\n")
    env = {"TK_REDIS_PORT": "7002"}
    s = Settings.resolve(flags={"project_dir": project}, environ=env)
    assert (s.redis_port, s.source("redis_port")) == (7002, "env TK_REDIS_PORT")
    assert (s.redis_maxmemory, s.source("redis_maxmemory")) == (1024**3, "tk.yaml redis.maxmemory")
    assert (s.redis_policy, s.source("redis_policy")) == ("noeviction", "default")
    s = Settings.resolve(flags={"project_dir": project, "redis_port": 7003}, environ=env)
    assert (s.redis_port, s.source("redis_port")) == (7003, "flag")


def test_relative_paths_are_under_the_project(project: Path) -> None:
    (project / "tk.yaml").write_text("state_dir: var/tk\n")
    s = Settings.resolve(flags={"project_dir": project}, environ={})
    assert s.state_dir == project.resolve() / "var/tk"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("redis:\n  port: lots\n", r"^redis.port in .*tk.yaml must be a whole number"),
        ("redis:\n  port: 70000\n", "between 0 and 65535"),
        ("redis:\n  prot: 1\n", "unknown setting 'redis.prot'; fix: did you mean 'redis.port'"),
        ("redis: 5\n", "'redis' is a section and must hold settings, e.g. redis: {"),
        ("redis: [1\n", "line"),
    ],
)
def test_bad_tk_yaml_names_the_problem(project: Path, yaml_text: str, message: str) -> None:
    (project / "tk.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        Settings.resolve(flags={"project_dir": project}, environ={})
    assert re.search(message, err.value.one_line()), err.value.one_line()


def test_a_binary_tk_yaml_is_one_line_exit_2(project: Path) -> None:
    (project / "tk.yaml").write_bytes(b"\xff\xfe\x00garbage\x80")
    result = run_tk(project, "config", "show")
    assert result.exit_code == 2
    assert result.output.strip().startswith(
        f"tk: error: {project.resolve() / 'tk.yaml'}: not a text file"
    )


def test_config_show_masks_secrets(project: Path) -> None:
    url = "redis://tk-api:hunter2hunter2@10.0.0.5:6379/0"
    result = run_tk(project, "config", "show", "--json", env={"TK_REDIS_URL": url})
    assert result.exit_code == 0
    assert "hunter2" not in result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["redis_url"]["value"] == "redis://tk-api:***@10.0.0.5:6379/0"
    assert rows["redis_url"]["source"] == "env TK_REDIS_URL"
    # values keep their JSON types: a number, true/false, null for "not set"
    assert rows["redis_port"]["value"] == 6379 and rows["serve_threads"]["value"] is None
    assert rows["redis_durable"]["value"] is False
    assert "hunter2" not in repr(Settings.resolve(environ={"TK_REDIS_URL": url}))


def test_config_show_table(project: Path) -> None:
    result = run_tk(project, "config", "show")
    assert result.exit_code == 0
    assert "redis_port" in result.output and "6379" in result.output


def test_bad_env_value_is_one_line_exit_2(project: Path) -> None:
    result = run_tk(project, "config", "show", env={"TK_REDIS_PORT": "many"})
    assert result.exit_code == 2
    assert result.output.strip() == "tk: error: TK_REDIS_PORT must be a whole number, got 'many'"


def test_redis_url_credentials_are_completed_per_role(project: Path) -> None:
    """TK_REDIS_URL without credentials: each role connects as itself with its own password."""
    from toolkit.redis import connect, credentials

    conf_dir = project / "redis-conf"
    creds = credentials.Credentials("127.0.0.1", 6379, False, {"tk-api": "a" * 64, "admin": "b"})
    credentials.save(conf_dir, creds)
    s = Settings.resolve(flags={"project_dir": project}, environ={})
    bare = s.with_flags(redis_url="redis://10.0.0.5:6380/0")
    assert connect.resolve_url(bare, "tk-api") == f"redis://tk-api:{'a' * 64}@10.0.0.5:6380/0"
    named = s.with_flags(redis_url="redis://admin@10.0.0.5:6380/0")
    assert connect.resolve_url(named, "tk-api") == "redis://admin:b@10.0.0.5:6380/0"
    full = s.with_flags(redis_url="redis://u:p@10.0.0.5:6380/0")
    assert connect.resolve_url(full, "tk-api") == "redis://u:p@10.0.0.5:6380/0"


def test_config_show_gives_the_port_harden_kept(project: Path) -> None:
    from toolkit.redis import credentials

    conf_dir = project / "redis-conf"
    conf_dir.mkdir()
    credentials.save(conf_dir, credentials.Credentials("127.0.0.1", 47312, False, {"admin": "a"}))
    rows = {r["name"]: r for r in json.loads(run_tk(project, "config", "show", "--json").output)}
    assert rows["redis_port"]["value"] == 47312  # what the server and the clients use
    assert rows["redis_port"]["source"].startswith("kept by `tk redis harden` in ")
    env = {"TK_REDIS_PORT": "6390"}  # a port given by env (or flag, or tk.yaml) wins, as in harden
    rows = {
        r["name"]: r
        for r in json.loads(run_tk(project, "config", "show", "--json", env=env).output)
    }
    assert rows["redis_port"]["value"] == 6390
