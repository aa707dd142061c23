"""The hardening profile: every choice behind a redis.conf, validated. Pure.

``build_profile`` turns settings and flags into a ``HardenProfile``; ``render_conf`` and
``render_acl`` turn a profile into file text. Nothing here touches the disk or the network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ConfigError, UnsafeConfigError
from toolkit.redis import acl
from toolkit.redis.version import ServerVersion
from toolkit.templating import render
from toolkit.units import format_size

POLICIES = (
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)
SAFE_POLICY = "noeviction"
EVICTION_WARNING = (
    "maxmemory-policy {policy} lets Redis evict keys when memory runs out: queued tasks and "
    "results can silently disappear. Use noeviction (the default): producers get an error "
    "instead and nothing is lost"
)
DEFAULT_MEMORY_SHARE = 0.25
"""Default maxmemory: this share of the host's RAM (the rest is for the model workers)."""

BIND_LOOPBACK = "127.0.0.1 -::1"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None = None


@dataclass(frozen=True)
class HardenProfile:
    port: int
    maxmemory: int
    policy: str
    appendfsync: str
    data_dir: Path
    logfile: Path
    pidfile: Path
    aclfile: Path
    tls: TlsFiles | None = None
    bind: str = BIND_LOOPBACK
    tcp_keepalive: int = 60
    timeout: int = 300


def default_maxmemory(total_ram: int) -> int:
    """A quarter of RAM, whole megabytes, at least 64 MB."""
    mb = 1024 * 1024
    return max(64 * mb, int(total_ram * DEFAULT_MEMORY_SHARE) // mb * mb)


def check_policy(policy: str, force: bool) -> list[str]:
    """Validate a maxmemory-policy; an evicting one needs ``force``. Returns warnings."""
    if policy not in POLICIES:
        raise ConfigError(
            f"unknown maxmemory-policy {policy!r}", fix=f"use one of: {', '.join(POLICIES)}"
        )
    if policy == SAFE_POLICY:
        return []
    message = EVICTION_WARNING.format(policy=policy)
    if not force:
        raise UnsafeConfigError(message, fix="keep noeviction, or pass --force to accept the risk")
    return [message]


def is_loopback(address: str) -> bool:
    a = address.lstrip("-")
    return a in {"::1", "localhost"} or a.startswith("127.")


def check_address(address: str) -> None:
    """One ``bind`` address: an IP address (``-`` in front: optional, as in ``-::1``), ``*``
    or ``localhost``."""
    a = address[1:] if address.startswith("-") else address
    if a in {"*", "::*", "localhost"}:
        return
    try:
        ipaddress.ip_address(a)
    except ValueError:
        raise ConfigError(
            f"--bind {address!r} is not an IP address",
            fix="give IP addresses separated by spaces, e.g. --bind '127.0.0.1 -::1 10.0.0.5' "
            "(a leading - marks one that may be missing)",
        ) from None


def check_bind(bind: str | None, tls: TlsFiles | None, force: bool) -> tuple[str, list[str]]:
    """The bind line; beyond loopback without TLS passwords cross the network in clear text,
    so it needs ``force``. Returns (bind, warnings)."""
    if not bind or not bind.split():
        return BIND_LOOPBACK, []
    addresses = bind.split()
    for address in addresses:
        check_address(address)
    wide = [a for a in addresses if not is_loopback(a)]
    if not wide or tls is not None:
        return " ".join(addresses), []
    message = (
        f"bind {' '.join(wide)} without TLS: passwords and images cross the network in clear text"
    )
    if not force:
        raise UnsafeConfigError(message, fix="add --tls-cert/--tls-key, or pass --force")
    return " ".join(addresses), [message]


MIN_PORT, MAX_PORT = 1, 65535
MIN_MAXMEMORY = 1024 * 1024
"""Below 1 MB a server cannot even hold its own buffers: every write would be refused."""


def check_port(port: int) -> int:
    if not MIN_PORT <= port <= MAX_PORT:
        raise ConfigError(
            f"port must be between {MIN_PORT} and {MAX_PORT}, got {port}",
            fix="pick a free port, e.g. --port 6379 (redis.port in tk.yaml, TK_REDIS_PORT)",
        )
    return port


def check_maxmemory(maxmemory: int) -> int:
    if maxmemory == 0:
        raise ConfigError(
            "maxmemory 0 means no limit: Redis would grow until the kernel kills it and the "
            "queue goes with it",
            fix="give a limit such as --maxmemory 512mb or 2gb, or leave it out for a quarter "
            "of RAM",
        )
    if maxmemory < MIN_MAXMEMORY:
        raise ConfigError(
            f"maxmemory {maxmemory} bytes is too small: with noeviction every write would fail",
            fix="give at least 1mb, e.g. --maxmemory 512mb, or leave it out for a quarter of RAM",
        )
    return maxmemory


def check_tls(cert: Path | None, key: Path | None, ca: Path | None) -> TlsFiles | None:
    """The TLS files, checked. Without ``ca``: a self-signed cert is its own CA (clients
    verify the server against it); any other cert needs the CA that signed it."""
    if cert is None and key is None and ca is None:
        return None
    if cert is None or key is None:
        missing = "--tls-key" if key is None else "--tls-cert"
        raise ConfigError(
            "TLS needs both --tls-cert and --tls-key",
            fix=f"add {missing} FILE (and --tls-ca for a cert your own CA signed)",
        )
    for what, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)):
        if path is not None and not path.is_file():
            raise ConfigError(
                f"{what} {path}: no such file",
                fix=f"give the path of an existing PEM file to {what}",
            )
    if ca is None:
        if not is_self_signed(cert):
            raise ConfigError(
                f"--tls-cert {cert} is not self-signed and no --tls-ca was given: clients "
                "could not verify the server",
                fix="add --tls-ca with the CA certificate that signed it (for a public CA: "
                "--tls-ca /etc/ssl/certs/ca-certificates.crt)",
            )
        ca = cert
    return TlsFiles(cert.resolve(), key.resolve(), ca.resolve())


def is_self_signed(cert: Path) -> bool:
    """Whether the (first) certificate in ``cert`` names itself as its issuer."""
    import ssl

    try:
        decoded = ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]
    except (ssl.SSLError, OSError, AttributeError, ValueError):
        return False
    return bool(decoded.get("subject")) and decoded.get("subject") == decoded.get("issuer")


def render_conf(
    profile: HardenProfile, version: ServerVersion, server_path: Path | str = ""
) -> str:
    """redis.conf text for ``profile``, with only directives ``version`` accepts."""
    return render(
        "redis.conf.j2",
        version=str(version),
        server_path=server_path,
        bind=profile.bind,
        port=profile.port,
        tls=profile.tls,
        tcp_keepalive=profile.tcp_keepalive,
        timeout=profile.timeout,
        pidfile=profile.pidfile,
        data_dir=profile.data_dir,
        logfile=profile.logfile,
        appendfsync=profile.appendfsync,
        maxmemory=format_size(profile.maxmemory),
        policy=profile.policy,
        aclfile=profile.aclfile,
        has_enable_debug_command=version.has_enable_debug_command,
    )


def render_acl(passwords: dict[str, str], version: ServerVersion) -> str:
    """users.acl text: ``default`` off, then one least-privilege user per role."""
    rules = [acl.default_user_rule()]
    rules += [acl.role_rule(role, passwords[role.user], version) for role in acl.ROLES]
    return render("users.acl.j2", rules=rules)


def header_value(conf_text: str, key: str) -> str | None:
    """A ``# tk-<key>: value`` line from a tk-written conf's header, if any."""
    for line in conf_text.splitlines()[:6]:
        if line.startswith(f"# tk-{key}:"):
            return line.split(":", 1)[1].strip() or None
    return None


def rendered_for(conf_text: str) -> str | None:
    """The server version a tk-written conf was rendered for, if any."""
    return header_value(conf_text, "rendered-for")
