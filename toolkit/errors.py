"""The project's error family.

Library code raises these; only the CLI layer (``toolkit.cli``) prints them, as one line,
and turns them into an exit code.

    TkError                      anything tk reports to the user (exit 1)
    +-- UsageError               bad flag value, bad config value, bad input file (exit 2)
    |   +-- ConfigError          a setting that cannot be parsed or is out of range
    +-- NotYetAvailable          a command a later release fills in (exit 2)
    +-- FileWriteError           a file could not be written; nothing was left half-written
    +-- RedisError               anything about the Redis server
    |   +-- ServerBinaryNotFound no redis-server/valkey-server could be found
    |   +-- PortInUse            the port the server needs is taken
    |   +-- ServerStartError     the server did not come up
    |   +-- ServerNotRunning     the server is not running / not reachable
    |   +-- CredentialsError     no credentials for the role asked for
    |   +-- UnsafeConfigError    a setting that can lose data was asked for without --force
"""

from __future__ import annotations


class TkError(Exception):
    """An error tk reports to the user: a message naming the problem and, if known, the fix."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.fix:
            text += f"; fix: {self.fix}"
        return " ".join(text.split())


class UsageError(TkError):
    exit_code = 2


class ConfigError(UsageError):
    pass


class NotYetAvailable(TkError):
    exit_code = 2


class FileWriteError(TkError):
    pass


class RedisError(TkError):
    pass


class ServerBinaryNotFound(RedisError):
    pass


class PortInUse(RedisError):
    pass


class ServerStartError(RedisError):
    pass


class ServerNotRunning(RedisError):
    pass


class CredentialsError(RedisError):
    pass


class UnsafeConfigError(RedisError, UsageError):
    exit_code = 2
