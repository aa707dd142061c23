"""`tk env` end to end: real packages from local channels, solved and installed by rattler."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from tests.envs.conftest import ChannelFactory, EnvProject
from tests.helpers import run_tk
from toolkit.envs.localchannel import PackageSpec


def records(prefix: Path) -> dict[str, dict[str, object]]:
    out = {}
    for f in (prefix / "conda-meta").glob("*.json"):
        if f.name != "tk-env.json":
            data = json.loads(f.read_text())
            out[data["name"]] = data
    return out


def test_create_cpu_installs_files_records_and_lock(env_project: EnvProject) -> None:
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 0, r.output
    prefix = env_project.prefix()
    assert f"created {prefix} (cpu, 4 packages)" in r.stdout
    assert (prefix / "share/pillow/README").read_text() == "pillow 10.4.0 0\n"
    recs = records(prefix)
    assert set(recs) == {"python", "pytorch", "pillow", "redis-py"}
    assert recs["pytorch"]["build"] == "cpu_py311_0"
    assert recs["pytorch"]["version"] == "2.6.0"
    assert "lib/pytorch/VERSION" in recs["pytorch"]["files"]  # type: ignore[operator]
    marker = json.loads((prefix / "conda-meta/tk-env.json").read_text())
    assert marker["variant"] == "cpu"
    lock = yaml.safe_load(env_project.lock.read_text())
    pkgs = lock["variants"]["cpu"]["platforms"]["linux-64"]
    torch = next(p for p in pkgs if p["name"] == "pytorch")
    assert torch["url"].startswith("file://") and torch["url"].endswith(".tar.bz2")
    assert len(torch["sha256"]) == 64
    assert not list(env_project.envs_dir.glob(".demo*"))  # no temp dirs left


def test_rerun_with_unchanged_spec_and_lock_does_nothing_fast(env_project: EnvProject) -> None:
    assert run_tk(env_project.root, "env", "create", "--cpu").exit_code == 0
    before = (env_project.prefix() / "conda-meta/tk-env.json").stat().st_mtime_ns
    t0 = time.monotonic()
    r = run_tk(env_project.root, "env", "create", "--cpu")
    elapsed = time.monotonic() - t0
    assert r.exit_code == 0, r.output
    assert "up to date (spec and lock unchanged): nothing to do" in r.stdout
    assert elapsed < 2.0
    assert (env_project.prefix() / "conda-meta/tk-env.json").stat().st_mtime_ns == before


def test_cuda_variant_solves_on_a_cpu_only_machine(env_project: EnvProject) -> None:
    r = run_tk(env_project.root, "env", "create", "--cuda", "12.8")
    assert r.exit_code == 0, r.output
    assert "building for CUDA 12.8 anyway (__cuda=12.8 for the solver)" in r.stdout
    recs = records(env_project.prefix())
    assert recs["pytorch"]["build"] == "cuda128_py311_0"
    assert "__cuda >=12.8" in recs["pytorch"]["depends"]  # type: ignore[operator]
    assert recs["cuda-version"]["version"] == "12.8"


def test_cuda_118_gets_the_last_pytorch_conda_forge_built_for_it(env_project: EnvProject) -> None:
    r = run_tk(env_project.root, "env", "create", "--cuda", "11.8", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert any("only up to pytorch 2.5.1" in n for n in out["notes"])
    assert records(env_project.prefix())["pytorch"]["version"] == "2.5.1"


def test_auto_detect_picks_cuda_for_an_h200_and_says_why(env_project: EnvProject) -> None:
    env_project.fake_nvidia_smi("smi_query_h200_580.csv")
    r = run_tk(env_project.root, "env", "create", "--dry-run")
    assert r.exit_code == 0, r.output
    assert (
        "variant cuda-12.8: NVIDIA H200, driver 580.159.03 (via nvidia-smi): picked CUDA 12.8"
        in r.stdout
    )
    assert "would install: pytorch-2.6.0-cuda128_py311_0" in r.stdout
    assert not env_project.prefix().exists() and not env_project.lock.exists()


def test_driver_too_old_is_refused_before_any_download(env_project: EnvProject) -> None:
    env_project.fake_nvidia_smi("smi_query_a100_470.csv")
    r = run_tk(env_project.root, "env", "create", "--cuda", "12.4")
    assert r.exit_code == 2
    assert "driver 470.182.03 is too old for CUDA 12.4: it needs >= 550.54.14" in r.stderr
    assert "fix: use --cuda 11.8" in r.stderr
    assert not env_project.prefix().exists() and not env_project.lock.exists()


def test_lock_then_locked_install_then_stale_lock_refused(env_project: EnvProject) -> None:
    r = run_tk(env_project.root, "env", "lock")
    assert r.exit_code == 0, r.output
    lock = yaml.safe_load(env_project.lock.read_text())
    assert set(lock["variants"]) == {"cpu", "cuda-12.8", "cuda-12.4", "cuda-11.8"}
    r = run_tk(env_project.root, "env", "create", "--cuda", "12.4", "--locked")
    assert r.exit_code == 0, r.output
    assert records(env_project.prefix())["pytorch"]["build"] == "cuda124_py311_0"
    env_project.spec.write_text(
        env_project.spec.read_text().replace("  - pillow\n", "  - psutil\n")
    )
    r = run_tk(env_project.root, "env", "create", "--cuda", "12.4", "--locked")
    assert r.exit_code == 2
    assert "no longer matches the spec (+psutil, -pillow)" in r.stderr
    assert "tk env lock" in r.stderr


def test_locked_without_lock_is_refused(env_project: EnvProject) -> None:
    r = run_tk(env_project.root, "env", "create", "--cpu", "--locked")
    assert r.exit_code == 2
    assert "no lock file" in r.stderr


def test_lock_other_platforms(env_project: EnvProject, channel_factory: ChannelFactory) -> None:
    pkgs = [PackageSpec("python", "3.11.9", "h0", subdir=s) for s in ("linux-64", "osx-arm64")]
    pkgs += [PackageSpec("pytorch", "2.6.0", "cpu_0", subdir=s) for s in ("linux-64", "osx-arm64")]
    pkgs += [
        PackageSpec("pillow", "10.4.0", subdir="noarch"),
        PackageSpec("redis-py", "5", subdir="noarch"),
    ]
    chan = channel_factory("multi", pkgs)
    env_project.write_spec(channel=str(chan))
    r = run_tk(
        env_project.root,
        "env",
        "lock",
        "--cpu",
        "--platform",
        "linux-64",
        "--platform",
        "osx-arm64",
    )
    assert r.exit_code == 0, r.output
    lock = yaml.safe_load(env_project.lock.read_text())
    urls = [p["url"] for p in lock["variants"]["cpu"]["platforms"]["osx-arm64"]]
    assert any("/osx-arm64/pytorch-2.6.0-cpu_0.tar.bz2" in u for u in urls)


def test_diff_reports_drift(env_project: EnvProject) -> None:
    assert run_tk(env_project.root, "env", "create", "--cpu").exit_code == 0
    r = run_tk(env_project.root, "env", "diff")
    assert r.exit_code == 0, r.output
    assert "matches" in r.stdout
    meta = env_project.prefix() / "conda-meta"
    (meta / "redis-py-5.0.8-0.json").unlink()  # like a manual `conda remove`
    pillow = meta / "pillow-10.4.0-0.json"
    data = json.loads(pillow.read_text())
    data["version"] = "9.5.0"
    pillow.write_text(json.dumps(data))
    (meta / "numpy-2.0.0-0.json").write_text(
        json.dumps({"name": "numpy", "version": "2.0.0", "build": "0"})
    )
    r = run_tk(env_project.root, "env", "diff", "--json")
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert out["added"] == ["numpy-2.0.0-0"]
    assert out["removed"] == ["redis-py-5.0.8-0"]
    assert out["changed"] == ["pillow: lock 10.4.0-0, prefix 9.5.0-0"]


def test_export_list_and_remove(env_project: EnvProject) -> None:
    assert run_tk(env_project.root, "env", "create", "--cpu").exit_code == 0
    r = run_tk(env_project.root, "env", "export", "--no-builds")
    assert r.exit_code == 0, r.output
    data = yaml.safe_load(r.stdout)
    assert "pytorch=2.6.0" in data["dependencies"]
    assert data["name"] == "demo"
    with_builds = yaml.safe_load(run_tk(env_project.root, "env", "export").stdout)
    assert "pytorch=2.6.0=cpu_py311_0" in with_builds["dependencies"]
    r = run_tk(env_project.root, "env", "list", "--json")
    envs = json.loads(r.stdout)["envs"]
    assert [(e["name"], e["status"], e["variant"]) for e in envs] == [("demo", "ok", "cpu")]
    r = run_tk(env_project.root, "env", "remove", "demo", "--yes")
    assert r.exit_code == 0, r.output
    assert not env_project.prefix().exists()
    r = run_tk(env_project.root, "env", "validate", "demo")
    assert r.exit_code == 1 and "no environment at" in r.stderr


def test_remove_refuses_a_directory_that_is_not_an_env(env_project: EnvProject) -> None:
    (env_project.envs_dir / "photos").mkdir(parents=True)
    r = run_tk(env_project.root, "env", "remove", "photos", "--yes")
    assert r.exit_code == 1 and "refusing to delete it" in r.stderr
    assert (env_project.envs_dir / "photos").exists()
    r = run_tk(env_project.root, "env", "remove", "nosuch", "--yes")
    assert r.exit_code == 1 and r.stderr.startswith("tk: error: no environment at "), r.stderr


def test_render_gives_plain_environment_yml(env_project: EnvProject) -> None:
    r = run_tk(env_project.root, "env", "render", "--cuda", "12.4")
    assert r.exit_code == 0, r.output
    data = yaml.safe_load(r.stdout)
    assert "cuda-version=12.4" in data["dependencies"] and "x-tk" not in data
    r = run_tk(env_project.root, "env", "render")
    assert r.exit_code == 2 and "--cuda X.Y or --cpu" in r.stderr


def test_legacy_channel_style(env_project: EnvProject, legacy_channel: Path) -> None:
    spec = """\
name: legacy
channels: [{channel}]
dependencies: [python=3.11, pytorch=2.5.1, pillow]
x-tk:
  style: pytorch
  cuda: ["12.4", "12.1", "11.8"]
  variants:
    cpu: {add: [cpuonly]}
    cuda: {add: ["pytorch-cuda={cuda}"]}
  validate: {torch: false, pip_check: false}
"""
    env_project.write_spec(spec, channel=str(legacy_channel))
    r = run_tk(env_project.root, "env", "create", "--cuda", "12.1")
    assert r.exit_code == 0, r.output
    assert records(env_project.prefix("legacy"))["pytorch"]["build"] == "py3.11_cuda12.1_0"
    r = run_tk(env_project.root, "env", "create", "--cuda", "12.8")
    assert r.exit_code == 2 and "pytorch-cuda metapackage exists for CUDA" in r.stderr
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 0, r.output
    recs = records(env_project.prefix("legacy"))
    assert recs["pytorch"]["build"] == "py3.11_cpu_0" and "pytorch-cuda" not in recs


def test_validate_by_name_uses_the_recorded_variant(env_project: EnvProject) -> None:
    assert run_tk(env_project.root, "env", "create", "--cpu", "--no-validate").exit_code == 0
    r = run_tk(env_project.root, "env", "validate", "--json")
    assert r.exit_code == 0, r.output
    checks = json.loads(r.stdout)["checks"]
    assert [c["status"] for c in checks] == ["ok", "ok"]


def test_editing_the_spec_keeps_locked_versions_that_still_fit(env_project: EnvProject) -> None:
    spec = env_project.spec.read_text()
    env_project.spec.write_text(spec.replace("  - pytorch\n", "  - pytorch<2.6\n"))
    assert run_tk(env_project.root, "env", "create", "--cpu").exit_code == 0
    assert records(env_project.prefix())["pytorch"]["version"] == "2.5.1"
    env_project.spec.write_text(spec.replace("  - pillow\n", "  - pillow\n  - psutil\n"))
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 0, r.output
    recs = records(env_project.prefix())
    assert recs["pytorch"]["version"] == "2.5.1" and "psutil" in recs  # no needless upgrade
    r = run_tk(env_project.root, "env", "diff")
    assert r.exit_code == 0, r.output
    assert run_tk(env_project.root, "env", "lock", "--cpu").exit_code == 0  # an explicit update
    assert run_tk(env_project.root, "env", "diff").exit_code == 1
    r = run_tk(env_project.root, "env", "create", "--cpu", "--locked")
    assert r.exit_code == 0, r.output
    assert records(env_project.prefix())["pytorch"]["version"] == "2.6.0"


def _failing_validation(env_project: EnvProject) -> str:
    """The spec with a validation command that fails in the built env; returns the original."""
    spec = env_project.spec.read_text()
    env_project.spec.write_text(spec.replace("test -f lib/pytorch/VERSION", "test -f nope"))
    return spec


def test_a_failed_validation_never_counts_as_a_good_env(env_project: EnvProject) -> None:
    spec = _failing_validation(env_project)
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 1, r.output
    assert "1 check failed; first: $ test -f nope" in r.stderr
    assert "the next `tk env create` validates it again" in r.stderr
    marker = json.loads((env_project.prefix() / "conda-meta/tk-env.json").read_text())
    assert marker["validation"] == "failed"
    listed = json.loads(run_tk(env_project.root, "env", "list", "--json").stdout)["envs"]
    assert [(e["name"], e["status"]) for e in listed] == [("demo", "failed")]
    assert "demo" in run_tk(env_project.root, "env", "list").stdout
    # a CI retry stays red: same spec and lock, but the env is validated again
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 1, r.output
    assert "nothing to do" not in r.stdout
    assert "packages unchanged, but its last validation failed: validating again" in r.stdout
    # --no-validate says so and leaves it marked failed
    r = run_tk(env_project.root, "env", "create", "--cpu", "--no-validate")
    assert r.exit_code == 0 and "its last validation failed" in r.stdout
    # `tk env validate` names no fix pointing at itself, and records its result
    r = run_tk(env_project.root, "env", "validate")
    assert r.exit_code == 1 and "tk env validate" not in r.stderr, r.stderr
    env_project.spec.write_text(spec)
    r = run_tk(env_project.root, "env", "validate")
    assert r.exit_code == 0, r.output
    listed = json.loads(run_tk(env_project.root, "env", "list", "--json").stdout)["envs"]
    assert [(e["name"], e["status"]) for e in listed] == [("demo", "ok")]
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 0 and "nothing to do" in r.stdout, r.output


def test_validation_passing_on_retry_marks_the_env_ok(env_project: EnvProject) -> None:
    _failing_validation(env_project)
    text = env_project.spec.read_text().replace("test -f nope", "test -f ../marker")
    env_project.spec.write_text(text)
    assert run_tk(env_project.root, "env", "create", "--cpu").exit_code == 1
    (env_project.envs_dir / "marker").write_text("")  # what the check wants now exists
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 0, r.output
    assert "validating again" in r.stdout
    marker = json.loads((env_project.prefix() / "conda-meta/tk-env.json").read_text())
    assert marker["validation"] == "ok"


def test_remove_without_a_terminal_needs_yes(env_project: EnvProject) -> None:
    assert run_tk(env_project.root, "env", "create", "--cpu", "--no-validate").exit_code == 0
    r = run_tk(env_project.root, "env", "remove", "demo")  # stdin is not a terminal here
    assert r.exit_code == 2
    assert "no terminal to ask for confirmation on; fix: pass --yes" in r.stderr
    assert env_project.prefix().exists()


def test_list_with_no_environments_says_so(env_project: EnvProject) -> None:
    r = run_tk(env_project.root, "env", "list")
    assert r.exit_code == 0
    assert f"no environments in {env_project.envs_dir}" in r.stdout


def test_a_corrupt_lock_is_solved_again_without_locked(env_project: EnvProject) -> None:
    env_project.lock.write_text("version: 1\nvariants: [\n")
    r = run_tk(env_project.root, "env", "create", "--cpu", "--locked")
    assert r.exit_code == 2 and "lock file is not valid YAML" in r.stderr
    r = run_tk(env_project.root, "env", "create", "--cpu", "--no-validate")
    assert r.exit_code == 0, r.output
    assert "lock file is not valid YAML: solving again; the lock will be overwritten" in r.stdout
    assert "cpu" in yaml.safe_load(env_project.lock.read_text())["variants"]
    env_project.lock.write_bytes(b"\xff\xfe\x00binary")
    r = run_tk(env_project.root, "env", "lock", "--cpu")
    assert r.exit_code == 0 and "not a text file (UTF-8): solving again" in r.stdout, r.output


def test_a_lock_from_a_newer_tk_is_left_alone(env_project: EnvProject) -> None:
    env_project.lock.write_text("version: 99\nvariants: {}\n")
    r = run_tk(env_project.root, "env", "create", "--cpu")
    assert r.exit_code == 2
    assert "written by a newer tk (lock version 99, this tk reads 1)" in r.stderr
    assert "fix: upgrade tk" in r.stderr
    assert env_project.lock.read_text() == "version: 99\nvariants: {}\n"


def test_diff_notes_a_spec_changed_since_the_lock(env_project: EnvProject) -> None:
    assert run_tk(env_project.root, "env", "create", "--cpu", "--no-validate").exit_code == 0
    env_project.spec.write_text(
        env_project.spec.read_text().replace("  - pillow\n", "  - pillow\n  - psutil\n")
    )
    r = run_tk(env_project.root, "env", "diff")
    assert r.exit_code == 0, r.output
    assert "matches" in r.stdout
    assert "note: the spec changed since the lock (+psutil)" in r.stdout
    assert "`tk env create --locked` would refuse it" in r.stdout
    out = json.loads(run_tk(env_project.root, "env", "diff", "--json").stdout)
    assert out["spec_changed"] == "+psutil"


def test_render_to_another_directory_rewrites_relative_pip_paths(
    env_project: EnvProject, tmp_path: Path
) -> None:
    env_project.spec.write_text(
        env_project.spec.read_text().replace(
            "  - redis-py\n", "  - redis-py\n  - pip:\n      - -e ..\n      - ./pkg\n      - rich\n"
        )
    )
    out = tmp_path / "elsewhere" / "deep" / "env.yml"
    out.parent.mkdir(parents=True)
    r = run_tk(env_project.root, "env", "render", "--cpu", "-o", str(out))
    assert r.exit_code == 0, r.output
    pip = yaml.safe_load(out.read_text())["dependencies"][-1]["pip"]
    root = env_project.root.resolve()
    assert (out.parent / pip[0].split(" ", 1)[1]).resolve() == root
    assert (out.parent / pip[1]).resolve() == root / "envs" / "pkg"
    assert pip[2] == "rich"
    r = run_tk(env_project.root, "env", "render", "--cpu")
    assert r.exit_code == 0 and "pip paths are relative to" in r.stderr
    assert "-e .." in r.stdout


def test_a_missing_engine_names_where_the_setting_came_from(env_project: EnvProject) -> None:
    env = {"PATH": str(env_project.bin_dir), "TK_ENV_ENGINE": "mamba"}
    r = run_tk(env_project.root, "env", "create", "--cpu", env=env)
    assert r.exit_code == 1
    assert "TK_ENV_ENGINE=mamba (environment): `mamba` is not on PATH" in r.stderr
    assert "--engine" not in r.stderr
    (env_project.root / "tk.yaml").write_text("env:\n  engine: micromamba\n")
    r = run_tk(env_project.root, "env", "create", "--cpu", env={"PATH": str(env_project.bin_dir)})
    assert r.exit_code == 1
    assert "env.engine: micromamba in tk.yaml: `micromamba` is not on PATH" in r.stderr
    assert not env_project.prefix().exists()
