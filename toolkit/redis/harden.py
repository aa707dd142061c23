"""``tk redis harden``: render the profile and write redis.conf, users.acl, credentials.json.

All three files (and redis-conf/.gitignore the first time) are rendered first, then written
each atomically with mode 0600; if any write fails, none of the new files replace the old
ones. Re-running keeps the earlier choices that are not given again.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.config import Settings
from toolkit.errors import FileWriteError, RedisError, UsageError
from toolkit.fsutil import atomic_write_all, ensure_dir
from toolkit.redis import connect, credentials
from toolkit.redis.profile import (
    BIND_LOOPBACK,
    HardenProfile,
    TlsFiles,
    check_bind,
    check_maxmemory,
    check_policy,
    check_port,
    check_tls,
    default_maxmemory,
    render_acl,
    render_conf,
)
from toolkit.redis.server import ServerPaths, read_pid, server_for

if TYPE_CHECKING:
    import redis


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
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


GITIGNORE_FILE = ".gitignore"
GITIGNORE_TEXT = "# written by `tk redis harden`: credentials.json holds passwords\n*\n"
RESTART_FIX = "`tk redis stop && tk redis start`"


@dataclass(frozen=True)
class Prior:
    """The choices an earlier `tk redis harden` wrote into redis.conf."""

    appendfsync: str | None = None
    maxmemory: str | None = None
    policy: str | None = None
    bind: str | None = None
    tls: tuple[str, str, str | None] | None = None  # cert, key, ca

    @classmethod
    def read(cls, conf: Path) -> Prior:
        from toolkit.redis import confparse

        try:
            text = conf.read_text()
        except OSError:
            return cls()
        try:
            values = {d.name: d.args for d in confparse.parse_text(text, str(conf))}
        except confparse.ConfSyntaxError:
            return cls()

        def one(name: str) -> str | None:
            args = values.get(name)
            return " ".join(args) if args else None

        cert, key = one("tls-cert-file"), one("tls-key-file")
        return cls(
            appendfsync=one("appendfsync"),
            maxmemory=one("maxmemory"),
            policy=one("maxmemory-policy"),
            bind=one("bind"),
            tls=(cert, key, one("tls-ca-cert-file")) if cert and key else None,
        )


def _keep_prior(
    settings: Settings,
    prior: Prior,
    tls: TlsFiles | None,
    no_tls: bool,
    bind: str | None,
    force: bool,
) -> tuple[Settings, TlsFiles | None, str | None, bool, bool, list[str]]:
    """Earlier choices not given again: (settings, tls, bind, policy_forced, bind_forced, kept)."""
    from toolkit.units import parse_size

    kept: list[str] = []
    changes: dict[str, object] = {}
    if settings.source("redis_durable") == "default" and prior.appendfsync == "always":
        changes["redis_durable"] = True
        kept.append("--durable (appendfsync always)")
    if settings.source("redis_maxmemory") == "default" and prior.maxmemory:
        try:
            size = parse_size(prior.maxmemory)
        except UsageError:
            size = 0
        if size > 0:
            changes["redis_maxmemory"] = size
            kept.append(f"maxmemory {prior.maxmemory}")
    policy_forced = force
    if (
        settings.source("redis_policy") == "default"
        and prior.policy
        and prior.policy != settings.redis_policy
    ):
        changes["redis_policy"] = prior.policy
        policy_forced = True  # accepted with --force before; the warning is repeated
        kept.append(f"maxmemory-policy {prior.policy}")
    if tls is None and not no_tls and prior.tls is not None:
        cert, key, ca = prior.tls
        try:
            tls = check_tls(Path(cert), Path(key), Path(ca) if ca else None)
        except UsageError as exc:
            raise UsageError(
                f"the TLS files of the earlier run are unusable: {exc.message}",
                fix="give new --tls-cert/--tls-key (and --tls-ca), or --no-tls for plaintext",
            ) from None
        kept.append("TLS (--tls-cert/--tls-key/--tls-ca)")
    bind_forced = force
    if bind is None and prior.bind and prior.bind != BIND_LOOPBACK:
        bind = prior.bind
        # A wide bind accepted without TLS needed --force then; with TLS it needs it now.
        bind_forced = force or prior.tls is None
        kept.append(f"--bind {prior.bind!r}")
    if changes:
        settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    return settings, tls, bind, policy_forced, bind_forced, kept


def build_profile(
    settings: Settings,
    tls: TlsFiles | None,
    force: bool,
    bind: str | None = None,
    *,
    bind_force: bool | None = None,
) -> tuple[HardenProfile, list[str]]:
    import psutil

    check_port(settings.redis_port)
    if settings.redis_maxmemory is not None:
        check_maxmemory(settings.redis_maxmemory)
    bind_line, bind_warnings = check_bind(bind, tls, force if bind_force is None else bind_force)
    warnings = check_policy(settings.redis_policy, force)
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
    no_tls: bool = False,
) -> HardenResult:
    """Write redis.conf, users.acl, credentials.json (and a .gitignore) for ``settings``.

    Re-running keeps the earlier passwords, port, --durable, maxmemory, maxmemory-policy,
    TLS files and --bind unless they are given again (``no_tls`` drops TLS). With the managed
    server running, a new users.acl is loaded into it with ACL LOAD, a change of maxmemory,
    maxmemory-policy or appendfsync alone is applied with CONFIG SET; any other change needs
    a restart, which a warning names.
    """
    conf_dir = settings.redis_conf_dir
    paths = ServerPaths.from_settings(settings)
    existing = credentials.load(conf_dir) if conf_dir.exists() else None
    kept: list[str] = []
    port = credentials.kept_port(settings, existing)
    if port is not None:
        # Re-running keeps the earlier choice of port rather than resetting it to 6379.
        settings = dataclasses.replace(settings, redis_port=port)
        kept.append(f"port {port}")
    prior = Prior.read(paths.conf) if existing is not None else Prior()
    settings, tls, bind, policy_forced, bind_forced, more = _keep_prior(
        settings, prior, tls, no_tls, bind, force
    )
    kept += more
    profile, warnings = build_profile(settings, tls, policy_forced, bind, bind_force=bind_forced)
    server = server_for(settings, paths.conf)
    passwords = credentials.passwords_for(existing, rotate)
    creds = credentials.Credentials(
        host="127.0.0.1",
        port=profile.port,
        tls=tls is not None,
        passwords=passwords,
        ca_file=str(tls.ca) if tls and tls.ca else None,
    )
    texts: dict[Path, str | bytes] = {
        paths.conf: render_conf(profile, server.version, server.path),
        paths.aclfile: render_acl(passwords, server.version),
        credentials.credentials_path(conf_dir): creds.to_json(),
    }
    gitignore = conf_dir / GITIGNORE_FILE
    if not gitignore.exists():  # a user's own .gitignore is left as it is
        texts[gitignore] = GITIGNORE_TEXT
    old = {p: _read(p) for p in (paths.conf, paths.aclfile)}
    pid = read_pid(paths.pidfile)
    # Before anything changes on disk: a live server with data and AOF off is switched
    # with CONFIG SET, so that a restart on the new file cannot start from an empty AOF.
    # The connection uses the credentials as they are before this run (old passwords).
    admin = _live_admin(settings)
    try:
        live = switch_aof_on(admin) if admin is not None else None
        ensure_dir(conf_dir, mode=0o700)
        try:
            atomic_write_all(texts, mode=0o600)
        except FileWriteError as exc:
            raise FileWriteError(
                exc.message, fix="make it writable or set TK_REDIS_CONF_DIR"
            ) from None
        notes: list[str] = []
        if pid is not None:
            restart = _restart_fix(settings)
            warnings += _apply_live(
                admin, pid, old, texts, paths, existing, profile.port, notes, restart
            )
    finally:
        if admin is not None:
            admin.close()
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
        kept=kept,
        notes=notes,
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _apply_live(
    admin: redis.Redis | None,
    pid: int,
    old: dict[Path, str | None],
    new: dict[Path, str | bytes],
    paths: ServerPaths,
    existing: credentials.Credentials | None,
    port: int,
    notes: list[str],
    restart: str = RESTART_FIX,
) -> list[str]:
    """Bring the running managed server (pid ``pid``) up to the files just written: a new
    users.acl is loaded with ACL LOAD, changes only to LIVE_SETTABLE directives are applied
    with CONFIG SET; other changes need a restart. Returns warnings."""
    warnings: list[str] = []
    if old[paths.aclfile] != new[paths.aclfile]:
        error = "it could not be reached with the earlier admin password"
        if admin is not None:
            try:
                admin.acl_load()
                error = ""
            except Exception as exc:
                error = str(exc).split("\n")[0]
        if error:
            warnings.append(
                f"the running server (pid {pid}) still has the old users and passwords "
                f"({error}); clients using credentials.json cannot log in until it is "
                f"restarted: {restart}"
            )
        else:
            notes.append(
                f"running server (pid {pid}) loaded the new users.acl with ACL LOAD: the new "
                "passwords are in effect (connections already open stay logged in)"
            )
    live = _live_settable_changes(old[paths.conf], new[paths.conf])
    if live and admin is not None:
        try:
            for name, value in live.items():
                admin.config_set(name, value)
        except Exception as exc:  # then a restart is what applies it
            why = str(exc).split("\n")[0]
            warnings.append(
                f"the running server (pid {pid}) refused CONFIG SET ({why}); it "
                f"needs a restart to apply the new config: run {restart}"
            )
        else:
            shown = ", ".join(f"{k} {v}" for k, v in live.items())
            notes.append(f"running server (pid {pid}) took the new {shown} (CONFIG SET)")
        return warnings
    if old[paths.conf] != new[paths.conf]:
        if existing is not None and existing.port != port:
            what = f"port {existing.port} -> {port}: it still listens on {existing.port}"
        else:
            what = "it still runs with the old redis.conf"
        warnings.append(
            f"the running server (pid {pid}) needs a restart to apply the new config ({what}); "
            f"run {restart}"
        )
    return warnings


LIVE_SETTABLE = ("maxmemory", "maxmemory-policy", "appendfsync")
"""Directives a running server takes with CONFIG SET, so that changing only these needs no
restart."""


def _live_settable_changes(old_text: str | bytes | None, new_text: str | bytes) -> dict[str, str]:
    """The directives that differ between two confs, with their new values, when every one
    of them is LIVE_SETTABLE; empty when nothing differs or anything else does."""
    from toolkit.redis.confparse import parse_text

    if old_text is None or isinstance(old_text, bytes) or isinstance(new_text, bytes):
        return {}
    old: dict[str, list[str]] = {}
    new: dict[str, list[str]] = {}
    for text, into in ((old_text, old), (new_text, new)):
        for d in parse_text(text):
            into.setdefault(d.name, []).append(d.value)
    changed = {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}
    if not changed or not changed <= set(LIVE_SETTABLE) or not changed <= new.keys():
        return {}
    return {name: new[name][-1] for name in LIVE_SETTABLE if name in changed}


def _restart_fix(settings: Settings) -> str:
    """How to restart the managed server: `tk down` + `tk up` when a stack runs it (its
    supervisor would restart a server stopped under it), else stop + start."""
    from toolkit.stack import state

    if state.running(settings.run_dir) is not None:
        return "`tk down` then `tk up` (the stack runs this server)"
    return RESTART_FIX


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


def _live_admin(settings: Settings) -> redis.Redis | None:
    """An admin connection to the managed server as credentials.json reaches it before this
    run changes it (old port, old passwords), or None. TK_REDIS_URL is not used: harden
    writes the managed server's files."""
    try:
        c = connect.client(dataclasses.replace(settings, redis_url=None), "admin", timeout=1.0)
        c.ping()
    except Exception:
        return None
    return c
