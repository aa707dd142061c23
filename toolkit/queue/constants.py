"""Every Redis key prefix, stream and group name, TTL and limit the queue uses, in one place."""

from __future__ import annotations

KEY_PREFIX = "tk:"
"""All of tk's keys start with this; the ACL users' key permissions are written against it."""

KEY_PATTERN = KEY_PREFIX + "*"
