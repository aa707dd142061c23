"""Redis URLs without leaking secrets. Pure."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


def mask_url(url: str) -> str:
    """``redis://tk-api:s3cret@host:6379/0`` -> ``redis://tk-api:***@host:6379/0``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def build_url(host: str, port: int, username: str, password: str, tls: bool = False) -> str:
    scheme = "rediss" if tls else "redis"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{quote(username, safe='')}:{quote(password, safe='')}@{host}:{port}/0"
