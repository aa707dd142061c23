"""Queue depth figures for humans, ``tk doctor`` and the API's /metrics."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from toolkit.queue import constants as C
from toolkit.queue.protocol import QueueConfig, _s, entry_time_ms, now_ms


@dataclass(frozen=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int
    alive: bool  # a heartbeat key exists for it


@dataclass(frozen=True)
class Depth:
    """Waiting (not yet claimed), pending (claimed, not acked), ages and the dead letters."""

    waiting: int
    pending: int
    dead: int
    oldest_waiting_age_s: float | None
    oldest_pending_age_s: float | None
    group_exists: bool
    live_workers: list[str] = field(default_factory=list)
    consumers: list[ConsumerInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _age_s(entry_id: Any, now: int) -> float:
    return max(0.0, (now - entry_time_ms(_s(entry_id))) / 1000)


def live_workers(r: Any) -> dict[str, dict[str, Any]]:
    """Heartbeats of live workers: consumer name -> what it last reported."""
    out: dict[str, dict[str, Any]] = {}
    for key in r.scan_iter(match=C.HEARTBEAT_PREFIX + "*", count=100):
        raw = r.get(key)
        if raw is None:
            continue
        name = _s(key)[len(C.HEARTBEAT_PREFIX) :]
        try:
            out[name] = json.loads(_s(raw))
        except ValueError:
            out[name] = {}
    return out


def depth(r: Any, cfg: QueueConfig | None = None, consumers: bool = True) -> Depth:
    """Read the figures; needs xlen, xpending, xrange, xinfo (groups, consumers), scan, get."""
    import redis

    cfg = cfg or QueueConfig()
    now = now_ms()
    length = int(r.xlen(cfg.stream))
    dead = int(r.xlen(cfg.dead_stream))
    try:
        summary = r.xpending(cfg.stream, cfg.group)
        groups = r.xinfo_groups(cfg.stream)
    except redis.ResponseError:  # no stream or no group yet
        summary, groups = {"pending": 0, "min": None}, []
    group = next((g for g in groups if _s(g["name"]) == cfg.group), None)
    pending = int(summary["pending"])
    oldest_pending = _age_s(summary["min"], now) if pending and summary.get("min") else None
    waiting = max(0, length - pending)
    oldest_waiting = None
    if waiting:
        start = "-" if group is None else "(" + _s(group["last-delivered-id"])
        first = r.xrange(cfg.stream, start, "+", count=1)
        if first:
            oldest_waiting = _age_s(first[0][0], now)
    live = live_workers(r)
    infos: list[ConsumerInfo] = []
    if consumers and group is not None:
        for c in r.xinfo_consumers(cfg.stream, cfg.group):
            name = _s(c["name"])
            infos.append(ConsumerInfo(name, int(c["pending"]), int(c["idle"]), name in live))
    return Depth(
        waiting=waiting,
        pending=pending,
        dead=dead,
        oldest_waiting_age_s=oldest_waiting,
        oldest_pending_age_s=oldest_pending,
        group_exists=group is not None,
        live_workers=sorted(live),
        consumers=infos,
    )
