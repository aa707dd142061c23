"""Fixtures for ``tk env``: real conda packages in local channels, a project using them,
and a fake ``nvidia-smi`` that prints recorded outputs (there is no GPU here)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from toolkit.envs.localchannel import PackageSpec, make_channel

DATA = Path(__file__).parent / "data"


def _pkg(name: str, version: str, build: str = "0", **kw: object) -> PackageSpec:
    files = {
        f"share/{name}/README": f"{name} {version} {build}\n",
        f"lib/{name}/VERSION": f"{version}\n",
    }
    return PackageSpec(name, version, build, files=files, **kw)  # type: ignore[arg-type]


def _cuda_torch(version: str, cuda: str, nxt: str) -> PackageSpec:
    tag = cuda.replace(".", "")
    return _pkg(
        "pytorch",
        version,
        f"cuda{tag}_py311_0",
        depends=("python 3.11.*", f"cuda-version >={cuda},<{nxt}", f"__cuda >={cuda}"),
    )


# A conda-forge style stack: pytorch builds say cpu/cuda in the build string; cuda builds
# need the __cuda virtual package and a cuda-version.
CONDA_FORGE_STACK = [
    _pkg("python", "3.11.9", "h0_cpython"),
    _pkg("python", "3.12.4", "h0_cpython"),
    _pkg("pillow", "10.4.0", subdir="noarch"),
    _pkg("redis-py", "5.0.8", subdir="noarch"),
    _pkg("psutil", "6.0.0", "py311_0", depends=("python 3.11.*",)),
    _pkg("pytorch", "2.5.1", "cpu_py311_0", depends=("python 3.11.*",)),
    _pkg("pytorch", "2.6.0", "cpu_py311_0", depends=("python 3.11.*",)),
    _cuda_torch("2.5.1", "11.8", "11.9"),
    _cuda_torch("2.6.0", "12.4", "12.5"),
    _cuda_torch("2.6.0", "12.8", "12.9"),
    *[
        _pkg("cuda-version", v, "h0", constrains=(f"__cuda >={v}",))
        for v in ("11.8", "12.4", "12.8")
    ],
]

# The legacy pytorch/nvidia channel style: pytorch-cuda / cpuonly metapackages, made
# mutually exclusive through pytorch-mutex as on the real pytorch channel.
LEGACY_STACK = [
    _pkg("python", "3.11.9", "h0_cpython"),
    _pkg("pillow", "10.4.0", subdir="noarch"),
    _pkg("pytorch-mutex", "1.0", "cpu", subdir="noarch"),
    _pkg("pytorch-mutex", "1.0", "cuda", subdir="noarch"),
    _pkg("cpuonly", "2.0", subdir="noarch", depends=("pytorch-mutex 1.0 cpu",)),
    *[
        _pkg(
            "pytorch-cuda",
            v,
            "h0",
            depends=(f"__cuda >={v}", "pytorch-mutex 1.0 cuda"),
            subdir="noarch",
        )
        for v in ("11.8", "12.1", "12.4")
    ],
    _pkg("pytorch", "2.5.1", "py3.11_cpu_0", depends=("python 3.11.*", "pytorch-mutex 1.0 cpu")),
    *[
        _pkg(
            "pytorch",
            "2.5.1",
            f"py3.11_cuda{v}_0",
            depends=("python 3.11.*", f"pytorch-cuda {v}.*", "pytorch-mutex 1.0 cuda"),
        )
        for v in ("11.8", "12.1", "12.4")
    ],
]


@pytest.fixture(scope="session")
def cf_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_channel(tmp_path_factory.mktemp("chan") / "conda-forge-like", CONDA_FORGE_STACK)


@pytest.fixture(scope="session")
def legacy_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_channel(tmp_path_factory.mktemp("chan") / "pytorch-like", LEGACY_STACK)


SPEC = """\
name: demo
channels:
  - {channel}
dependencies:
  - python=3.11
  - pytorch
  - pillow
  - redis-py
x-tk:
  style: conda-forge
  cuda: ["12.8", "12.4", "11.8"]
  variants:
    cpu:
      add: ["pytorch=*=cpu*"]
    cuda:
      add: ["pytorch=*=cuda*", "cuda-version={cuda}"]
  validate:
    torch: false
    pip_check: false
    commands: ["test -f share/pillow/README", "test -f lib/pytorch/VERSION"]
"""


@dataclass
class EnvProject:
    """A project directory whose envs/inference.yml points at a local channel."""

    root: Path
    envs_dir: Path
    channel: Path
    bin_dir: Path

    @property
    def spec(self) -> Path:
        return self.root / "envs" / "inference.yml"

    @property
    def lock(self) -> Path:
        return self.root / "envs" / "inference.lock.yml"

    def prefix(self, name: str = "demo") -> Path:
        return self.envs_dir / name

    def write_spec(self, text: str | None = None, **fmt: str) -> Path:
        self.spec.parent.mkdir(parents=True, exist_ok=True)
        body = (text or SPEC).replace("{channel}", fmt.get("channel", str(self.channel)))
        self.spec.write_text(body)
        return self.spec

    def fake_nvidia_smi(self, recorded: str | None, exit_code: int = 0) -> None:
        """Put an nvidia-smi on PATH that prints DATA/recorded (None: remove it)."""
        exe = self.bin_dir / "nvidia-smi"
        if recorded is None:
            exe.unlink(missing_ok=True)
            return
        exe.write_text(f"#!/bin/sh\ncat '{DATA / recorded}'\nexit {exit_code}\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def env_project(
    project: Path, tmp_path: Path, cf_channel: Path, monkeypatch: pytest.MonkeyPatch
) -> EnvProject:
    """A project with the conda-forge-like spec; envs and package cache under tmp_path; a
    fake nvidia-smi saying "No devices were found", so the host's GPU (if any) stays out."""
    envs = tmp_path / "envs"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("TK_ENVS_DIR", str(envs))
    monkeypatch.setenv("TK_ENV_CACHE_DIR", str(tmp_path / "pkgs"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    p = EnvProject(project, envs, cf_channel, bin_dir)
    p.write_spec()
    p.fake_nvidia_smi("smi_no_devices.txt", exit_code=6)
    return p


ChannelFactory = Callable[[str, list[PackageSpec]], Path]


@pytest.fixture
def channel_factory(tmp_path: Path) -> ChannelFactory:
    def make(name: str, packages: list[PackageSpec]) -> Path:
        return make_channel(tmp_path / "channels" / name, packages)

    return make
