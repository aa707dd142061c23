"""The shape of a check and of a doctor report, and how a report becomes an exit code. Pure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "skip"]
GROUPS = ("host", "env", "redis", "queue", "workers", "api")

SCHEMA_VERSION = 1
"""Bumped when the --json shape changes incompatibly (documented in docs/doctor.md)."""


@dataclass(frozen=True)
class Result:
    group: str
    id: str
    status: Status
    finding: str
    fix: str = ""
    ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ok(finding: str) -> tuple[Status, str, str]:
    return "ok", finding, ""


def warn(finding: str, fix: str) -> tuple[Status, str, str]:
    return "warn", finding, fix


def fail(finding: str, fix: str) -> tuple[Status, str, str]:
    return "fail", finding, fix


def skip(finding: str) -> tuple[Status, str, str]:
    return "skip", finding, ""


Outcome = tuple[Status, str, str]


@dataclass(frozen=True)
class Check:
    group: str
    id: str
    run: Callable[[Any], Outcome]
    needs: str | None = None  # id of a check in the same group that must not fail first


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in ("ok", "warn", "fail", "skip")}

    def exit_code(self, strict: bool = False) -> int:
        """0 all ok, 1 any fail, 2 any warning with ``strict``."""
        c = self.counts()
        if c["fail"]:
            return 1
        if strict and c["warn"]:
            return 2
        return 0

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "exit_code": self.exit_code(strict),
            "counts": self.counts(),
            "checks": [r.to_dict() for r in self.results],
        }


def select(checks: Sequence[Check], only: Sequence[str], skip_: Sequence[str]) -> list[Check]:
    """Checks in the groups asked for (``--only``), minus the skipped (``--skip``)."""
    unknown = sorted((set(only) | set(skip_)) - set(GROUPS))
    if unknown:
        from toolkit.errors import UsageError

        raise UsageError(
            f"unknown check group {unknown[0]!r}", fix=f"groups are: {', '.join(GROUPS)}"
        )
    return [c for c in checks if (not only or c.group in only) and c.group not in skip_]
