"""What tk knows about CUDA, NVIDIA drivers and the channels that ship PyTorch. Pure data.

Sources: NVIDIA's CUDA toolkit release notes ("CUDA Toolkit and Corresponding Driver
Versions", Linux x86_64), conda-forge's pytorch-cpu/pytorch-gpu feedstock and the pytorch
channel's ``pytorch-cuda`` metapackage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.envs.errors import VariantRefused
from toolkit.errors import UsageError

# Minimum Linux driver for each CUDA toolkit release (full support, no compatibility limits).
MIN_DRIVER: dict[str, str] = {
    "11.0": "450.36.06",
    "11.1": "455.23",
    "11.2": "460.27.03",
    "11.3": "465.19.01",
    "11.4": "470.42.01",
    "11.5": "495.29.05",
    "11.6": "510.39.01",
    "11.7": "515.43.04",
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}

# Minor-version compatibility: any release of a major runs from this driver on, with limits
# (no PTX JIT of newer PTX, some APIs return cudaErrorCallRequiresNewerDriver).
COMPAT_FLOOR: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580"}

# conda-forge stopped building PyTorch against CUDA 11.8 after this release.
CONDA_FORGE_CUDA118_LAST_PYTORCH = "2.5.1"
# The pytorch channel's pytorch-cuda metapackage exists for these versions only (last: 12.4).
LEGACY_PYTORCH_CUDA = ("11.6", "11.7", "11.8", "12.1", "12.4")

STYLES = ("conda-forge", "pytorch")

_CUDA_RE = re.compile(r"^(\d+)\.(\d+)$")


def parse_cuda(text: str) -> str:
    """Normalise a CUDA version given by a user ("12.4", " 11.8 ") or raise UsageError."""
    value = str(text).strip()
    m = _CUDA_RE.match(value)
    if not m:
        raise UsageError(
            f"CUDA version must look like 12.4, got {text!r}",
            fix=f"one of {', '.join(MIN_DRIVER)}",
        )
    if int(m.group(1)) not in COMPAT_FLOOR or len(m.group(2)) > 2:
        raise UsageError(
            f"unknown CUDA version {value}: not supported (tk knows CUDA "
            f"{min(COMPAT_FLOOR)}.x to {max(COMPAT_FLOOR)}.x)",
            fix=f"use a known version: {', '.join(MIN_DRIVER)}",
        )
    return f"{int(m.group(1))}.{int(m.group(2))}"


def is_known_cuda(cuda: str) -> bool:
    return cuda in MIN_DRIVER


def version_tuple(text: str) -> tuple[int, ...]:
    """'550.54.14' -> (550, 54, 14); non-numeric parts are dropped."""
    parts = []
    for piece in str(text).split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def version_ge(a: str, b: str) -> bool:
    return version_tuple(a) >= version_tuple(b)


@dataclass(frozen=True)
class DriverVerdict:
    """Whether a driver runs a CUDA version: ok, compat (runs with limits) or too_old."""

    status: str
    cuda: str
    driver: str
    min_driver: str | None
    message: str


def driver_verdict(cuda: str, driver: str) -> DriverVerdict:
    full = MIN_DRIVER.get(cuda)
    major = version_tuple(cuda)[0]
    floor = COMPAT_FLOOR.get(major)
    if full is not None and version_ge(driver, full):
        return DriverVerdict("ok", cuda, driver, full, f"driver {driver} runs CUDA {cuda}")
    if floor is not None and version_ge(driver, floor):
        need = full or f"the {major}.x release driver"
        return DriverVerdict(
            "compat",
            cuda,
            driver,
            full,
            f"driver {driver} runs CUDA {cuda} only through minor-version compatibility "
            f"(CUDA {major}.x from {floor}); full support needs >= {need}",
        )
    need = full or floor or "a newer driver"
    return DriverVerdict(
        "too_old",
        cuda,
        driver,
        full or floor,
        f"driver {driver} is too old for CUDA {cuda}: it needs >= {need}"
        + (f" (>= {floor} with minor-version compatibility)" if floor and full else ""),
    )


def best_cuda_for_driver(candidates: list[str], driver: str) -> tuple[str | None, str]:
    """The first candidate (in preference order) the driver fully supports, else one it runs
    through compatibility, else None. Returns (cuda, status)."""
    verdicts = [driver_verdict(c, driver) for c in candidates]
    for v in verdicts:
        if v.status == "ok":
            return v.cuda, "ok"
    for v in verdicts:
        if v.status == "compat":
            return v.cuda, "compat"
    return None, "too_old"


def check_channel_limits(style: str, cuda: str, pytorch_spec: str | None) -> list[str]:
    """Raise VariantRefused for what a channel style cannot deliver; return notes otherwise."""
    notes: list[str] = []
    if style == "pytorch":
        if cuda not in LEGACY_PYTORCH_CUDA:
            raise VariantRefused(
                f"the pytorch channel's pytorch-cuda metapackage exists for CUDA "
                f"{', '.join(LEGACY_PYTORCH_CUDA)} only, not {cuda}",
                fix="use --cuda 12.4 (or lower) or the conda-forge style spec (envs/inference.yml)",
            )
        return notes
    if cuda == "11.8":
        low = lower_bound(pytorch_spec)
        last = CONDA_FORGE_CUDA118_LAST_PYTORCH
        if low is not None and version_tuple(low) > version_tuple(last):
            raise VariantRefused(
                f"conda-forge builds PyTorch for CUDA 11.8 only up to pytorch {last}, "
                f"but the spec asks for pytorch {pytorch_spec}",
                fix=f"pin pytorch<={last} for --cuda 11.8, or pick --cuda 12.4 or newer",
            )
        notes.append(
            f"conda-forge builds PyTorch for CUDA 11.8 only up to pytorch {last}; "
            "the solver will pick that or older"
        )
    return notes


_BOUND_RE = re.compile(r"^\s*(==|=|>=|>|~=)?\s*(\d+(?:\.\d+)*)(\.\*|\*)?")


def lower_bound(version_spec: str | None) -> str | None:
    """The smallest version a simple conda version spec allows ('>=2.6' -> '2.6'), or None.

    Only the first comma-separated clause is read; '<', '!=' and '|' specs give None.
    """
    if not version_spec:
        return None
    clause = version_spec.split(",")[0].strip()
    if "|" in clause or clause.startswith(("<", "!")):
        return None
    m = _BOUND_RE.match(clause)
    return m.group(2) if m else None
