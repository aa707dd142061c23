"""Errors of ``tk env``, all inside the project's family (``toolkit.errors``).

TkError
+-- EnvError                 anything about building or reading an environment (exit 1)
|   +-- SolveError           the solver found no set of packages (its explanation included)
|   +-- ChannelError         a channel could not be read
|   +-- InstallError         linking packages into the prefix failed (nothing left behind)
|   +-- EngineNotFound       conda/mamba/micromamba asked for but not on PATH
|   +-- EnvNotFound          no environment by that name or prefix
|   +-- ValidationFailed     probes ran and at least one failed
+-- UsageError
    +-- SpecError            the spec file is not valid (line numbers in the message)
    +-- VariantRefused       a variant that cannot work here (driver, channel limits)
    +-- LockMismatch         ``--locked`` with a lock that no longer matches the spec
"""

from __future__ import annotations

from toolkit.errors import TkError, UsageError


class EnvError(TkError):
    pass


class SolveError(EnvError):
    pass


class ChannelError(EnvError):
    pass


class InstallError(EnvError):
    pass


class EngineNotFound(EnvError):
    pass


class EnvNotFound(EnvError):
    pass


class ValidationFailed(EnvError):
    pass


class SpecError(UsageError):
    pass


class VariantRefused(UsageError):
    pass


class LockMismatch(UsageError):
    pass
