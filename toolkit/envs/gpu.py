"""Find the NVIDIA GPUs and driver: NVML when ``nvidia-ml-py`` is importable, else
``nvidia-smi --query-gpu=... --format=csv,noheader``. Parsing is pure and tested on recorded
outputs; the human ``nvidia-smi`` table is parsed too (some users paste it)."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

QUERY_ARGS = ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int | None


@dataclass(frozen=True)
class GpuProbe:
    """What detection found. ``problem`` says why there is no usable GPU, if there is none."""

    gpus: tuple[Gpu, ...] = ()
    driver: str | None = None
    source: str = "none"
    problem: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def present(self) -> bool:
        return bool(self.gpus) and self.driver is not None

    def describe(self) -> str:
        if not self.present:
            return f"no usable NVIDIA GPU ({self.problem or 'none found'})"
        names = sorted({g.name for g in self.gpus})
        count = f"{len(self.gpus)} x " if len(self.gpus) > 1 else ""
        return f"{count}{', '.join(names)}, driver {self.driver} (via {self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "driver": self.driver,
            "gpus": [{"name": g.name, "memory_mib": g.memory_mib} for g in self.gpus],
            "source": self.source,
            "problem": self.problem,
        }


_FAILURES = (
    ("No devices were found", "nvidia-smi found no devices"),
    ("has failed because it couldn't communicate with the NVIDIA driver",
     "the NVIDIA driver is not loaded (nvidia-smi could not talk to it)"),
    ("Driver/library version mismatch",
     "driver/library version mismatch (reboot after a driver upgrade)"),
    ("NVIDIA-SMI has failed", "nvidia-smi failed"),
)  # fmt: skip


def failure_reason(text: str) -> str | None:
    for needle, reason in _FAILURES:
        if needle in text:
            return reason
    return None


def parse_query_csv(text: str, source: str = "nvidia-smi") -> GpuProbe:
    """Parse ``--query-gpu=name,driver_version,memory.total --format=csv,noheader``."""
    reason = failure_reason(text)
    if reason:
        return GpuProbe(source=source, problem=reason)
    gpus: list[Gpu] = []
    drivers: set[str] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not re.match(r"^\d+(\.\d+)+$", parts[-2]):
            return GpuProbe(source=source, problem=f"unexpected nvidia-smi output: {line[:80]!r}")
        name, driver, memory = ", ".join(parts[:-2]), parts[-2], parts[-1]
        mem = re.match(r"(\d+)\s*MiB", memory)
        gpus.append(Gpu(name, int(mem.group(1)) if mem else None))
        drivers.add(driver)
    if not gpus:
        return GpuProbe(source=source, problem="nvidia-smi listed no GPUs")
    return GpuProbe(tuple(gpus), min(drivers, key=_vt), source)


def _vt(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


_TABLE_DRIVER = re.compile(r"Driver Version:\s*([\d.]+)")
_TABLE_CUDA = re.compile(r"CUDA Version:\s*([\d.]+)")
_TABLE_GPU = re.compile(r"^\|\s+(\d+)\s+(.+?)\s+(?:On|Off)\s+\|", re.MULTILINE)
_TABLE_MEM = re.compile(r"\|\s+\d+MiB\s*/\s*(\d+)MiB\s+\|")


def parse_table(text: str) -> GpuProbe:
    """Parse the human ``nvidia-smi`` table (header line with driver and CUDA versions)."""
    reason = failure_reason(text)
    if reason:
        return GpuProbe(source="nvidia-smi table", problem=reason)
    driver = _TABLE_DRIVER.search(text)
    if driver is None:
        return GpuProbe(source="nvidia-smi table", problem="no 'Driver Version' in the output")
    names = [m.group(2).strip() for m in _TABLE_GPU.finditer(text)]
    mems = [int(m.group(1)) for m in _TABLE_MEM.finditer(text)]
    gpus = tuple(Gpu(n, mems[i] if i < len(mems) else None) for i, n in enumerate(names))
    cuda = _TABLE_CUDA.search(text)
    extra = {"cuda_driver_api": cuda.group(1)} if cuda else {}
    problem = None if gpus else "no GPU rows in the table"
    return GpuProbe(gpus, driver.group(1), "nvidia-smi table", problem, extra)


def _probe_nvml() -> GpuProbe | None:
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else str(name)
            total = int(pynvml.nvmlDeviceGetMemoryInfo(h).total) // (1024 * 1024)
            gpus.append(Gpu(name, total))
        if not gpus:
            return GpuProbe(source="NVML", problem="NVML found no devices")
        return GpuProbe(tuple(gpus), driver, "NVML")
    except Exception as exc:
        return GpuProbe(source="NVML", problem=f"NVML: {exc}")
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def detect(timeout: float = 15.0) -> GpuProbe:
    """Detect GPUs and the driver: NVML first, then nvidia-smi. Never raises."""
    nvml = _probe_nvml()
    if nvml is not None and nvml.present:
        return nvml
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return nvml or GpuProbe(problem="nvidia-smi not found on PATH and NVML not available")
    try:
        proc = subprocess.run(
            [exe, *QUERY_ARGS], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return GpuProbe(source="nvidia-smi", problem=f"nvidia-smi did not run: {exc}")
    probe = parse_query_csv(proc.stdout + proc.stderr)
    if proc.returncode != 0 and probe.present:
        return GpuProbe(source="nvidia-smi", problem=f"nvidia-smi exited {proc.returncode}")
    return probe
