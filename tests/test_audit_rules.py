"""`tk redis audit` rules, judged on real-looking conf files; no server needed."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from toolkit.errors import UsageError
from toolkit.redis import confparse
from toolkit.redis.audit import (
    RULES,
    AclUser,
    Facts,
    Finding,
    exit_code,
    facts_from_conf,
    run_rules,
)
from toolkit.redis.profile import HardenProfile, TlsFiles, render_acl, render_conf
from toolkit.redis.version import ServerVersion

VERSIONS = [
    ServerVersion("redis", 7, 0, 15),
    ServerVersion("redis", 6, 2, 14),
    ServerVersion("valkey", 8, 1, 8),
]
PASSWORDS = {
    "admin": "A" * 43,
    "tk-api": "B" * 43,
    "tk-worker": "C" * 43,
    "tk-monitor": "D" * 43,
}

STOCK = """\
# Redis configuration file example.
port 6379
tcp-backlog 511
timeout 0
tcp-keepalive 300
daemonize no
loglevel notice
logfile ""
databases 16
save 3600 1 300 100 60 10000
dbfilename dump.rdb
dir ./
appendonly no
appendfilename "appendonly.aof"
appendfsync everysec
"""


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def by_id(findings: list[Finding]) -> dict[str, Finding]:
    return {f.id: f for f in findings}


def audit_text(tmp_path: Path, text: str, mode: int = 0o600) -> dict[str, Finding]:
    return by_id(run_rules(facts_from_conf(write(tmp_path / "redis.conf", text, mode))))


def failed(findings: dict[str, Finding]) -> set[str]:
    return {i for i, f in findings.items() if f.status == "fail"}


def tk_conf(tmp_path: Path, version: ServerVersion, tls: TlsFiles | None = None) -> Path:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    profile = HardenProfile(
        port=6390,
        maxmemory=512 * 1024 * 1024,
        policy="noeviction",
        appendfsync="everysec",
        data_dir=data,
        logfile=tmp_path / "redis.log",
        pidfile=tmp_path / "redis.pid",
        aclfile=tmp_path / "users.acl",
        tls=tls,
    )
    write(tmp_path / "users.acl", render_acl(PASSWORDS, version))
    return write(tmp_path / "redis.conf", render_conf(profile, version))


# --- the rule set ------------------------------------------------------------------------


def test_at_least_twenty_rules_with_unique_kebab_ids() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) >= 20
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids)
    assert {r.severity for r in RULES} <= {"high", "medium", "low"}


def test_every_rule_reports_once_in_stable_order(tmp_path: Path) -> None:
    findings = run_rules(facts_from_conf(write(tmp_path / "redis.conf", STOCK)))
    assert [f.id for f in findings] == [r.id for r in RULES]
    assert set(findings[0].to_dict()) == {"id", "title", "severity", "status", "found", "fix"}


# --- the config tk writes passes ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=str)
def test_tk_hardened_conf_has_no_failures(tmp_path: Path, version: ServerVersion) -> None:
    findings = run_rules(facts_from_conf(tk_conf(tmp_path, version)))
    assert exit_code(findings) == 0, [f for f in findings if f.status == "fail"]
    got = by_id(findings)
    assert got["default-user"].status == "ok"
    assert got["password-strength"].status == "ok"
    assert "sha256 hash" in got["password-strength"].found
    assert got["dangerous-commands"].status == "ok"
    assert got["debug-command"].status == "ok"
    assert got["maxmemory"].found == "maxmemory 512.0 MiB"
    assert got["server-version"].found == str(version)
    for secret in PASSWORDS.values():
        assert all(secret not in v for f in findings for v in f.to_dict().values())


def test_tk_conf_with_tls_checks_protocols(tmp_path: Path) -> None:
    tls = TlsFiles(tmp_path / "cert.pem", tmp_path / "key.pem")
    got = by_id(run_rules(facts_from_conf(tk_conf(tmp_path, VERSIONS[0], tls))))
    assert got["tls-protocols"].status == "ok"
    assert got["tls-protocols"].found == "tls-protocols TLSv1.2 TLSv1.3"
    assert got["bind-loopback"].status == "ok"


def test_tls_1_0_fails(tmp_path: Path) -> None:
    got = audit_text(tmp_path, 'tls-port 6380\nport 0\ntls-protocols "TLSv1 TLSv1.2"\n')
    assert got["tls-protocols"].status == "fail"
    assert "TLSv1.2 TLSv1.3" in got["tls-protocols"].fix


# --- stock and unsafe configs fail, with named rules -------------------------------------


@pytest.mark.parametrize("bind", ["", "bind * -::*\n", "bind 0.0.0.0\n"])
def test_stock_conf_fails_named_rules(tmp_path: Path, bind: str) -> None:
    findings = run_rules(facts_from_conf(write(tmp_path / "redis.conf", bind + STOCK)))
    assert exit_code(findings) == 1
    got = by_id(findings)
    assert {"bind-loopback", "default-user", "auth-required", "appendonly", "maxmemory"} <= (
        failed(got)
    )
    assert "bind 127.0.0.1 -::1" in got["bind-loopback"].fix
    assert "nopass" in got["default-user"].found


def test_loopback_bind_in_stock_conf_is_ok(tmp_path: Path) -> None:
    got = audit_text(tmp_path, "bind 127.0.0.1 -::1\n" + STOCK)
    assert got["bind-loopback"].status == "ok"


def test_all_interfaces_with_tls_and_password_only_warns(tmp_path: Path) -> None:
    text = "bind 0.0.0.0\nport 0\ntls-port 6380\nrequirepass " + "x" * 40 + "\n"
    got = audit_text(tmp_path, text)
    assert got["bind-loopback"].status == "warn"


def test_allkeys_lru_fails_maxmemory_policy(tmp_path: Path) -> None:
    got = audit_text(tmp_path, "maxmemory 1gb\nmaxmemory-policy allkeys-lru\n")
    assert got["maxmemory-policy"].status == "fail"
    assert "evict" in got["maxmemory-policy"].found
    assert got["maxmemory-policy"].fix == "maxmemory-policy noeviction"
    assert got["maxmemory"].status == "ok"


def test_requirepass_in_world_readable_conf_fails_file_mode(tmp_path: Path) -> None:
    secret = "s3cret-" + "q" * 30
    got = audit_text(tmp_path, f"requirepass {secret}\n", mode=0o644)
    assert got["conf-file-mode"].status == "fail"
    assert got["conf-file-mode"].fix.startswith("chmod 600 ")
    assert got["plaintext-passwords"].status == "warn"
    assert all(secret not in v for f in got.values() for v in f.to_dict().values())


def test_world_readable_conf_without_secrets_only_warns(tmp_path: Path) -> None:
    got = audit_text(tmp_path, "port 6379\n", mode=0o644)
    assert got["conf-file-mode"].status == "warn"


def test_readable_aclfile_with_users_fails(tmp_path: Path) -> None:
    write(tmp_path / "users.acl", render_acl(PASSWORDS, VERSIONS[0]), mode=0o640)
    got = audit_text(tmp_path, "aclfile users.acl\n")
    assert got["acl-file-mode"].status == "fail"
    assert got["default-user"].status == "ok"


def test_aclfile_mode_fix_names_the_file_found(tmp_path: Path) -> None:
    write(tmp_path / "users.acl", render_acl(PASSWORDS, VERSIONS[0]), mode=0o640)
    got = audit_text(tmp_path, "aclfile users.acl\n")
    assert got["acl-file-mode"].fix == f"chmod 600 {tmp_path / 'users.acl'}"  # from anywhere


def test_no_passwords_at_all_is_not_called_hashed(tmp_path: Path) -> None:
    got = audit_text(tmp_path, "bind 0.0.0.0\nprotected-mode no\n")
    assert got["plaintext-passwords"].status == "skip"
    assert got["default-user"].status == "fail"


def test_app_user_with_all_rights_fails(tmp_path: Path) -> None:
    text = "user default off\nuser admin on >" + "a" * 40 + " ~* +@all\nuser app on >x ~* +@all\n"
    got = audit_text(tmp_path, text)
    assert got["app-user-all-access"].status == "fail"
    assert "app" in got["app-user-all-access"].found
    assert got["dangerous-commands"].status == "fail"
    assert got["dangerous-commands"].found.startswith("app: config")
    assert got["password-strength"].status == "fail"
    assert "plaintext, 1 chars" in got["password-strength"].found
    assert "admin" not in got["dangerous-commands"].found


def test_acl_selector_granting_everything_counts(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"x" * 40).hexdigest()
    acl = f"user default off\nuser svc on #{digest} ~tk:* -@all +get (~* +@all)\n"
    write(tmp_path / "users.acl", acl)
    got = audit_text(tmp_path, "aclfile users.acl\n")
    assert got["app-user-all-access"].status == "fail"
    assert got["app-user-all-access"].found == "+@all ~*: svc"


def test_aclfile_without_default_user_leaves_it_open(tmp_path: Path) -> None:
    write(tmp_path / "users.acl", "user admin on #" + "c" * 64 + " ~* +@all\n")
    got = audit_text(tmp_path, "aclfile users.acl\n")
    assert got["default-user"].status == "fail"  # Redis creates `default on nopass +@all`


def test_requirepass_only_setup(tmp_path: Path) -> None:
    got = audit_text(tmp_path, "requirepass foobared\n")
    assert got["auth-required"].status == "ok"
    assert got["password-strength"].status == "fail"
    assert got["password-strength"].found == "default: a well-known password"
    assert got["default-user"].status == "warn"


def test_short_and_medium_plaintext_passwords(tmp_path: Path) -> None:
    assert audit_text(tmp_path, "requirepass " + "k" * 12 + "\n")["password-strength"].status == (
        "fail"
    )
    assert audit_text(tmp_path, "requirepass " + "k" * 20 + "\n")["password-strength"].status == (
        "warn"
    )
    assert audit_text(tmp_path, "requirepass " + "k" * 32 + "\n")["password-strength"].status == (
        "ok"
    )


def test_rename_command_warns_and_disabled_command_is_not_dangerous(tmp_path: Path) -> None:
    text = 'rename-command FLUSHALL ""\nrename-command CONFIG hidden-name\n'
    got = audit_text(tmp_path, text)
    assert got["rename-command"].status == "warn"
    assert got["rename-command"].found == "rename-command: FLUSHALL (disabled), CONFIG (renamed)"
    assert "hidden-name" not in got["rename-command"].found
    assert "flushall" not in got["dangerous-commands"].found
    assert "config" in got["dangerous-commands"].found


@pytest.mark.parametrize(
    ("line", "status"),
    [("enable-debug-command no", "ok"), ("enable-debug-command local", "warn"),
     ("enable-debug-command yes", "fail")],
)  # fmt: skip
def test_enable_debug_command(tmp_path: Path, line: str, status: str) -> None:
    assert audit_text(tmp_path, line + "\n")["debug-command"].status == status


def test_debug_on_6_2_is_judged_by_acl(tmp_path: Path) -> None:
    header = "# tk-rendered-for: redis 6.2.14\n"
    acl = "user default off\nuser app on #" + "0" * 64 + " ~tk:* -@all +get +debug\n"
    got = audit_text(tmp_path, header + acl)
    assert got["debug-command"].status == "fail"
    assert "app" in got["debug-command"].found
    assert got["module-command"].status == "ok"


def test_aof_settings(tmp_path: Path) -> None:
    text = "appendonly yes\nappendfsync no\nno-appendfsync-on-rewrite yes\n"
    got = audit_text(tmp_path, text)
    assert got["appendonly"].status == "ok"
    assert got["appendfsync"].status == "warn"
    assert got["no-appendfsync-on-rewrite"].status == "warn"


def test_unixsocket_open_to_others_fails(tmp_path: Path) -> None:
    sock = "unixsocket /tmp/redis.sock\n"
    assert audit_text(tmp_path, sock + "unixsocketperm 777\n")["unixsocket-perm"].status == "fail"
    assert audit_text(tmp_path, sock + "unixsocketperm 700\n")["unixsocket-perm"].status == "ok"


def test_keepalive_and_logfile(tmp_path: Path) -> None:
    got = audit_text(tmp_path, 'tcp-keepalive 0\ndaemonize yes\nlogfile ""\n')
    assert got["tcp-keepalive"].status == "warn"
    assert got["logfile"].status == "warn"


# --- facts that only a live server has -----------------------------------------------------


def live(**kw: object) -> Facts:
    facts = Facts(source="live", where="redis://admin:***@127.0.0.1:6390/0")
    for k, v in kw.items():
        setattr(facts, k, v)
    return facts


def test_evicted_keys_fails_live_and_skips_for_files(tmp_path: Path) -> None:
    assert by_id(run_rules(live(info={"evicted_keys": 3})))["evicted-keys"].status == "fail"
    assert by_id(run_rules(live(info={"evicted_keys": 0})))["evicted-keys"].status == "ok"
    assert audit_text(tmp_path, STOCK)["evicted-keys"].status == "skip"


def test_running_as_root_is_a_warning_not_a_failure() -> None:
    assert by_id(run_rules(live(process_uid=0)))["running-as-root"].status == "warn"
    assert by_id(run_rules(live(process_uid=1000)))["running-as-root"].status == "ok"
    assert by_id(run_rules(live()))["running-as-root"].status == "skip"


def test_old_server_fails_version_rule() -> None:
    got = by_id(run_rules(live(version=ServerVersion("redis", 6, 0, 16))))
    assert got["server-version"].status == "fail"


# --- the ACL evaluator ---------------------------------------------------------------------


def user(rules: str) -> AclUser:
    return AclUser.parse("user u on " + rules)


def test_acl_allow_list_cannot_run_config() -> None:
    u = user("-@all +get")
    assert u.can_run("get")
    assert not u.can_run("config")
    assert not u.can_run("flushall")


def test_acl_all_minus_config() -> None:
    u = user("+@all -config")
    assert not u.can_run("config")
    assert u.can_run("flushall")
    assert u.all_access is False  # no keys


def test_acl_allcommands_nocommands_and_order() -> None:
    assert user("allcommands allkeys").all_access
    assert not user("allcommands nocommands").can_run("get")
    assert user("nocommands +@all").can_run("shutdown")


def test_acl_categories() -> None:
    u = user("+@all -@dangerous")
    assert not u.can_run("flushall")
    assert not u.can_run("keys")
    assert u.can_run("get")
    w = user("-@all +@write")
    assert w.can_run("flushdb")
    assert not w.can_run("keys")
    assert user("-@all +@keyspace").can_run("keys")
    assert not user("+@all -@admin").can_run("config")


def test_acl_subcommands() -> None:
    u = user("-@all +config|get")
    assert u.can_run("config")  # some of CONFIG is allowed
    assert u.can_run("config|get")
    assert not u.can_run("config|set")
    v = user("+@all -config|set")
    assert v.can_run("config|get")
    assert not v.can_run("config|set")


def test_acl_passwords_and_flags() -> None:
    u = AclUser.parse("user x off >one >two <one nopass resetpass #" + "a" * 64)
    assert not u.enabled
    assert not u.nopass
    assert [p.hashed for p in u.passwords] == [True]
    assert AclUser.parse("user y on nopass").open_to_anyone
    assert not AclUser.parse("user y on nopass reset").enabled


def test_acl_live_list_line_with_read_only_keys() -> None:
    line = "user tk-monitor on sanitize-payload #" + "b" * 64 + " resetchannels %R~tk:* -@all +info"
    u = AclUser.parse(line)
    assert u.enabled and u.can_run("info") and not u.can_run("config")
    assert u.root.keys == ("%R~tk:*",)
    assert not user("%R~* +@all").all_access  # reads everything, writes nothing


# --- parsing -------------------------------------------------------------------------------


def test_split_args_like_redis() -> None:
    assert confparse.split_args('rename-command FLUSHALL ""') == ["rename-command", "FLUSHALL", ""]
    assert confparse.split_args(r'x "a\x41\n" ' + r"'it\'s'") == ["x", "aA\n", "it's"]
    with pytest.raises(confparse.ConfSyntaxError):
        confparse.split_args('requirepass "unclosed')


def test_directives_case_insensitive_last_wins_and_includes(tmp_path: Path) -> None:
    write(tmp_path / "extra.conf", "maxmemory-policy allkeys-lru\n")
    text = "MAXMEMORY 1gb\nmaxmemory 2gb\ninclude extra.conf\nMaxMemory-Policy noeviction\n"
    facts = facts_from_conf(write(tmp_path / "redis.conf", text))
    assert facts.config["maxmemory"] == ["1gb", "2gb"]
    assert facts.get("maxmemory-policy") == "noeviction"
    facts2 = facts_from_conf(write(tmp_path / "redis.conf", "include extra.conf\n"))
    assert by_id(run_rules(facts2))["maxmemory-policy"].status == "fail"


def test_facts_hold_no_secret(tmp_path: Path) -> None:
    secret = "hunter2-" + "z" * 30
    facts = facts_from_conf(
        write(tmp_path / "redis.conf", f"requirepass {secret}\nuser bob on >{secret} ~x +get\n")
    )
    assert facts.config["requirepass"] == ["***"]
    assert secret not in repr(facts)


def test_missing_conf_or_aclfile_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        facts_from_conf(tmp_path / "nope.conf")
    with pytest.raises(UsageError, match=re.escape("users.acl")):
        facts_from_conf(write(tmp_path / "redis.conf", "aclfile users.acl\n"))
    with pytest.raises(UsageError, match=re.escape("redis.conf:1")):
        facts_from_conf(write(tmp_path / "redis.conf", 'requirepass "x\n'))


def test_an_include_the_audit_cannot_read_fails(tmp_path: Path) -> None:
    """Redis refuses to start on a missing include, and what it would set is unchecked: the
    audit says so instead of skipping it silently."""
    write(tmp_path / "extra.conf", "maxmemory-policy noeviction\n")
    text = "include extra.conf\ninclude /nowhere/missing.conf\ninclude conf.d/*.conf\n"
    conf = write(tmp_path / "redis.conf", text)
    found = by_id(run_rules(facts_from_conf(conf)))["conf-includes"]
    assert found.status == "fail" and "/nowhere/missing.conf: no such file" in found.found
    assert f"{conf}:2" in found.found and "extra.conf" not in found.found
    assert "Redis refuses to start" in found.fix
    clean = write(tmp_path / "redis.conf", "include extra.conf\n")
    assert by_id(run_rules(facts_from_conf(clean)))["conf-includes"].status == "ok"
