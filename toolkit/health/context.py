"""What the checks look at, fetched once and shared: clients, INFO, queue depth, stack state.

A failure to reach Redis is remembered, so the checks that need Redis report it once as a
fail and the rest as skipped, instead of each waiting for its own timeout.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from toolkit.config import Settings


class Unreachable(Exception):
    """Redis could not be reached; the message is one secret-free line."""


class Ctx:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.timeout = settings.doctor_timeout
        self._errors: dict[str, str] = {}

    def _client(self, user: str) -> Any:
        from toolkit.redis import connect

        if user in self._errors:
            raise Unreachable(self._errors[user])
        try:
            c = connect.client(self.s, user, timeout=self.timeout, retry=None)
            c.ping()
            return c
        except Exception as exc:
            msg = str(exc).split("\n")[0]
            self._errors[user] = msg
            raise Unreachable(msg) from None

    @cached_property
    def monitor(self) -> Any:
        return self._client("tk-monitor")

    @cached_property
    def admin(self) -> Any | None:
        """An admin client when this machine has the admin password, else None."""
        try:
            return self._client("admin")
        except Unreachable:
            return None

    @cached_property
    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.monitor.info("everything")
        return info

    @cached_property
    def depth(self) -> Any:
        from toolkit.queue.depth import depth
        from toolkit.queue.protocol import QueueConfig

        return depth(self.monitor, QueueConfig.from_settings(self.s))

    @cached_property
    def heartbeats(self) -> dict[str, dict[str, Any]]:
        from toolkit.queue.depth import live_workers

        return live_workers(self.monitor)

    @cached_property
    def stack_state(self) -> dict[str, Any] | None:
        path = self.s.run_dir / "stack.json"
        try:
            data: dict[str, Any] = json.loads(Path(path).read_text())
            return data
        except (OSError, ValueError):
            return None

    @property
    def api_url(self) -> str:
        state = self.stack_state
        if state and state.get("api_url"):
            return str(state["api_url"])
        if self.s.serve_url:
            return self.s.serve_url.rstrip("/")
        return f"http://{self.s.serve_host}:{self.s.serve_port}"
