"""Spec parsing: schema errors with line numbers, warnings, the shipped specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.envs.conftest import EnvProject
from tests.helpers import run_tk
from toolkit.envs import spec
from toolkit.envs.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "env.yml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "path", ["envs/inference.yml", "envs/examples/inference-pytorch-channel.yml"]
)
def test_shipped_specs_are_clean(path: str) -> None:
    report = spec.check(ROOT / path)
    assert report.errors == [] and report.warnings == []
    assert report.spec is not None
    assert report.spec.platforms == ("linux-64",)


def test_shipped_styles() -> None:
    assert spec.load(ROOT / "envs/inference.yml").style == "conda-forge"
    legacy = spec.load(ROOT / "envs/examples/inference-pytorch-channel.yml")
    assert legacy.style == "pytorch"
    assert legacy.lock_path.name == "inference-pytorch-channel.lock.yml"


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "name: x\nchannels:\n  - conda-forge\ndependencies: [python\n  - b: c\n")
    report = spec.check(p)
    assert report.spec is None
    assert report.errors[0].line == 5
    assert report.errors[0].message.startswith("YAML:")


def test_schema_errors_have_line_numbers(tmp_path: Path) -> None:
    text = """\
name: x
channels: conda-forge
dependencies:
  - python=3.11
  - {pyp: [numpy]}
x-tk:
  style: anaconda
  cuda: ["12.4", "twelve"]
  variantz: {}
  platforms: [linux-64, amiga-68k]
  validate:
    torch: maybe
"""
    report = spec.check(write(tmp_path, text))
    got = {(p.line, p.message.split(";")[0]) for p in report.errors}
    assert (2, "channels must be a list") in got
    assert (5, "unknown key 'pyp' in a dependencies entry") in got
    assert (7, "x-tk.style must be one of conda-forge, pytorch") in got
    assert any(line == 8 and "12.4" in msg for line, msg in got)  # 'twelve'
    assert (9, "unknown key 'variantz' in x-tk") in got
    assert any(line == 10 and "amiga-68k" in msg for line, msg in got)
    assert (12, "validate.torch must be true or false, got the string 'maybe'") in got


def test_load_raises_one_line_with_the_first_errors(tmp_path: Path) -> None:
    p = write(tmp_path, "dependencies: 3\n")
    with pytest.raises(SpecError, match=r"env.yml:1: dependencies must be a list") as exc:
        spec.load(p)
    assert "check-spec" in (exc.value.fix or "")


def test_warnings_for_the_original_recipes_mistakes(tmp_path: Path) -> None:
    text = """\
name: x
channels: [conda-forge]
dependencies:
  - python
  - numpy
  - pytorch
  - pip:
      - numpy==1.26.4
      - torch
      - -e .
x-tk:
  cuda: ["12.4", "12.7"]
  variants:
    cuda: {add: ["pytorch=*=cuda*"]}
"""
    report = spec.check(write(tmp_path, text))
    assert report.errors == []
    msgs = {(p.line, p.message) for p in report.warnings}
    assert any(
        line == 8 and "numpy is both a conda dependency and a pip one" in m for line, m in msgs
    )
    assert any(line == 9 and "torch is both" in m for line, m in msgs)
    assert any(line == 4 and "python is not pinned" in m for line, m in msgs)
    assert any(line == 12 and "unknown CUDA version 12.7" in m for line, m in msgs)
    assert any("never uses {cuda}" in m for _, m in msgs)


def test_check_spec_cli(env_project: EnvProject, tmp_path: Path) -> None:
    ok = run_tk(env_project.root, "env", "check-spec")
    assert ok.exit_code == 0, ok.output
    assert "ok (0 warnings)" in ok.stdout
    one = write(tmp_path, "name: x\ndependencies: [python=3.11]\nx-tk: {}\n")
    one.write_text(one.read_text().replace("python=3.11", "python"))
    r = run_tk(env_project.root, "env", "check-spec", str(one))
    assert r.exit_code == 0 and "ok (1 warning)" in r.stdout, r.output
    bad = write(tmp_path, "name: x\ndependencies:\n  - python=3.11\n  - [a]\n")
    r = run_tk(env_project.root, "env", "check-spec", str(bad))
    assert r.exit_code == 2
    assert f"error: {bad}:4: dependencies: each entry" in r.stderr


def test_dep_names_and_versions() -> None:
    assert spec.dep_name("conda-forge::PyTorch>=2.1=cuda*") == "pytorch"
    assert spec.dep_version("pytorch=*=cuda*") == "*"
    assert spec.dep_version("python=3.11") == "3.11"
    assert spec.dep_version("pytorch>=2.6") == ">=2.6"
    assert spec.dep_version("python") is None
    assert spec.pip_name("Typing_Extensions>=4") == "typing-extensions"
    assert spec.pip_name("-e ..") is None
    assert spec.pip_name("git+https://x/y.git") is None


def test_invalid_package_specs_and_wrong_types_are_errors(tmp_path: Path) -> None:
    text = """\
name: x
channels: [conda-forge]
dependencies:
  - python=3.11
  - "pytorch >>= 2"
  - "bad spec ### !!"
  - 42
  - pytorch=*=cpu*
  - pip:
      - 7
x-tk:
  variants:
    cuda: {add: ["pytorch=*=cuda*", "cuda-version={cuda}", "pytorch-cuda >>{cuda}"]}
  validate:
    pip_check: "yes"
    torch: no
"""
    report = spec.check(write(tmp_path, text))
    got = {(p.line, p.message) for p in report.errors}
    assert any(line == 5 and "invalid package spec 'pytorch >>= 2'" in m for line, m in got)
    assert any(line == 6 and "invalid package spec 'bad spec ### !!'" in m for line, m in got)
    assert (7, "dependencies: '42' is a number, not a package spec") in got
    assert any(line == 10 and "'7' is a number, not a string" in m for line, m in got)
    assert any(line == 13 and "'pytorch-cuda >>{cuda}'" in m for line, m in got)
    assert (15, "validate.pip_check must be true or false, got the string 'yes'") in got
    assert len(report.errors) == 6, report.errors  # pytorch=*=cpu*, torch: no are fine
    assert report.spec is None


def test_check_spec_cli_reports_bad_specs_with_lines(
    env_project: EnvProject, tmp_path: Path
) -> None:
    bad = write(tmp_path, "name: x\ndependencies:\n  - python=3.11\n  - 'bad spec ### !!'\n")
    r = run_tk(env_project.root, "env", "check-spec", str(bad))
    assert r.exit_code == 2
    assert f"error: {bad}:4: invalid package spec 'bad spec ### !!'" in r.stderr
    assert f"tk: error: {bad}: 1 error, 1 warning; fix:" in r.stderr


def test_check_spec_without_a_spec_is_one_line_with_a_fix(env_project: EnvProject) -> None:
    env_project.spec.unlink()
    r = run_tk(env_project.root, "env", "check-spec")
    assert r.exit_code == 2
    assert r.stderr.startswith(f"tk: error: spec file {env_project.spec} not found; fix: ")
    assert "docs/env.md" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ("env", "check-spec", "{f}"),
        ("env", "render", "--cpu", "-f", "{f}"),
        ("env", "create", "--dry-run", "--cpu", "-f", "{f}"),
        ("env", "lock", "-f", "{f}"),
    ],
)
def test_a_binary_spec_file_is_one_line(
    env_project: EnvProject, tmp_path: Path, args: tuple[str, ...]
) -> None:
    f = tmp_path / "random.yml"
    f.write_bytes(bytes(range(256)) * 4)
    r = run_tk(env_project.root, *(a.replace("{f}", str(f)) for a in args))
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith(f"tk: error: {f}: not a text file (UTF-8); fix: ")
    assert len(r.stderr.strip().splitlines()) == 1
