"""Generated passwords for the ACL users and how clients find them.

They live in ``<conf dir>/credentials.json`` (mode 0600, git-ignored), next to the
``users.acl`` that holds only their sha256 hashes. Nothing here prints a password.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import ConfigError, CredentialsError
from toolkit.fsutil import atomic_write
from toolkit.redis import acl
from toolkit.redis.urls import build_url

if TYPE_CHECKING:
    from toolkit.config import Settings

CREDENTIALS_FILE = "credentials.json"
PASSWORD_BYTES = 32  # 256 bits


def new_password() -> str:
    return secrets.token_hex(PASSWORD_BYTES)


@dataclass(frozen=True)
class Credentials:
    """Where the managed server listens and each ACL user's password."""

    host: str
    port: int
    tls: bool
    passwords: dict[str, str] = field(repr=False)
    ca_file: str | None = None

    def __repr__(self) -> str:
        users = ", ".join(sorted(self.passwords))
        return f"Credentials(host={self.host!r}, port={self.port}, tls={self.tls}, users=[{users}])"

    def url(self, user: str) -> str:
        if user not in self.passwords:
            users = ", ".join(sorted(self.passwords))
            raise CredentialsError(
                f"no password for Redis user {user!r}: the users are {users}",
                fix=f"use one of: {users} (e.g. --user tk-monitor)",
            )
        return build_url(self.host, self.port, user, self.passwords[user], self.tls)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "ca_file": self.ca_file,
            "users": self.passwords,
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def credentials_path(conf_dir: Path) -> Path:
    return conf_dir / CREDENTIALS_FILE


def load(conf_dir: Path) -> Credentials | None:
    """Read the credentials file; None when there is none yet."""
    path = credentials_path(conf_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read {path}: {exc}", fix="remove it and run `tk redis harden --rotate`"
        ) from None
    try:
        return Credentials(
            host=str(data["host"]),
            port=int(data["port"]),
            tls=bool(data["tls"]),
            passwords={str(k): str(v) for k, v in data["users"].items()},
            ca_file=data.get("ca_file"),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ConfigError(
            f"{path} is damaged", fix="remove it and run `tk redis harden --rotate`"
        ) from None


def kept_port(settings: Settings, creds: Credentials | None) -> int | None:
    """The port `tk redis harden` kept in credentials.json, which the server and every client
    use, unless a flag, env var or tk.yaml names one (then that wins: None)."""
    if creds is None or settings.source("redis_port") != "default":
        return None
    return creds.port


def passwords_for(existing: Credentials | None, rotate: bool) -> dict[str, str]:
    """Keep existing passwords (unless ``rotate``), generate the missing ones."""
    old = {} if (existing is None or rotate) else existing.passwords
    return {role.user: old.get(role.user) or new_password() for role in acl.ROLES}


def save(conf_dir: Path, creds: Credentials) -> Path:
    path = credentials_path(conf_dir)
    atomic_write(path, creds.to_json(), mode=0o600)
    return path
