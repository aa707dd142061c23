"""On an NVIDIA GPU (marked ``gpu``; skipped on machines without one): detection reads this
machine's GPU and driver, and ``tk env validate`` passes this interpreter's CUDA torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_tk
from toolkit.envs import gpu

pytestmark = pytest.mark.gpu


def test_detects_this_machines_gpu_and_driver(project: Path) -> None:
    probe = gpu.detect()
    assert probe.present, probe.problem
    assert all(g.memory_mib and g.memory_mib > 1000 for g in probe.gpus), probe.gpus
    smi = shutil.which("nvidia-smi")
    if smi is not None:  # the two sources agree
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
        assert probe.driver == out.stdout.splitlines()[0].strip()

    r = run_tk(project, "env", "gpu", "--json")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert shown["present"] and shown["driver"] == probe.driver
    assert "ok" in shown["cuda"].values(), shown["cuda"]  # the driver runs some CUDA release


def test_validate_passes_this_interpreters_cuda_torch(project: Path) -> None:
    torch = pytest.importorskip("torch")
    built = torch.version.cuda
    if not built:
        pytest.skip("this interpreter's torch is a CPU build")
    cuda = ".".join(built.split(".")[:2])
    r = run_tk(project, "env", "validate", "--python", sys.executable, "--cuda", cuda, "--json")
    checks = {c["check"]: c for c in json.loads(r.output)["checks"]}
    assert checks["torch variant"]["status"] == "ok", checks
    assert checks["cuda available"]["status"] == "ok", checks
    assert checks["tensor op"] == {"check": "tensor op", "status": "ok",
                                   "message": "8x8 matmul on cuda"}  # fmt: skip
