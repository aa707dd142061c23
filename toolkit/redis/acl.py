"""ACL users tk writes: who may run what on which keys. Pure.

Each application role gets only the commands and key patterns it uses (least privilege);
commands that can reconfigure, wipe or spy on the server are the admin's alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from toolkit.queue.constants import KEY_PATTERN
from toolkit.redis.version import ServerVersion

ADMIN_ONLY_COMMANDS = (
    "config",
    "debug",
    "module",
    "flushall",
    "flushdb",
    "keys",
    "shutdown",
    "monitor",
    "replicaof",
    "slaveof",
    "acl",
    "bgrewriteaof",
    "bgsave",
    "save",
    "failover",
    "cluster",
    "migrate",
    "restore",
    "sync",
    "psync",
    "swapdb",
)
"""Commands no application user may run (CONFIG ... REPLICAOF and the like)."""

# What every client needs to connect and identify itself.
_CONNECTION = ("ping", "hello", "auth", "echo", "client|setname", "client|getname", "client|id")


@dataclass(frozen=True)
class Role:
    """One ACL user: a name, what it is for, its commands and whether it may only read."""

    user: str
    purpose: str
    commands: tuple[str, ...]
    read_only: bool = False
    admin: bool = False


ROLES: tuple[Role, ...] = (
    Role("admin", "operators and tk itself (start/stop, audit, harden)", (), admin=True),
    Role(
        "tk-api",
        "the HTTP API: enqueues tasks, reads results",
        (
            "xadd", "xlen", "xpending", "xrange", "xread", "xinfo|stream", "xinfo|groups",
            "get", "mget", "set", "exists", "ttl", "pttl", "scan", "info", "hset", "expire",
            "hgetall",
            "multi", "exec", "discard",
        ),
    ),
    Role(
        "tk-worker",
        "inference workers: claim, ack, reclaim, store results, heartbeat",
        (
            "xreadgroup", "xack", "xautoclaim", "xclaim", "xadd", "xdel", "xlen", "xpending",
            "xrange", "xinfo|stream", "xinfo|groups", "xinfo|consumers", "xgroup|create",
            "xgroup|createconsumer", "xgroup|delconsumer", "set", "get", "del", "exists",
            "expire", "pexpire", "incr", "hset", "hgetall", "hincrby", "hincrbyfloat", "scan",
            "multi", "exec", "discard",
        ),
    ),
    Role(
        "tk-monitor",
        "tk doctor and dashboards: read-only figures",
        (
            "info", "dbsize", "xlen", "xpending", "xrange", "xrevrange", "xinfo|stream",
            "xinfo|groups",
            "xinfo|consumers", "get", "mget", "exists", "ttl", "pttl", "type", "scan",
            "hgetall", "memory|usage",
        ),
        read_only=True,
    ),
)  # fmt: skip
ROLE_BY_USER = {r.user: r for r in ROLES}
APP_USERS = tuple(r.user for r in ROLES if not r.admin)


def password_hash(password: str) -> str:
    """The form Redis's ACL keeps: sha256 hex of the password."""
    return hashlib.sha256(password.encode()).hexdigest()


def role_rule(role: Role, password: str, version: ServerVersion) -> str:
    """The ACL line for ``role`` on ``version``, with the password as a sha256 hash."""
    head = f"user {role.user} on #{password_hash(password)}"
    if role.admin:
        return f"{head} ~* &* +@all"
    if role.read_only and version.has_acl_selectors:
        keys = f"%R~{KEY_PATTERN}"
    else:
        keys = f"~{KEY_PATTERN}"
    commands = list(_CONNECTION) + list(role.commands)
    if version.has_client_setinfo:
        commands.append("client|setinfo")
    allowed = " ".join(f"+{c}" for c in commands)
    return f"{head} resetchannels {keys} -@all {allowed}"


def default_user_rule() -> str:
    """The built-in ``default`` user: off, and no password can ever match (no ``nopass``).

    It still holds every permission, because the server replays the append-only file as
    ``default``: Redis 7.0 and Valkey 8 re-check ACLs at EXEC while loading, and drop every
    MULTI/EXEC transaction (and script effects, which replicate as one) from the AOF when
    ``default`` may not run the commands inside. Being off, it admits no connection.
    """
    return "user default off resetpass ~* &* +@all"


def _rule_parts(line: str) -> tuple[str, list[str], set[str]]:
    """An ACL file line -> (user, its other tokens in order, its +commands)."""
    tokens = line.split()
    user = tokens[1] if len(tokens) > 1 and tokens[0] == "user" else ""
    return user, [t for t in tokens if not t.startswith("+")], {t for t in tokens if t[0] == "+"}


def _rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def only_commands_added(old_text: str, new_text: str) -> bool:
    """Whether ``new_text`` is ``old_text`` with commands added to some users and nothing
    else changed: then ``old_text`` is what an earlier tk wrote (same users, passwords, keys,
    line order), and rewriting it loses nothing. A file edited by hand or saved by the
    server (``ACL SAVE`` writes its own token order) does not qualify."""
    old, new = _rules(old_text), _rules(new_text)
    if len(old) != len(new):
        return False
    for o, n in zip(old, new, strict=True):
        ou, orest, ocmds = _rule_parts(o)
        nu, nrest, ncmds = _rule_parts(n)
        if ou != nu or orest != nrest or not ocmds <= ncmds:
            return False
    return True
