"""Parsing of human-friendly values (memory sizes, durations) into numbers. Pure."""

from __future__ import annotations

import re

from toolkit.errors import ConfigError

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
    "t": 1000**4,
    "tb": 1024**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int, what: str = "size") -> int:
    """Parse ``"512mb"``, ``"2gb"``, ``"1073741824"`` into bytes (Redis's units: mb = 2**20).

    Raises ConfigError naming the value and the accepted forms.
    """
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"{what} must not be negative, got {text}")
        return text
    m = _SIZE_RE.match(str(text))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise ConfigError(
            f"{what} {text!r} is not a size",
            fix="use bytes or a number with a unit, e.g. 512mb, 2gb",
        )
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def format_size(n: int) -> str:
    """Bytes as a Redis-style size: whole mb/gb when exact, else bytes."""
    for unit, factor in (("gb", 1024**3), ("mb", 1024**2), ("kb", 1024)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def human_size(n: float) -> str:
    """Bytes for humans: 1.5 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
