"""Bad input gives one clear line and never leaves an environment that counts as good."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.envs.conftest import EnvProject
from tests.helpers import free_port, run_tk
from toolkit.envs import engine_conda


def test_malformed_yaml(env_project: EnvProject) -> None:
    env_project.spec.write_text("name: demo\ndependencies:\n  - python=3.11\n  - pytorch: [\n")
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 2
    assert "inference.yml:5: YAML:" in r.stderr
    assert "tk env check-spec" in r.stderr


def test_package_no_channel_has(env_project: EnvProject) -> None:
    env_project.spec.write_text(env_project.spec.read_text().replace("  - pillow\n", "  - pilow\n"))
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 1
    assert "no set of packages satisfies the spec for cpu on linux-64" in r.stderr
    assert "No candidates were found for pilow" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not env_project.prefix().exists()


def test_conflict_is_explained_as_a_readable_tree(env_project: EnvProject) -> None:
    text = env_project.spec.read_text().replace("  - pytorch\n", "  - pytorch=2.5.1\n")
    env_project.spec.write_text(text)
    r = run_tk(env_project.root, "env", "create", "--cuda", "12.4")
    assert r.exit_code == 1
    assert "pytorch 2.5.1.* cuda* cannot be installed" in r.stderr
    assert "cuda-version" in r.stderr


def test_impossible_combination_is_refused_before_solving(env_project: EnvProject) -> None:
    text = env_project.spec.read_text().replace("  - pytorch\n", "  - pytorch>=2.6\n")
    env_project.spec.write_text(text)
    r = run_tk(env_project.root, "env", "create", "--cuda", "11.8")
    assert r.exit_code == 2
    assert "conda-forge builds PyTorch for CUDA 11.8 only up to pytorch 2.5.1" in r.stderr
    assert "fix: pin pytorch<=2.5.1 for --cuda 11.8, or pick --cuda 12.4 or newer" in r.stderr
    assert not env_project.lock.exists()


def test_unreachable_channel(env_project: EnvProject) -> None:
    env_project.write_spec(channel=f"http://127.0.0.1:{free_port()}/conda-forge")
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 1
    assert "cannot read a channel" in r.stderr and "Connection refused" in r.stderr
    assert "fix: check the channel URL" in r.stderr


def test_unwritable_prefix(env_project: EnvProject, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    r = run_tk(env_project.root, "env", "create", "--cpu", "--prefix", str(blocker / "env"))
    assert r.exit_code == 1
    assert f"cannot create {blocker / 'env'}" in r.stderr and "--prefix" in r.stderr


def test_failed_pip_step_removes_the_new_prefix(env_project: EnvProject) -> None:
    env_project.spec.write_text(
        env_project.spec.read_text().replace(
            "  - redis-py\n", "  - redis-py\n  - pip:\n      - rich\n"
        )
    )
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 1
    assert "has no python" in r.stderr
    assert not env_project.prefix().exists()
    assert not list(env_project.envs_dir.glob(".demo*"))


def test_a_killed_run_leaves_only_a_partial_dir_that_never_counts(env_project: EnvProject) -> None:
    partial = env_project.envs_dir / ".demo.tk-partial-abc123"
    (partial / "conda-meta").mkdir(parents=True)
    listed = json.loads(run_tk(env_project.root, "env", "list", "--json").stdout)["envs"]
    assert [(e["name"], e["status"]) for e in listed] == [(partial.name, "partial")]
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 0, r.output
    assert not partial.exists()


def test_an_env_tk_did_not_build_is_not_replaced(env_project: EnvProject) -> None:
    foreign = env_project.prefix()
    (foreign / "conda-meta").mkdir(parents=True)
    (foreign / "conda-meta" / "numpy-2.0-0.json").write_text("{}")
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 1
    assert "exists and was not built by tk; refusing to replace it" in r.stderr
    assert (foreign / "conda-meta" / "numpy-2.0-0.json").exists()


def test_unknown_engine_and_missing_engine(env_project: EnvProject) -> None:
    r = run_tk(env_project.root, "env", "create", "--cpu", "--engine", "pip")
    assert r.exit_code == 2 and "unknown engine 'pip'" in r.stderr
    r = run_tk(
        env_project.root, "env", "create", "--cpu", "--engine", "micromamba",
        env={"PATH": str(env_project.bin_dir)},
    )  # fmt: skip
    assert r.exit_code == 1
    assert "`micromamba` is not on PATH" in r.stderr and "--engine rattler" in r.stderr
    assert not env_project.prefix().exists()


def test_engine_command_lines() -> None:
    p, f = Path("/envs/x"), Path("/tmp/env.yml")
    conda = engine_conda.create_from_file("conda", f, p, "12.4")
    assert conda.shell() == (
        "CONDA_OVERRIDE_CUDA=12.4 conda env create --yes --prefix /envs/x --file /tmp/env.yml"
    )
    assert conda.env == {"CONDA_OVERRIDE_CUDA": "12.4"}
    mamba = engine_conda.create_from_file("mamba", f, p, None, dry_run=True)
    assert mamba.argv[:3] == ["mamba", "env", "create"] and mamba.argv[-1] == "--dry-run"
    assert mamba.env == {"CONDA_OVERRIDE_CUDA": ""}
    micro = engine_conda.create_from_file("micromamba", f, p, "11.8")
    assert micro.argv[:2] == ["micromamba", "create"]
    assert micro.shell().startswith("CONDA_OVERRIDE_CUDA=11.8 micromamba create --yes")
    exp = engine_conda.create_explicit("conda", Path("/tmp/explicit.txt"), p)
    assert exp.shell() == "conda create --yes --prefix /envs/x --file /tmp/explicit.txt"
    assert engine_conda.remove("mamba", p).shell() == "mamba env remove --yes --prefix /envs/x"


class _SlowHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a channel; package downloads take a second each (a slow mirror)."""

    def do_GET(self) -> None:
        if self.path.endswith(".tar.bz2"):
            assert isinstance(self.server, _QuietServer)
            self.server.downloading.set()
            time.sleep(1.0)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().do_GET()  # the client may be interrupted: that is the point

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    downloading: threading.Event  # set by the fixture

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.fixture
def slow_channel(cf_channel: Path) -> Iterator[tuple[str, threading.Event]]:
    """The channel's URL on a slow mirror, and an event set when a package download starts."""
    handler = functools.partial(_SlowHandler, directory=str(cf_channel))
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.downloading = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server.downloading
    finally:
        server.shutdown()
        server.server_close()


def test_ctrl_c_during_install_leaves_nothing(
    env_project: EnvProject, slow_channel: tuple[str, threading.Event], tmp_path: Path
) -> None:
    url, downloading = slow_channel
    env_project.write_spec(channel=url)
    env = dict(os.environ, TK_ENV_CACHE_DIR=str(tmp_path / "fresh-cache"))
    # A runner started in the background (`cmd &` in a script) ignores SIGINT, and children
    # inherit that; a user's terminal does not: start tk with SIGINT's default.
    was = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "toolkit", "-C", str(env_project.root), "env", "create",
             "--cpu"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if was is None else was)
    try:
        # Interrupt while a package is downloading (each takes a second): the partial
        # prefix exists by then, and the install cannot finish before the signal lands.
        deadline = time.monotonic() + 30
        while not downloading.wait(0.05):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "install never started"
        assert list(env_project.envs_dir.glob(".demo.tk-partial-*"))
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "tk: interrupted" in err
    assert not env_project.prefix().exists()
    assert not list(env_project.envs_dir.glob(".demo*"))


def test_a_failed_update_puts_the_previous_env_back(env_project: EnvProject) -> None:
    assert run_tk(env_project.root, "env", "create", "--cpu").exit_code == 0
    marker = (env_project.prefix() / "conda-meta/tk-env.json").read_text()
    spec = env_project.spec.read_text()
    env_project.spec.write_text(spec.replace("  - redis-py\n", "  - redis-py\n  - pip: [rich]\n"))
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 1 and "has no python" in r.stderr
    assert (env_project.prefix() / "conda-meta/tk-env.json").read_text() == marker
    assert (env_project.prefix() / "share/pillow/README").exists()
    assert not list(env_project.envs_dir.glob(".demo*"))
    env_project.spec.write_text(spec)
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert "nothing to do" in r.stdout


def test_unknown_cuda_version_lists_the_known_ones(env_project: EnvProject) -> None:
    r = run_tk(env_project.root, "env", "create", "--cuda", "9.9")
    assert r.exit_code == 2
    assert "unknown CUDA version 9.9: not supported" in r.stderr
    assert "fix: use a known version: 11.0," in r.stderr and "12.4" in r.stderr
    assert not env_project.prefix().exists() and not env_project.lock.exists()


def test_unknown_engine_from_the_environment_names_it(env_project: EnvProject) -> None:
    r = run_tk(env_project.root, "env", "create", "--cpu", env={"TK_ENV_ENGINE": "pip"})
    assert r.exit_code == 2
    assert "unknown engine 'pip' (from env TK_ENV_ENGINE)" in r.stderr
