"""``tk redis harden``: render the profile and write redis.conf, users.acl, credentials.json.

All three files are rendered first, then written each atomically with mode 0600; if any
write fails, none of the new files replace the old ones.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.config import Settings
from toolkit.errors import FileWriteError, RedisError
from toolkit.fsutil import atomic_write_all, ensure_dir
from toolkit.redis import connect, credentials
from toolkit.redis.profile import (
    HardenProfile,
    TlsFiles,
    check_bind,
    check_policy,
    default_maxmemory,
    render_acl,
    render_conf,
)
from toolkit.redis.server import ServerPaths, server_for


@dataclass
class HardenResult:
    conf: Path
    aclfile: Path
    credentials: Path
    server: str
    rotated: bool
    kept_passwords: bool
    warnings: list[str] = field(default_factory=list)
    live: str | None = None
    users: list[str] = field(default_factory=list)


def build_profile(
    settings: Settings, tls: TlsFiles | None, force: bool, bind: str | None = None
) -> tuple[HardenProfile, list[str]]:
    import psutil

    warnings = check_policy(settings.redis_policy, force)
    bind_line, bind_warnings = check_bind(bind, tls, force)
    warnings += bind_warnings
    paths = ServerPaths.from_settings(settings)
    maxmemory = settings.redis_maxmemory or default_maxmemory(psutil.virtual_memory().total)
    profile = HardenProfile(
        port=settings.redis_port,
        maxmemory=maxmemory,
        policy=settings.redis_policy,
        appendfsync="always" if settings.redis_durable else "everysec",
        data_dir=paths.data_dir,
        logfile=paths.logfile,
        pidfile=paths.pidfile,
        aclfile=paths.aclfile,
        tls=tls,
        bind=bind_line,
    )
    return profile, warnings


def harden(
    settings: Settings,
    *,
    tls: TlsFiles | None = None,
    force: bool = False,
    rotate: bool = False,
    bind: str | None = None,
) -> HardenResult:
    conf_dir = settings.redis_conf_dir
    paths = ServerPaths.from_settings(settings)
    existing = credentials.load(conf_dir) if conf_dir.exists() else None
    if existing is not None and settings.source("redis_port") == "default":
        # Re-running keeps the earlier choice of port rather than resetting it to 6379.
        settings = dataclasses.replace(settings, redis_port=existing.port)
    profile, warnings = build_profile(settings, tls, force, bind)
    server = server_for(settings, paths.conf)
    passwords = credentials.passwords_for(existing, rotate)
    creds = credentials.Credentials(
        host="127.0.0.1",
        port=profile.port,
        tls=tls is not None,
        passwords=passwords,
        ca_file=str(tls.ca) if tls and tls.ca else None,
    )
    texts = {
        paths.conf: render_conf(profile, server.version, server.path),
        paths.aclfile: render_acl(passwords, server.version),
        credentials.credentials_path(conf_dir): creds.to_json(),
    }
    # Before anything changes on disk: a live server with data and AOF off is switched
    # with CONFIG SET, so that a restart on the new file cannot start from an empty AOF.
    live = _switch_live_aof(settings)
    ensure_dir(conf_dir, mode=0o700)
    try:
        atomic_write_all(texts, mode=0o600)
    except FileWriteError as exc:
        raise FileWriteError(exc.message, fix="make it writable or set TK_REDIS_CONF_DIR") from None
    return HardenResult(
        conf=paths.conf,
        aclfile=paths.aclfile,
        credentials=credentials.credentials_path(conf_dir),
        server=server.describe(),
        rotated=rotate and existing is not None,
        kept_passwords=existing is not None and not rotate,
        warnings=warnings,
        live=live,
        users=sorted(passwords),
    )


def switch_aof_on(client: object, timeout: float = 120.0) -> str | None:
    """On a live server with data and AOF off: CONFIG SET appendonly yes, wait for the rewrite.

    Returns what was done, or None when nothing needed doing.
    """
    import redis

    assert isinstance(client, redis.Redis)
    info = client.info("persistence")
    if int(info.get("aof_enabled", 0)) == 1:
        return None
    keys = int(client.dbsize())
    if keys == 0:
        return None
    client.config_set("appendonly", "yes")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.info("persistence")
        busy = int(info.get("aof_rewrite_in_progress", 0)) or int(
            info.get("aof_rewrite_scheduled", 0)
        )
        if int(info.get("aof_enabled", 0)) == 1 and not busy:
            return f"live server had {keys} keys and AOF off: switched AOF on with CONFIG SET"
        time.sleep(0.1)
    raise RedisError(
        "AOF rewrite on the live server did not finish in time",
        fix="wait for INFO persistence aof_rewrite_in_progress:0 before restarting",
    )


def _switch_live_aof(settings: Settings) -> str | None:
    try:
        c = connect.client(settings, "admin", timeout=1.0)
        c.ping()
    except Exception:
        return None
    with c:
        return switch_aof_on(c)
