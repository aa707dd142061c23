"""``tk redis audit``: facts about a Redis setup and the rules that judge them.

Facts come from a redis.conf (plus its aclfile) or from a live server (CONFIG GET *, ACL LIST,
INFO, and for a local process its uid and file modes). ``run_rules`` is pure: every rule
looks at the same ``Facts`` and returns one ``Finding`` (ok / warn / fail / skip, the value
found, the fix). Secrets never reach ``Facts`` or a ``Finding``: passwords are masked as they
are read and described only by kind and length.

Password strength: a plaintext password (``requirepass`` or ``>pw``) shorter than
``PASSWORD_FAIL_BELOW`` characters or a well-known one fails, one shorter than
``PASSWORD_OK_FROM`` warns; a ``#<sha256>`` is ok unless it hashes a well-known password.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from toolkit.errors import RedisError, TkError, UsageError
from toolkit.redis import confparse
from toolkit.redis.acl import ADMIN_ONLY_COMMANDS
from toolkit.redis.profile import BIND_LOOPBACK, EVICTION_WARNING, SAFE_POLICY, rendered_for
from toolkit.redis.version import MIN_VERSION, ServerVersion, parse_version_string
from toolkit.units import human_size, parse_size

if TYPE_CHECKING:
    import psutil
    import redis

Status = Literal["ok", "warn", "fail", "skip"]
Verdict = tuple[Status, str, str]  # status, value found, fix

PASSWORD_FAIL_BELOW = 16
PASSWORD_OK_FROM = 32
ADMIN_USERS = frozenset({"admin"})
"""Users allowed to hold every right: the one ``tk redis harden`` writes."""

_COMMON_PASSWORDS = (
    "foobared", "password", "redis", "admin", "123456", "12345678", "changeme", "secret",
    "default", "root", "pass", "test", "qwerty", "letmein", "valkey",
)  # fmt: skip
_COMMON_DIGESTS = frozenset(hashlib.sha256(p.encode()).hexdigest() for p in _COMMON_PASSWORDS)
_SECRET_DIRECTIVES = frozenset(
    {"requirepass", "masterauth", "tls-key-file-pass", "tls-client-key-file-pass"}
)
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_SAFE_TLS = frozenset({"tlsv1.2", "tlsv1.3"})

# --- ACL rules -------------------------------------------------------------------------

_ADMIN = frozenset({"admin", "slow", "dangerous"})
_CATEGORIES: dict[str, frozenset[str]] = {
    **{
        c: _ADMIN
        for c in (
            "config", "debug", "module", "shutdown", "monitor", "replicaof", "slaveof", "acl",
            "bgrewriteaof", "bgsave", "save", "failover", "cluster", "sync", "psync",
            "latency", "slowlog", "lastsave", "role", "pfdebug", "pfselftest",
        )
    },
    "flushall": frozenset({"keyspace", "write", "slow", "dangerous"}),
    "flushdb": frozenset({"keyspace", "write", "slow", "dangerous"}),
    "keys": frozenset({"keyspace", "read", "slow", "dangerous"}),
    "migrate": frozenset({"keyspace", "write", "slow", "dangerous"}),
    "restore": frozenset({"keyspace", "write", "slow", "dangerous"}),
    "swapdb": frozenset({"keyspace", "write", "fast", "dangerous"}),
    "sort": frozenset({"write", "set", "sortedset", "list", "slow", "dangerous"}),
    "info": frozenset({"slow", "dangerous"}),
    "client": frozenset({"slow", "connection"}),
    "get": frozenset({"read", "string", "fast"}),
    "set": frozenset({"write", "string", "slow"}),
    "del": frozenset({"keyspace", "write", "slow"}),
    "scan": frozenset({"keyspace", "read", "slow"}),
    "ping": frozenset({"fast", "connection"}),
    "xadd": frozenset({"write", "stream", "fast"}),
    "xreadgroup": frozenset({"write", "stream", "slow", "blocking"}),
    "eval": frozenset({"slow", "scripting"}),
}  # fmt: skip
"""Categories of the commands the rules ask about (Redis 7's COMMAND INFO, abridged)."""


def command_categories(command: str) -> frozenset[str]:
    """ACL categories of ``command`` (a subcommand has its container's), from a hand table."""
    return _CATEGORIES.get(command.lower().partition("|")[0], frozenset())


@dataclass(frozen=True)
class Password:
    """A password as far as an audit may know it: its kind and length, never its text."""

    hashed: bool
    length: int | None  # plaintext length; None for a sha256 hash
    common: bool  # a well-known password (foobared, password, ...)

    def describe(self) -> str:
        if self.hashed:
            return "sha256 of a well-known password" if self.common else "sha256 hash"
        return "a well-known password" if self.common else f"plaintext, {self.length} chars"

    def verdict(self) -> Status:
        if self.common:
            return "fail"
        if self.hashed or self.length is None:
            return "ok"
        if self.length < PASSWORD_FAIL_BELOW:
            return "fail"
        return "warn" if self.length < PASSWORD_OK_FROM else "ok"


@dataclass(frozen=True)
class AclSelector:
    """Key patterns and command rules, as one selector (the root one or a ``(...)``)."""

    keys: tuple[str, ...] = ()  # as written: "~tk:*", "%R~tk:*"
    commands: tuple[str, ...] = ()  # in order: "-@all", "+get", "+client|setname"

    def can_run(self, command: str) -> bool:
        """True when this selector allows ``command`` (or, for a bare command, any of its
        subcommands); ``command`` may be ``"config"`` or ``"config|get"``."""
        cmd, _, sub = command.lower().partition("|")
        cats = command_categories(cmd)
        full = False
        plus: set[str] = set()
        minus: set[str] = set()
        for rule in self.commands:
            allow, body = rule[0] == "+", rule[1:].lower()
            if body == "@all" or body == cmd or (body[:1] == "@" and body[1:] in cats):
                full = allow
                plus.clear()
                minus.clear()
            elif body.startswith(cmd + "|"):
                name = body.split("|", 1)[1]
                (plus if allow else minus).add(name)
                (minus if allow else plus).discard(name)
        if sub:
            return (full and sub not in minus) or sub in plus
        return full or bool(plus)

    @property
    def all_commands(self) -> bool:
        """Starts from every command (+@all / allcommands as the last all-or-nothing rule)."""
        last = [r for r in self.commands if r[1:].lower() == "@all"]
        return bool(last) and last[-1][0] == "+"

    @property
    def all_keys(self) -> bool:
        keys = set(self.keys)
        read = bool(keys & {"~*", "%R~*", "%RW~*", "%WR~*"})
        write = bool(keys & {"~*", "%W~*", "%RW~*", "%WR~*"})
        return read and write


class _UserBuilder:
    """Applies ACL rules in order, like ACL SETUSER on a freshly reset user."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.enabled = False
        self.nopass = False
        self.passwords: dict[str, Password] = {}  # keyed by digest, dropped when built
        self.keys: list[str] = []
        self.commands: list[str] = ["-@all"]
        self.selectors: list[AclSelector] = []

    def _flag(self, token: str) -> bool:
        """Apply a word rule (on, off, nopass, ...); False when ``token`` is not one."""
        word = token.lower()
        actions: dict[str, Callable[[], None]] = {
            "on": lambda: setattr(self, "enabled", True),
            "off": lambda: setattr(self, "enabled", False),
            "nopass": self._nopass,
            "resetpass": self._resetpass,
            "reset": self.reset,
            "allkeys": lambda: self.keys.append("~*"),
            "resetkeys": self.keys.clear,
            "allcommands": lambda: self.commands.append("+@all"),
            "nocommands": lambda: self.commands.append("-@all"),
            "clearselectors": self.selectors.clear,
        }
        action = actions.get(word)
        if action is None:
            return word in {"allchannels", "resetchannels", "sanitize-payload",
                            "skip-sanitize-payload"}  # fmt: skip
        action()
        return True

    def _nopass(self) -> None:
        self.nopass = True
        self.passwords.clear()

    def _resetpass(self) -> None:
        self.nopass = False
        self.passwords.clear()

    def _password(self, token: str) -> None:
        kind, text = token[0], token[1:]
        if kind in "><":
            digest = hashlib.sha256(text.encode()).hexdigest()
            pw = Password(False, len(text), text.lower() in _COMMON_PASSWORDS)
        else:
            digest = text.lower()
            pw = Password(True, None, digest in _COMMON_DIGESTS)
        if kind in ">#":
            self.passwords[digest] = pw
            self.nopass = False
        else:
            self.passwords.pop(digest, None)

    def apply(self, token: str) -> None:
        if not token or self._flag(token):
            return
        head = token[0]
        if head in "><#!":
            self._password(token)
        elif head == "~" or (head == "%" and "~" in token):
            self.keys.append(token)
        elif head in "+-" and len(token) > 1:
            self.commands.append(token)
        elif head == "(" and token.endswith(")"):
            self.selectors.append(_selector(split_acl(token[1:-1])))
        # channels (&...) and anything unknown do not matter to the rules

    def build(self) -> AclUser:
        return AclUser(
            name=self.name,
            enabled=self.enabled,
            nopass=self.nopass,
            passwords=tuple(self.passwords.values()),
            root=AclSelector(tuple(self.keys), tuple(self.commands)),
            selectors=tuple(self.selectors),
        )


def _selector(tokens: Iterable[str]) -> AclSelector:
    keys: list[str] = []
    commands: list[str] = ["-@all"]
    for t in tokens:
        if t.lower() == "allkeys":
            keys.append("~*")
        elif t.lower() in {"allcommands", "nocommands"}:
            commands.append("+@all" if t.lower() == "allcommands" else "-@all")
        elif t[:1] == "~" or (t[:1] == "%" and "~" in t):
            keys.append(t)
        elif t[:1] in "+-" and len(t) > 1:
            commands.append(t)
    return AclSelector(tuple(keys), tuple(commands))


def split_acl(text: str) -> list[str]:
    """Split ACL rules, keeping a ``(selector with spaces)`` as one token."""
    try:
        raw = confparse.split_args(text)
    except confparse.ConfSyntaxError:
        raw = text.split()
    tokens: list[str] = []
    open_selector: list[str] | None = None
    for t in raw:
        if open_selector is not None:
            open_selector.append(t)
            if t.endswith(")"):
                tokens.append(" ".join(open_selector))
                open_selector = None
        elif t.startswith("(") and not t.endswith(")"):
            open_selector = [t]
        else:
            tokens.append(t)
    if open_selector is not None:
        tokens.append(" ".join(open_selector) + ")")
    return tokens


@dataclass(frozen=True)
class AclUser:
    """One ACL user as the rules see it."""

    name: str
    enabled: bool
    nopass: bool
    passwords: tuple[Password, ...] = ()
    root: AclSelector = AclSelector()
    selectors: tuple[AclSelector, ...] = ()

    @classmethod
    def parse(cls, rule: str) -> AclUser:
        """``user NAME rule ...`` (an aclfile line, a redis.conf ``user`` line, ACL LIST)."""
        tokens = split_acl(rule)
        if len(tokens) < 2 or tokens[0].lower() != "user":
            raise UsageError(f"not an ACL user rule: {mask_acl(rule)[:80]!r}")
        return cls.from_rules(tokens[1], tokens[2:])

    @classmethod
    def from_rules(cls, name: str, rules: Iterable[str]) -> AclUser:
        builder = _UserBuilder(name)
        for token in rules:
            builder.apply(token)
        return builder.build()

    def with_requirepass(self, password: str) -> AclUser:
        """This user after ``requirepass`` (an empty one means nopass)."""
        if not password:
            return dataclasses.replace(self, nopass=True, passwords=())
        pw = Password(False, len(password), password.lower() in _COMMON_PASSWORDS)
        return dataclasses.replace(self, nopass=False, passwords=(pw,))

    @property
    def all_selectors(self) -> tuple[AclSelector, ...]:
        return (self.root, *self.selectors)

    def can_run(self, command: str) -> bool:
        """Whether any selector lets this user run ``command`` (see AclSelector.can_run)."""
        return any(s.can_run(command) for s in self.all_selectors)

    @property
    def all_access(self) -> bool:
        """Every command on every key (``+@all ~*``) in one selector."""
        return any(s.all_commands and s.all_keys for s in self.all_selectors)

    @property
    def open_to_anyone(self) -> bool:
        """Enabled and nopass: any client can act as this user."""
        return self.enabled and self.nopass


IMPLICIT_DEFAULT = "user default on nopass ~* &* +@all"
"""The ``default`` user Redis creates when no rule mentions it."""


def mask_acl(text: str) -> str:
    """ACL rule text with every plaintext password (``>pw`` / ``<pw``) replaced by ``***``."""
    return " ".join(t[0] + "***" if t[:1] in "><" and len(t) > 1 else t for t in text.split())


# --- facts -----------------------------------------------------------------------------


@dataclass
class Facts:
    """Everything the rules look at; built from a file or a live server. Holds no secret."""

    source: str  # "conf" or "live"
    where: str  # file path or masked URL
    config: dict[str, list[str]] = field(default_factory=dict)
    users: list[AclUser] = field(default_factory=list)
    version: ServerVersion | None = None
    file_modes: dict[str, int | None] = field(default_factory=dict)
    file_paths: dict[str, str] = field(default_factory=dict)
    """Where a file named by a directive was found (for a fix that works from anywhere)."""
    info: dict[str, Any] | None = None
    process_uid: int | None = None
    skipped_includes: list[str] = field(default_factory=list)
    """``include`` lines of a conf that could not be read (the audit did not see them)."""

    def get(self, name: str, default: str | None = None) -> str | None:
        """The last value of directive ``name`` (single-valued directives: last one wins)."""
        values = self.config.get(name)
        return values[-1] if values else default

    def user(self, name: str) -> AclUser | None:
        return next((u for u in self.users if u.name == name), None)

    def enabled_users(self, *, admins: bool = True) -> list[AclUser]:
        return [u for u in self.users if u.enabled and (admins or u.name not in ADMIN_USERS)]

    @property
    def tls_on(self) -> bool:
        return (self.get("tls-port") or "0").strip() not in {"", "0"}

    @property
    def tcp_on(self) -> bool:
        return (self.get("port") or "6379").strip() != "0"

    @property
    def auth_required(self) -> bool:
        """A client must authenticate: the default user is off or needs a password."""
        default = self.user("default")
        return default is None or not default.enabled or not default.nopass

    def debug_switch(self, directive: str) -> str | None:
        """enable-debug-command / enable-module-command as in force, None where unknown
        (a 6.2 server has neither: only the ACL limits DEBUG and MODULE there)."""
        value = self.get(directive)
        if value is not None:
            return value.lower()
        if self.version is not None and self.version.has_enable_debug_command:
            return "no"
        return None

    def disabled_commands(self) -> set[str]:
        """Commands nobody may run: renamed to "" or switched off by enable-*-command no."""
        out = set()
        for value in self.config.get("rename-command", []):
            old, _, new = value.partition(" ")
            if not new.strip():
                out.add(old.lower())
        for directive, command in (("enable-debug-command", "debug"),
                                   ("enable-module-command", "module")):  # fmt: skip
            if self.debug_switch(directive) == "no":
                out.add(command)
        return out


def _mask_value(name: str, args: Iterable[str]) -> str:
    value = " ".join(args)
    if name in _SECRET_DIRECTIVES:
        return "***" if value else ""
    if name == "user":
        return mask_acl(value)
    return value


def _mode(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return stat.S_IMODE(path.stat().st_mode) & 0o777
    except OSError:
        return None


def _resolve(base: Path | None, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    if path.is_absolute():
        return path
    return base / path if base is not None else None


def _resolve_conf_file(conf_dir: Path, value: str) -> Path:
    """A file a redis.conf names: a relative path is the server's working directory's (where
    it is started, usually where the audit runs) when it exists there, else the conf's
    directory's (how tk writes its confs)."""
    path = Path(value)
    if path.is_absolute():
        return path
    here = Path.cwd() / path
    return here if here.exists() else conf_dir / path


def _aclfile_users(path: Path) -> list[AclUser]:
    text = confparse.read_text(path)
    users: list[AclUser] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            users.append(AclUser.parse(line))
        except UsageError:
            raise UsageError(
                f"{path}:{number}: not an ACL user line", fix="each line must be `user NAME ...`"
            ) from None
    return users


def _conf_users(directives: list[confparse.Directive], conf_dir: Path) -> list[AclUser]:
    """Users as the server would have them after loading this conf."""
    aclfile = next((d.value for d in reversed(directives) if d.name == "aclfile"), "")
    if aclfile:
        users = _aclfile_users(_resolve_conf_file(conf_dir, aclfile))
    else:
        users = [AclUser.from_rules(d.args[0], d.args[1:]) for d in directives
                 if d.name == "user" and d.args]  # fmt: skip
    by_name = {u.name: u for u in users}
    if "default" not in by_name:
        default = AclUser.parse(IMPLICIT_DEFAULT)
        requirepass = [d.value for d in directives if d.name == "requirepass"]
        if requirepass:
            default = default.with_requirepass(requirepass[-1])
        by_name = {"default": default, **by_name}
    return list(by_name.values())


def facts_from_conf(path: Path) -> Facts:
    """Facts from a redis.conf, its includes and its aclfile.

    Raises UsageError with a one-line message when the conf or its aclfile cannot be read.
    """
    path = Path(path)
    text = confparse.read_text(path)
    skipped: list[str] = []
    directives = confparse.load(path, skipped=skipped)
    config: dict[str, list[str]] = {}
    for d in directives:
        config.setdefault(d.name, []).append(_mask_value(d.name, d.args))
    target = rendered_for(text)
    version = None
    if target:
        flavor, _, number = target.partition(" ")
        version = parse_version_string(flavor, number)
    conf_dir = path.parent
    data_dir = _resolve(conf_dir, config.get("dir", [""])[-1])
    facts = Facts(
        source="conf",
        where=str(path),
        config=config,
        users=_conf_users(directives, conf_dir),
        version=version,
        skipped_includes=skipped,
    )
    aclfile = facts.get("aclfile")
    acl_path = _resolve_conf_file(conf_dir, aclfile) if aclfile else None
    if acl_path is not None:
        facts.file_paths["aclfile"] = str(acl_path)
    facts.file_modes = {
        "conf": _mode(path),
        "aclfile": _mode(acl_path),
        "dir": _mode(data_dir),
        "unixsocket": _mode(_resolve(data_dir or conf_dir, facts.get("unixsocket"))),
    }
    return facts


def _fetch(client: redis.Redis, where: str) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    import redis as redis_py

    try:
        config = client.config_get("*")
        acl_lines = client.acl_list()
        info = client.info("all")
    except redis_py.exceptions.NoPermissionError:
        raise RedisError(
            f"{where}: this user may not run CONFIG GET / ACL LIST",
            fix="audit a live server as the admin user (--url redis://admin@HOST:PORT)",
        ) from None
    except redis_py.exceptions.AuthenticationError as exc:
        raise RedisError(
            f"{where}: authentication failed ({str(exc).splitlines()[0]})",
            fix="check the user and password in the URL (or TK_REDIS_PASSWORD)",
        ) from None
    except (redis_py.exceptions.ConnectionError, redis_py.exceptions.TimeoutError) as exc:
        from toolkit.redis.connect import describe_connection_error

        raise describe_connection_error(exc, where) from None
    except redis_py.exceptions.ResponseError as exc:
        text = str(exc).splitlines()[0]
        fix = "audit a live server as the admin user"
        if "unknown command" in text.lower():
            fix = (
                "CONFIG or ACL is renamed or disabled (rename-command): audit the file with --conf"
            )
        raise RedisError(
            f"{where}: the server refused the audit's queries ({text})", fix=fix
        ) from None
    return {str(k): v for k, v in config.items()}, [str(x) for x in acl_lines], dict(info)


def _live_version(info: dict[str, Any]) -> ServerVersion | None:
    if str(info.get("server_name", "")).lower() == "valkey" and info.get("valkey_version"):
        return parse_version_string("valkey", str(info["valkey_version"]))
    if info.get("redis_version"):
        return parse_version_string("redis", str(info["redis_version"]))
    return None


def _local_process(client: redis.Redis, info: dict[str, Any]) -> psutil.Process | None:
    """The server's process when it runs on this machine (and is visible), else None."""
    import psutil

    kwargs = client.connection_pool.connection_kwargs
    if not kwargs.get("path") and str(kwargs.get("host", "")) not in _LOCAL_HOSTS:
        return None
    try:
        proc = psutil.Process(int(info.get("process_id") or 0))
        name = proc.name().lower()
    except (psutil.Error, ValueError):
        return None
    return proc if ("redis" in name or "valkey" in name) else None


def _add_process_facts(facts: Facts, proc: psutil.Process) -> None:
    import psutil

    try:
        facts.process_uid = proc.uids().real
        cwd: Path | None = Path(proc.cwd())
    except psutil.Error:
        cwd = None
    conf_file = str((facts.info or {}).get("config_file") or "")
    conf_path = _resolve(cwd, conf_file)
    data_dir = _resolve(cwd, facts.get("dir"))
    facts.file_modes = {
        "conf": _mode(conf_path),
        "aclfile": _mode(_resolve(cwd, facts.get("aclfile"))),
        "dir": _mode(data_dir),
        "unixsocket": _mode(_resolve(data_dir or cwd, facts.get("unixsocket"))),
    }
    if conf_path is not None:
        try:
            directives = confparse.load(conf_path)
        except UsageError:
            return
        facts.config["rename-command"] = [d.value for d in directives
                                          if d.name == "rename-command"]  # fmt: skip


def facts_from_server(client: redis.Redis, where: str) -> Facts:
    """Facts from a live server (``client`` with decode_responses=True, best as admin).

    Raises RedisError naming the fix when CONFIG GET / ACL LIST are refused.
    """
    raw_config, acl_lines, info = _fetch(client, where)
    config = {str(k).lower(): [_mask_value(str(k).lower(), [str(v)])]
              for k, v in raw_config.items()}  # fmt: skip
    users: list[AclUser] = []
    for line in acl_lines:
        try:
            users.append(AclUser.parse(line))
        except UsageError:
            continue
    facts = Facts(
        source="live",
        where=where,
        config=config,
        users=users,
        version=_live_version(info),
        file_modes={"conf": None, "aclfile": None, "dir": None, "unixsocket": None},
        info=info,
    )
    proc = _local_process(client, info)
    if proc is not None:
        _add_process_facts(facts, proc)
    return facts


# --- findings and rules ----------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    id: str
    title: str
    severity: str  # "high" | "medium" | "low"
    status: Status
    found: str  # never a password
    fix: str  # empty when ok

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: str
    check: Callable[[Facts], Verdict]

    def run(self, facts: Facts) -> Finding:
        try:
            status, found, fix = self.check(facts)
        except (ValueError, TkError) as exc:
            status, found, fix = "warn", f"cannot judge: {exc}", "check this setting by hand"
        if status in {"ok", "skip"}:
            fix = ""
        return Finding(self.id, self.title, self.severity, status, found, fix)


RULES: list[Rule] = []


def _rule(rule_id: str, title: str, severity: str) -> Callable[
    [Callable[[Facts], Verdict]], Callable[[Facts], Verdict]
]:  # fmt: skip
    def register(check: Callable[[Facts], Verdict]) -> Callable[[Facts], Verdict]:
        RULES.append(Rule(rule_id, title, severity, check))
        return check

    return register


def run_rules(facts: Facts) -> list[Finding]:
    """One Finding per rule, in RULES order. Pure."""
    return [rule.run(facts) for rule in RULES]


def exit_code(findings: list[Finding]) -> int:
    return 1 if any(f.status == "fail" for f in findings) else 0


def _names(items: Iterable[str], limit: int = 6) -> str:
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


# network ---------------------------------------------------------------------------------


def _is_loopback(addr: str) -> bool:
    addr = addr.lstrip("-")
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _is_wildcard(addr: str) -> bool:
    return addr.lstrip("-") in {"*", "0.0.0.0", "::", "::*"}


@_rule("bind-loopback", "listens on loopback addresses only", "high")
def _bind(f: Facts) -> Verdict:
    if not f.tcp_on and not f.tls_on:
        return "ok", "no TCP port (port 0)", ""
    value = (f.get("bind") or "").strip()
    addrs = value.split()
    if addrs and all(_is_loopback(a) for a in addrs):
        return "ok", f"bind {value}", ""
    found = f"bind {value}" if addrs else "no bind: all interfaces"
    fix = f"bind {BIND_LOOPBACK}; serve other hosts only over TLS with ACL passwords"
    wide = not addrs or any(_is_wildcard(a) for a in addrs)
    if f.auth_required and (f.tls_on or not wide):
        return "warn", found + " (reachable from the network)", fix
    return "fail", found, fix


@_rule("protected-mode", "protected mode on", "high")
def _protected_mode(f: Facts) -> Verdict:
    value = (f.get("protected-mode") or "yes").lower()
    if value == "yes":
        return "ok", "protected-mode yes", ""
    status: Status = "warn" if f.auth_required else "fail"
    return status, f"protected-mode {value}", "protected-mode yes"


@_rule("tls-protocols", "TLS allows only TLSv1.2 / TLSv1.3", "medium")
def _tls_protocols(f: Facts) -> Verdict:
    if not f.tls_on:
        return "skip", "TLS off (no tls-port)", ""
    value = f.get("tls-protocols") or "TLSv1.2 TLSv1.3"
    bad = [p for p in value.split() if p.lower() not in _SAFE_TLS]
    if not bad:
        return "ok", f"tls-protocols {value}", ""
    return "fail", f"tls-protocols {value}", 'tls-protocols "TLSv1.2 TLSv1.3"'


@_rule("tcp-keepalive", "TCP keepalive on", "low")
def _tcp_keepalive(f: Facts) -> Verdict:
    value = int(f.get("tcp-keepalive") or "300")
    if value > 0:
        return "ok", f"tcp-keepalive {value}", ""
    return "warn", "tcp-keepalive 0 (dead peers are never noticed)", "tcp-keepalive 60"


@_rule("unixsocket-perm", "unix socket not open to others", "high")
def _unixsocket(f: Facts) -> Verdict:
    sock = f.get("unixsocket")
    if not sock:
        return "ok", "no unix socket", ""
    fix = "unixsocketperm 700 (or 770 for a trusted group)"
    perm = int(f.get("unixsocketperm") or "0", 8)
    if perm == 0:
        mode = f.file_modes.get("unixsocket")
        if mode is not None and mode & 0o002:
            return "fail", f"socket mode {mode:04o} (others can connect)", fix
        return "warn", "unixsocketperm not set: the umask decides who may connect", fix
    if perm & 0o007:
        return "fail", f"unixsocketperm {perm:o} (others can connect)", fix
    return "ok", f"unixsocketperm {perm:o}", ""


# access control ---------------------------------------------------------------------------

_HARDEN_FIX = (
    "or let `tk redis harden` write it (default user off, one least-privilege user per role)"
)


@_rule("auth-required", "every enabled user needs a password", "high")
def _auth_required(f: Facts) -> Verdict:
    open_users = [u.name for u in f.users if u.open_to_anyone]
    if not open_users:
        return "ok", "no enabled user is nopass", ""
    return (
        "fail",
        f"nopass: {_names(open_users)}",
        ("give each user a password (#<sha256> in the aclfile) or turn it off; " + _HARDEN_FIX),
    )


@_rule("default-user", "default user off (or needs a password and has no admin rights)", "high")
def _default_user(f: Facts) -> Verdict:
    u = f.user("default")
    if u is None or not u.enabled:
        return "ok", "default user off", ""
    fix = "user default off; " + _HARDEN_FIX
    disabled = f.disabled_commands()
    admin_cmds = [c for c in ADMIN_ONLY_COMMANDS if c not in disabled and u.can_run(c)]
    if u.nopass:
        if not admin_cmds and not u.can_run("get") and not u.can_run("set"):
            return "ok", "default user on, nopass, no commands", ""
        return "fail", "default user on, nopass: anyone who connects gets its rights", fix
    if admin_cmds:
        return (
            "warn",
            f"default user on with a password and admin rights ({_names(admin_cmds, 3)})",
            fix,
        )
    return "ok", "default user on, password required, no admin commands", ""


@_rule("password-strength", "passwords long and not well-known", "high")
def _password_strength(f: Facts) -> Verdict:
    by_desc: dict[str, list[str]] = {}
    worst: Status = "ok"
    rank = {"ok": 0, "warn": 1, "fail": 2}
    for u in f.enabled_users():
        for pw in u.passwords:
            by_desc.setdefault(pw.describe(), []).append(u.name)
            verdict = pw.verdict()
            if rank[verdict] > rank[worst]:
                worst = verdict
    if not by_desc:
        return "skip", "no enabled user has a password", ""
    found = "; ".join(f"{_names(sorted(set(names)))}: {d}" for d, names in by_desc.items())
    fix = (
        f"use random passwords of {PASSWORD_OK_FROM}+ characters (`tk redis harden --rotate` "
        "generates them)"
    )
    return worst, found, fix


@_rule("plaintext-passwords", "no plaintext passwords in config files", "low")
def _plaintext(f: Facts) -> Verdict:
    where = [name for name in ("requirepass", "masterauth") if f.get(name)]
    plain = [u.name for u in f.users if any(not p.hashed for p in u.passwords)]
    if plain:
        where.append(f">password for {_names(plain)}")
    if not where and not any(u.passwords for u in f.users):
        return "skip", "no passwords set at all (see default-user and the users' rules)", ""
    if not where:
        return "ok", "passwords stored as sha256 hashes", ""
    return (
        "warn",
        f"plaintext: {', '.join(where)}",
        ("store passwords as #<sha256> in an aclfile and drop requirepass; " + _HARDEN_FIX),
    )


@_rule("app-user-all-access", "no non-admin user with +@all ~*", "high")
def _app_all_access(f: Facts) -> Verdict:
    bad = [u.name for u in f.enabled_users(admins=False) if u.all_access]
    if not bad:
        return "ok", "no non-admin user has every command on every key", ""
    return (
        "fail",
        f"+@all ~*: {_names(bad)}",
        (
            "give application users only the commands and keys they use (-@all +cmd ~tk:*); "
            + _HARDEN_FIX
        ),
    )


@_rule("dangerous-commands", "admin commands (CONFIG, FLUSHALL, ...) for admin only", "high")
def _dangerous(f: Facts) -> Verdict:
    disabled = f.disabled_commands()
    hits: list[str] = []
    for u in f.enabled_users(admins=False):
        cmds = [c for c in ADMIN_ONLY_COMMANDS if c not in disabled and u.can_run(c)]
        if cmds:
            hits.append(f"{u.name}: {_names(cmds, 4)}")
    if not hits:
        return "ok", "no non-admin user can run CONFIG, DEBUG, FLUSHALL, KEYS, ...", ""
    return (
        "fail",
        "; ".join(hits),
        (
            "remove admin commands from application users (-@all then +only-what-they-use); "
            + _HARDEN_FIX
        ),
    )


def _debug_like(f: Facts, directive: str, command: str) -> Verdict:
    value = f.debug_switch(directive)
    if value == "no":
        return "ok", f"{directive} no", ""
    if value == "local":
        return "warn", f"{directive} local (any local client may run it)", f"{directive} no"
    if value is not None:
        return "fail", f"{directive} {value}", f"{directive} no"
    users = [u.name for u in f.enabled_users(admins=False) if u.can_run(command)]
    if command in f.disabled_commands() or not users:
        return "ok", f"{command.upper()} not granted to non-admin users", ""
    found = f"{command.upper()} allowed by ACL for {_names(users)}"
    fix = f"deny +{command} / +@admin to non-admin users; on Redis 7.0+ also {directive} no"
    if f.version is None:
        return "warn", found + f" (on 7.0+ {directive} defaults to no)", fix
    return "fail", found + f" ({f.version} has no {directive})", fix


@_rule("debug-command", "DEBUG command off", "medium")
def _debug_command(f: Facts) -> Verdict:
    return _debug_like(f, "enable-debug-command", "debug")


@_rule("module-command", "MODULE command off", "medium")
def _module_command(f: Facts) -> Verdict:
    return _debug_like(f, "enable-module-command", "module")


@_rule("rename-command", "no rename-command (deprecated: use ACL)", "low")
def _rename(f: Facts) -> Verdict:
    if f.source == "live" and "rename-command" not in f.config:
        return "skip", "config file not readable from here", ""
    values = f.config.get("rename-command", [])
    if not values:
        return "ok", "no rename-command", ""
    shown = []
    for v in values:
        old, _, new = v.partition(" ")
        shown.append(f"{old.upper()} ({'disabled' if not new.strip() else 'renamed'})")
    return (
        "warn",
        f"rename-command: {_names(shown)}",
        ("remove rename-command and deny the commands with ACL rules instead"),
    )


# persistence and memory -------------------------------------------------------------------


@_rule("appendonly", "append-only file on", "high")
def _appendonly(f: Facts) -> Verdict:
    value = (f.get("appendonly") or "no").lower()
    if value == "yes":
        return "ok", "appendonly yes", ""
    return (
        "fail",
        f"appendonly {value}: queued tasks are lost on a crash",
        ("appendonly yes (live: CONFIG SET appendonly yes, then CONFIG REWRITE)"),
    )


@_rule("appendfsync", "AOF fsync everysec or always", "medium")
def _appendfsync(f: Facts) -> Verdict:
    value = (f.get("appendfsync") or "everysec").lower()
    if value in {"everysec", "always"}:
        return "ok", f"appendfsync {value}", ""
    return (
        "warn",
        f"appendfsync {value} (the OS decides when data reaches disk)",
        ("appendfsync everysec (or always with `tk redis harden --durable`)"),
    )


@_rule("no-appendfsync-on-rewrite", "fsync continues during AOF rewrites", "low")
def _no_fsync_on_rewrite(f: Facts) -> Verdict:
    value = (f.get("no-appendfsync-on-rewrite") or "no").lower()
    if value == "no":
        return "ok", "no-appendfsync-on-rewrite no", ""
    return (
        "warn",
        f"no-appendfsync-on-rewrite {value} (writes during a rewrite may be lost)",
        ("no-appendfsync-on-rewrite no"),
    )


@_rule("aof-use-rdb-preamble", "AOF with RDB preamble (fast restarts)", "low")
def _rdb_preamble(f: Facts) -> Verdict:
    value = (f.get("aof-use-rdb-preamble") or "yes").lower()
    if value == "yes":
        return "ok", "aof-use-rdb-preamble yes", ""
    return "warn", f"aof-use-rdb-preamble {value}", "aof-use-rdb-preamble yes"


@_rule("maxmemory", "memory limit set", "high")
def _maxmemory(f: Facts) -> Verdict:
    value = f.get("maxmemory") or "0"
    size = parse_size(value, "maxmemory")
    if size > 0:
        return "ok", f"maxmemory {human_size(size)}", ""
    return (
        "fail",
        "maxmemory 0: no limit, the host can run out of memory",
        ("maxmemory about a quarter of RAM, e.g. maxmemory 2gb (`tk redis harden` sets it)"),
    )


@_rule("maxmemory-policy", "eviction policy noeviction (a queue must not be evicted)", "high")
def _policy(f: Facts) -> Verdict:
    value = (f.get("maxmemory-policy") or SAFE_POLICY).lower()
    if value == SAFE_POLICY:
        return "ok", f"maxmemory-policy {value}", ""
    return "fail", EVICTION_WARNING.format(policy=value), f"maxmemory-policy {SAFE_POLICY}"


@_rule("evicted-keys", "no key evicted since start", "high")
def _evicted(f: Facts) -> Verdict:
    if f.info is None:
        return "skip", "live servers only", ""
    n = int(f.info.get("evicted_keys") or 0)
    if n == 0:
        return "ok", "evicted_keys 0", ""
    return (
        "fail",
        f"evicted_keys {n}: tasks or results may have been dropped",
        (f"maxmemory-policy {SAFE_POLICY} and a larger maxmemory; check for lost tasks"),
    )


# files and process ---------------------------------------------------------------------------


def _file_mode(mode: int | None, what: str, secrets: bool, path: str | None) -> Verdict:
    if mode is None:
        return "skip", f"{what} mode unknown (not local or not found)", ""
    fix = f"chmod 600 {path or what}"
    shown = f"{mode:04o}"
    if mode & 0o022:
        return "fail", f"{shown}: writable by group/others", fix
    if mode & 0o044:
        status: Status = "fail" if secrets else "warn"
        return (
            status,
            f"{shown}: readable by group/others" + (" and holds passwords" if secrets else ""),
            fix,
        )
    return "ok", shown, ""


def _conf_holds_secrets(f: Facts) -> bool:
    if f.get("requirepass") or f.get("masterauth"):
        return True
    return any(t[:1] in ">#" for v in f.config.get("user", []) for t in v.split())


@_rule("conf-includes", "every included file read", "medium")
def _includes(f: Facts) -> Verdict:
    if f.source != "conf":
        return "skip", "a live server reports its settings itself", ""
    if not f.skipped_includes:
        return "ok", "none skipped", ""
    return (
        "fail",
        _names(f.skipped_includes, limit=2),
        "fix or remove the include: Redis refuses to start on a missing one, and this audit "
        "could not check what it sets",
    )


@_rule("conf-file-mode", "redis.conf not open to group/others", "high")
def _conf_mode(f: Facts) -> Verdict:
    path = f.where if f.source == "conf" else str((f.info or {}).get("config_file") or "")
    return _file_mode(f.file_modes.get("conf"), "redis.conf", _conf_holds_secrets(f), path)


@_rule("acl-file-mode", "ACL file not open to group/others", "high")
def _acl_mode(f: Facts) -> Verdict:
    aclfile = f.get("aclfile")
    if not aclfile:
        return "skip", "no aclfile", ""
    path = f.file_paths.get("aclfile", aclfile)
    return _file_mode(f.file_modes.get("aclfile"), "aclfile", bool(f.users), path)


@_rule("data-dir-mode", "data directory closed to others", "medium")
def _dir_mode(f: Facts) -> Verdict:
    mode = f.file_modes.get("dir")
    if mode is None:
        return "skip", "data dir mode unknown (not local or not found)", ""
    if mode & 0o007:
        return (
            "warn",
            f"{mode:04o}: others can enter the data dir (AOF/RDB hold every task)",
            (f"chmod 700 {f.get('dir') or 'the data dir'}"),
        )
    return "ok", f"{mode:04o}", ""


@_rule("running-as-root", "server not running as root", "medium")
def _root(f: Facts) -> Verdict:
    if f.process_uid is None:
        return "skip", "process unknown (file audit or remote server)", ""
    if f.process_uid == 0:
        return (
            "warn",
            "running as root (uid 0)",
            ("run redis-server as an unprivileged user (systemd User=redis)"),
        )
    return "ok", f"uid {f.process_uid}", ""


@_rule("logfile", "logs kept somewhere", "low")
def _logfile(f: Facts) -> Verdict:
    logfile = f.get("logfile") or ""
    daemonize = (f.get("daemonize") or "no").lower()
    if logfile:
        return "ok", f"logfile {logfile}", ""
    if daemonize == "yes":
        return (
            "warn",
            "no logfile and daemonize yes: logs go to /dev/null",
            ("logfile /var/log/redis/redis-server.log (or daemonize no under a supervisor)"),
        )
    return "ok", "logs to stdout (daemonize no)", ""


@_rule("server-version", f"server {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer", "medium")
def _version(f: Facts) -> Verdict:
    if f.version is None:
        return "skip", "version unknown (no tk-rendered-for header)", ""
    if f.version.redis_compat < MIN_VERSION:
        return "fail", f"{f.version}: no ACL users", "upgrade to Redis 6.2+ or Valkey"
    return "ok", str(f.version), ""
