"""GPU/driver detection, tested on recorded nvidia-smi outputs (tests/envs/data/)."""

from __future__ import annotations

import json

from tests.envs.conftest import DATA, EnvProject
from tests.helpers import run_tk
from toolkit.envs import gpu


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_query_output_of_an_h200() -> None:
    probe = gpu.parse_query_csv(read("smi_query_h200_580.csv"))
    assert probe.present
    assert probe.driver == "580.159.03"
    assert probe.gpus == (gpu.Gpu("NVIDIA H200", 143771),)
    assert "NVIDIA H200, driver 580.159.03" in probe.describe()


def test_query_output_of_four_gpus() -> None:
    probe = gpu.parse_query_csv(read("smi_query_4xh200_580.csv"))
    assert len(probe.gpus) == 4
    assert probe.describe().startswith("4 x NVIDIA H200")


def test_query_output_of_older_drivers() -> None:
    assert gpu.parse_query_csv(read("smi_query_a100_470.csv")).driver == "470.182.03"
    t4 = gpu.parse_query_csv(read("smi_query_t4_535.csv"))
    assert t4.gpus[0] == gpu.Gpu("Tesla T4", 15360)


def test_no_devices_and_failed_driver() -> None:
    none = gpu.parse_query_csv(read("smi_no_devices.txt"))
    assert not none.present and "no devices" in (none.problem or "")
    failed = gpu.parse_query_csv(read("smi_failed.txt"))
    assert not failed.present and "driver is not loaded" in (failed.problem or "")


def test_garbage_is_a_problem_not_a_crash() -> None:
    probe = gpu.parse_query_csv("Segmentation fault\n")
    assert not probe.present and "unexpected" in (probe.problem or "")


def test_human_tables_of_three_driver_generations() -> None:
    h200 = gpu.parse_table(read("smi_table_h200_580.txt"))
    assert (h200.driver, h200.gpus[0].name, h200.gpus[0].memory_mib) == (
        "580.159.03", "NVIDIA H200", 143771
    )  # fmt: skip
    assert h200.extra["cuda_driver_api"] == "13.0"
    a100 = gpu.parse_table(read("smi_table_a100_470.txt"))
    assert (a100.driver, a100.gpus[0].name) == ("470.182.03", "NVIDIA A100-SXM...")
    t4 = gpu.parse_table(read("smi_table_t4_535.txt"))
    assert (t4.driver, t4.gpus[0].memory_mib) == ("535.183.01", 15360)
    assert not gpu.parse_table(read("smi_failed.txt")).present


def test_detect_runs_nvidia_smi_from_path(env_project: EnvProject) -> None:
    env_project.fake_nvidia_smi("smi_query_h200_580.csv")
    probe = gpu.detect()
    assert probe.present and probe.driver == "580.159.03" and probe.source == "nvidia-smi"


def test_detect_reports_failed_driver(env_project: EnvProject) -> None:
    env_project.fake_nvidia_smi("smi_failed.txt", exit_code=9)
    assert "not loaded" in (gpu.detect().problem or "")


def test_tk_env_gpu_lists_what_the_driver_runs(env_project: EnvProject) -> None:
    env_project.fake_nvidia_smi("smi_query_a100_470.csv")
    r = run_tk(env_project.root, "env", "gpu", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["driver"] == "470.182.03"
    assert data["cuda"]["11.4"] == "ok"
    assert data["cuda"]["11.8"] == "compat"
    assert data["cuda"]["12.4"] == "too_old"
