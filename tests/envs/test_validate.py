"""`tk env validate` against a real python with real torch (the test runner's venv)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.envs.conftest import ChannelFactory, EnvProject
from tests.helpers import run_tk
from toolkit.envs import spec, validate
from toolkit.envs.localchannel import PackageSpec
from toolkit.envs.variants import Variant


def _torch_cuda() -> str | None:
    """torch.version.cuda of the installed torch, read from torch/version.py (importing torch
    here would cost seconds per test run); skip only when torch is absent and CI does not
    demand it."""
    found = importlib.util.find_spec("torch")
    if found is None or found.origin is None:
        if os.environ.get("TK_TEST_REQUIRE_SERVERS") == "1":
            pytest.fail("torch is required (TK_TEST_REQUIRE_SERVERS=1) but not installed")
        pytest.skip("torch not installed")
    text = (Path(found.origin).parent / "version.py").read_text()
    m = re.search(r"^cuda\b.*=\s*(?:'([\d.]+)'|None)", text, re.MULTILINE)
    assert m is not None, "unexpected torch/version.py"
    return m.group(1)


PROBES_SPEC = """\
name: venv
channels: [conda-forge]
dependencies: [python=3.11]
x-tk:
  validate:
    imports: [torch, yaml]
    torch: true
    pip_check: false
"""


@pytest.fixture
def probes_spec(env_project: EnvProject) -> Path:
    return env_project.write_spec(PROBES_SPEC)


def validate_venv(env_project: EnvProject, *flags: str) -> tuple[int, dict[str, dict[str, str]]]:
    r = run_tk(env_project.root, "env", "validate", "--python", sys.executable, "--json", *flags)
    checks = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
    return r.exit_code, checks


def test_matching_build_passes(env_project: EnvProject, probes_spec: Path) -> None:
    built = _torch_cuda()
    flags = ("--cuda", built) if built else ("--cpu",)
    code, checks = validate_venv(env_project, *flags, "-f", str(probes_spec))
    assert code == 0, checks
    assert checks["import torch"]["status"] == "ok"
    assert checks["torch variant"]["status"] == "ok"
    assert checks["tensor op"]["status"] == "ok"
    if built:  # no GPU here (the fake nvidia-smi says so): availability is not demanded
        assert checks["cuda available"]["status"] == "skip"
    assert checks["conda/pip overlap"]["status"] == "skip"  # a venv, not a conda prefix


def test_cpu_variant_with_a_cuda_build_fails_clearly(
    env_project: EnvProject, probes_spec: Path
) -> None:
    built = _torch_cuda()
    if built is None:
        pytest.skip("the installed torch is a CPU build; the mirror case is tested below")
    code, checks = validate_venv(env_project, "--cpu", "-f", str(probes_spec))
    assert code == 1
    msg = checks["torch variant"]["message"]
    assert msg.startswith(f"torch is a CUDA {built} build but the variant is cpu")


def test_other_cuda_variant_fails_clearly(env_project: EnvProject, probes_spec: Path) -> None:
    built = _torch_cuda()
    r = run_tk(
        env_project.root, "env", "validate", "--python", sys.executable, "--cuda", "11.8",
        "-f", str(probes_spec),
    )  # fmt: skip
    assert r.exit_code == 1
    label = f"CUDA {built} build" if built else "CPU build"
    assert f"torch variant: torch is a {label} but the variant is cuda-11.8" in r.stderr
    assert "torch variant" in r.stdout  # the report table


def test_default_probes_without_a_spec(env_project: EnvProject) -> None:
    _torch_cuda()
    r = run_tk(env_project.root, "env", "validate", "--python", sys.executable, "--json")
    checks = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["torch variant"]["status"] == "skip"  # no variant given or recorded
    assert checks["pip check"]["status"] in ("ok", "fail")


def test_overlap_between_conda_and_pip_fails(tmp_path: Path) -> None:
    meta = tmp_path / "conda-meta"
    meta.mkdir()
    (meta / "numpy-2.0-0.json").write_text(json.dumps({"name": "numpy"}))
    (meta / "redis-py-5-0.json").write_text(json.dumps({"name": "redis-py"}))
    facts = validate.Facts(tmp_path, None, conda_names=validate.conda_names(tmp_path))
    facts.probe = {
        "python": "3.11.9",
        "executable": "python",
        "imports": {},
        "dists": [
            {"name": "numpy", "version": "1.26.4", "installer": "pip"},
            {"name": "redis", "version": "5.0", "installer": "pip"},
            {"name": "pillow", "version": "10", "installer": "pip"},
        ],
    }
    checks = validate.evaluate(facts, spec.Probes(torch=False), Variant("cpu"), False)
    overlap = next(c for c in checks if c.name == "conda/pip overlap")
    assert overlap.status == "fail"
    assert "numpy, redis" in overlap.message


def test_cuda_build_on_a_gpu_machine_must_see_the_gpu() -> None:
    facts = validate.Facts(Path("/x"), None)
    facts.probe = {
        "python": "3.11.9",
        "executable": "python",
        "imports": {},
        "dists": [],
        "torch": {"version": "2.5.1", "cuda": "12.4", "available": False,
                  "op": {"device": "cpu", "ok": True}},
    }  # fmt: skip
    checks = validate.evaluate(facts, spec.Probes(), Variant("cuda", "12.4"), gpu=True)
    avail = next(c for c in checks if c.name == "cuda available")
    assert avail.status == "fail" and "driver" in avail.message
    cpu_build = dict(facts.probe["torch"], cuda=None)
    facts.probe["torch"] = cpu_build
    checks = validate.evaluate(facts, spec.Probes(), Variant("cuda", "12.4"), gpu=True)
    variant = next(c for c in checks if c.name == "torch variant")
    assert variant.status == "fail" and "pytorch-cuda=12.4" in variant.message


def test_missing_python_is_a_failed_check(tmp_path: Path) -> None:
    facts = validate.run_probes(tmp_path, spec.Probes(imports=("torch",)))
    checks = validate.evaluate(facts, spec.Probes(imports=("torch",)), None, False)
    assert checks[0].status == "fail" and "no python" in checks[0].message


def test_create_validates_with_the_envs_own_python_and_reports_a_mismatch(
    env_project: EnvProject, channel_factory: ChannelFactory
) -> None:
    """An env whose python is this venv's (a wrapper script) holds pip's torch: create's
    validation must say the build does not match the variant, and that torch came from pip
    while conda-meta says conda installed pytorch."""
    built = _torch_cuda()
    wrapper = f'#!/bin/sh\nexec "{sys.executable}" "$@"\n'
    chan = channel_factory(
        "real-python",
        [
            PackageSpec("python", "3.11.9", "h0", files={"bin/python": wrapper}),
            PackageSpec("pytorch", "2.5.1", "cuda118_0", depends=("__cuda >=11.8",)),
        ],
    )
    env_project.write_spec(PROBES_SPEC.replace("conda-forge", str(chan)).replace(
        "dependencies: [python=3.11]", "dependencies: [python=3.11, pytorch]"
    ))  # fmt: skip
    r = run_tk(env_project.root, "env", "create", "--cuda", "11.8", "--json")
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert out["status"] == "created" and not out["ok"]
    checks = {c["check"]: c for c in out["checks"]}
    assert checks["python"]["status"] == "ok"
    label = f"CUDA {built} build" if built else "CPU build"
    assert checks["torch variant"]["message"].startswith(
        f"torch is a {label} but the variant is cuda-11.8"
    )
    assert checks["conda/pip overlap"]["status"] == "fail"
    assert "installed by both conda and pip: torch" in checks["conda/pip overlap"]["message"]
    # the environment itself is complete (validation is a report, not a rollback)
    assert (env_project.prefix("venv") / "conda-meta" / "tk-env.json").exists()
