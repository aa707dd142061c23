"""Clients for the managed Redis, with credentials found rather than copied around.

Precedence: an explicit URL > ``TK_REDIS_URL`` (settings.redis_url) > the credentials file
``tk redis harden`` wrote. A URL without a password takes it from the credentials file when
the user is one tk generated, or from ``TK_REDIS_PASSWORD``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from toolkit.config import Settings
from toolkit.errors import ConfigError, CredentialsError, ServerNotRunning
from toolkit.redis import credentials
from toolkit.redis.urls import mask_url

if TYPE_CHECKING:
    import redis


def resolve_url(settings: Settings, user: str = "admin", url: str | None = None) -> str:
    """The URL (with password) to reach Redis as ``user``."""
    url = url or settings.redis_url
    creds = credentials.load(settings.redis_conf_dir)
    if url:
        return _fill_password(url, creds, user)
    if creds is None:
        raise CredentialsError(
            f"no Redis credentials in {settings.redis_conf_dir}",
            fix="run `tk redis harden` first, or set TK_REDIS_URL",
        )
    return creds.url(user)


def _fill_password(url: str, creds: credentials.Credentials | None, role: str) -> str:
    """Complete a URL's credentials: a bare ``redis://host:port`` connects as ``role`` with
    the password from credentials.json; ``redis://user@host`` takes user's password from
    TK_REDIS_PASSWORD or credentials.json. A URL with a password is used as it is."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {mask_url(url)}: {exc}") from None
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(
            f"bad Redis URL {mask_url(url)}", fix="use redis://[user[:password]@]host:port/0"
        )
    if parts.password is not None:
        return url
    from urllib.parse import quote

    if not parts.username:
        if creds is None or role not in creds.passwords:
            return url
        auth = f"{quote(role, safe='')}:{quote(creds.passwords[role], safe='')}@"
        return parts._replace(netloc=auth + parts.netloc).geturl()
    user = unquote(parts.username)
    password = os.environ.get("TK_REDIS_PASSWORD")
    if password is None and creds is not None:
        password = creds.passwords.get(user)
    if password is None:
        return url
    netloc = f"{parts.username}:{quote(password, safe='')}@{parts.netloc.split('@', 1)[1]}"
    return parts._replace(netloc=netloc).geturl()


def client(
    settings: Settings,
    user: str = "admin",
    url: str | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> redis.Redis:
    """A redis-py client for ``user``; raises CredentialsError when none can be found."""
    import redis as redis_py

    full = resolve_url(settings, user, url)
    t = timeout if timeout is not None else settings.redis_timeout
    creds = credentials.load(settings.redis_conf_dir)
    extra: dict[str, Any] = {}
    if full.startswith("rediss://") and creds is not None and creds.ca_file:
        extra["ssl_ca_certs"] = creds.ca_file
        extra["ssl_check_hostname"] = False
    extra.update(kwargs)
    return redis_py.Redis.from_url(
        full, socket_timeout=t, socket_connect_timeout=t, decode_responses=True, **extra
    )


NOPERM_FIX = (
    "the server's users.acl predates this tk (or was edited): run `tk redis harden` (passwords "
    "kept; a running server loads the new users.acl), or grant the command on the server the "
    "URL points at"
)


def describe_connection_error(exc: Exception, url: str) -> ServerNotRunning:
    """A one-line, secret-free error for a failed connection."""
    import redis as redis_py

    from toolkit.procs import supervised

    text = str(exc).split("\n")[0]
    in_stack = supervised()  # started by `tk up`: the fix is the stack's
    if isinstance(exc, redis_py.AuthenticationError) or "WRONGPASS" in text:
        restart = "`tk down` then `tk up`" if in_stack else "`tk redis stop` then `tk redis start`"
        return ServerNotRunning(
            f"Redis at {mask_url(url)} refused the credentials: {text}",
            fix="the passwords in credentials.json (or TK_REDIS_URL/TK_REDIS_PASSWORD) do not "
            f"match the server's; if they were rotated while it ran, restart it: {restart}",
        )
    if isinstance(exc, redis_py.exceptions.NoPermissionError):
        return ServerNotRunning(
            f"Redis at {mask_url(url)} refused a command to this user: {text}",
            fix=NOPERM_FIX,
        )
    fix = (
        "`tk logs redis` says why the stack's Redis is down (or check the --redis-url / "
        "TK_REDIS_URL given to `tk up`)"
        if in_stack
        else "start it with `tk redis start`, or check TK_REDIS_URL"
    )
    return ServerNotRunning(f"cannot reach Redis at {mask_url(url)}: {text}", fix=fix)
