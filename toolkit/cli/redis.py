"""``tk redis``: write, check and run a hardened Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from toolkit.cli._common import fail, handle_errors, print_json, print_status_table, warn
from toolkit.cli.state import settings
from toolkit.errors import UsageError

app = typer.Typer(help="Write, audit and run a hardened Redis.", no_args_is_help=True)

# Optional[...] rather than X | None: typer needs it on Python 3.10.
OptPath = Optional[Path]  # noqa: UP045
OptStr = Optional[str]  # noqa: UP045
OptInt = Optional[int]  # noqa: UP045
OptBool = Optional[bool]  # noqa: UP045

ServerOpt = Annotated[
    OptPath,
    typer.Option("--server", help="redis-server/valkey-server binary. \\[env: TK_REDIS_SERVER]"),
]


@app.command("harden")
@handle_errors
def harden_cmd(
    port: Annotated[OptInt, typer.Option(help="Port to listen on. \\[default: 6379]")] = None,
    maxmemory: Annotated[
        OptStr,
        typer.Option(help="Memory limit, e.g. 2gb or 512mb. \\[default: a quarter of RAM]"),
    ] = None,
    policy: Annotated[
        OptStr,
        typer.Option("--maxmemory-policy", help="Eviction policy. \\[default: noeviction]"),
    ] = None,
    durable: Annotated[
        OptBool,
        typer.Option(
            "--durable/--no-durable",
            help="appendfsync always (every write hits disk) / everysec. \\[default: everysec]",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Accept an evicting maxmemory-policy, or --bind beyond loopback without TLS.",
        ),
    ] = False,
    rotate: Annotated[bool, typer.Option("--rotate", help="Generate new passwords.")] = False,
    bind: Annotated[
        OptStr,
        typer.Option(
            help="Addresses to listen on, e.g. '127.0.0.1 -::1 10.0.0.5' (beyond loopback: "
            "needs TLS or --force). \\[default: 127.0.0.1 -::1]"
        ),
    ] = None,
    tls_cert: Annotated[OptPath, typer.Option("--tls-cert", help="TLS certificate.")] = None,
    tls_key: Annotated[OptPath, typer.Option("--tls-key", help="TLS private key.")] = None,
    tls_ca: Annotated[
        OptPath,
        typer.Option(
            "--tls-ca",
            help="CA certificate that signed --tls-cert: tk's clients verify the server with "
            "it, and the server client certs. A self-signed cert is its own CA.",
        ),
    ] = None,
    no_tls: Annotated[
        bool, typer.Option("--no-tls", help="Drop the TLS settings of an earlier run.")
    ] = False,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Print the generated passwords.")
    ] = False,
    server: ServerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Write redis-conf/redis.conf and users.acl: loopback only, AOF on, noeviction, ACL users.

    Passwords are generated once (256 bits) and kept on re-runs unless --rotate; they are
    stored in redis-conf/credentials.json (mode 0600, git-ignored) and never printed unless
    asked. Re-running also keeps the port, --durable, --maxmemory(-policy), TLS and --bind
    unless given again. A running server loads new passwords at once; other changes need
    `tk redis stop && tk redis start`.
    """
    from toolkit.redis.harden import harden
    from toolkit.redis.profile import check_port, check_tls

    if port is not None:
        check_port(port)
    if no_tls and (tls_cert or tls_key or tls_ca):
        raise UsageError("--no-tls contradicts --tls-cert/--tls-key/--tls-ca", fix="give one")
    s = settings(
        redis_port=port,
        redis_maxmemory=maxmemory,
        redis_policy=policy,
        redis_durable=durable,
        redis_server=server,
    )
    tls = check_tls(tls_cert, tls_key, tls_ca)
    result = harden(s, tls=tls, force=force, rotate=rotate, bind=bind, no_tls=no_tls)
    for w in result.warnings:
        warn(w)
    out: dict[str, Any] = {
        "conf": str(result.conf),
        "aclfile": str(result.aclfile),
        "credentials": str(result.credentials),
        "server": result.server,
        "users": result.users,
        "passwords": "rotated" if result.rotated else ("kept" if result.kept_passwords else "new"),
        "live": result.live,
        "kept": result.kept,
        "notes": result.notes,
        "warnings": result.warnings,
    }
    if show_secrets:
        from toolkit.redis import credentials

        creds = credentials.load(s.redis_conf_dir)
        out["secrets"] = creds.passwords if creds else {}
    if as_json:
        print_json(out)
        return
    typer.echo(f"wrote {result.conf}\nwrote {result.aclfile}\nwrote {result.credentials}")
    typer.echo(f"for {result.server}; users: {', '.join(result.users)} ({out['passwords']} "
               "passwords)")  # fmt: skip
    if result.kept:
        typer.echo(f"kept from the earlier run: {', '.join(result.kept)}")
    if result.live:
        typer.echo(result.live)
    for note in result.notes:
        typer.echo(note)
    if show_secrets:
        for user, pw in out["secrets"].items():
            typer.echo(f"  {user}: {pw}")
    if not result.notes and not any("restart" in w for w in result.warnings):
        typer.echo(_next_step(s))


def _next_step(s: Any) -> str:
    """What to run after harden: start the server, or (it runs already) audit it."""
    from toolkit.redis.server import ServerPaths, read_pid

    if read_pid(ServerPaths.from_settings(s).pidfile) is None:
        return "next: tk redis start   (then: tk redis audit)"
    return "the server is running with these files: check it with tk redis audit"


@app.command("audit")
@handle_errors
def audit_cmd(
    conf: Annotated[OptPath, typer.Option("--conf", help="Audit this redis.conf file.")] = None,
    url: Annotated[
        OptStr,
        typer.Option(
            "--url",
            help="Audit a live server, e.g. redis://admin@127.0.0.1:6379 (password from "
            "credentials.json or TK_REDIS_PASSWORD). With neither option: the managed server.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check a redis.conf or a live server against the hardening rules. Exit 1 on any failure."""
    from toolkit.redis import audit, connect
    from toolkit.redis.urls import mask_url

    if conf is not None and url is not None:
        raise UsageError("give --conf or --url, not both", fix="run `tk redis audit` once for each")
    s = settings()
    if conf is None and url is None and s.redis_url is None:
        conf = _managed_conf_if_stopped(s)
    if conf is not None:
        facts = audit.facts_from_conf(conf)
    else:
        if url and urlsplit_password(url):
            warn("a password on the command line shows up in `ps`; use TK_REDIS_PASSWORD")
        full = connect.resolve_url(s, "admin", url)
        try:
            client = connect.client(s, "admin", url=url)
            client.ping()
        except Exception as exc:
            if isinstance(exc, UsageError):
                raise
            raise connect.describe_connection_error(exc, full) from None
        with client:
            facts = audit.facts_from_server(client, mask_url(full))
    findings = audit.run_rules(facts)
    code = audit.exit_code(findings)
    if as_json:
        print_json({"target": facts.where, "source": facts.source,
                    "findings": [f.to_dict() for f in findings],
                    "failed": sum(f.status == "fail" for f in findings),
                    "warnings": sum(f.status == "warn" for f in findings)})  # fmt: skip
        raise typer.Exit(code)
    _print_findings(facts.where, findings)
    raise typer.Exit(code)


def _managed_conf_if_stopped(s: Any) -> Path | None:
    """With the managed server stopped, its redis.conf is what there is to audit."""
    from toolkit.redis.server import ServerPaths, read_pid

    paths = ServerPaths.from_settings(s)
    if read_pid(paths.pidfile) is not None:
        return None
    if not paths.conf.is_file():
        raise UsageError(
            f"the managed Redis is not running and there is no {paths.conf}",
            fix="run `tk redis harden` first, or pass --conf FILE or --url URL",
        )
    warn(f"the managed Redis is not running: auditing {paths.conf} (start it to audit it live)")
    return paths.conf


def urlsplit_password(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def _print_findings(where: str, findings: list[Any]) -> None:
    rows = [(f.id, f.severity, f.status, f.found, f.fix) for f in findings]
    cols = ("rule", "severity", "status", "found", "fix")
    print_status_table(f"redis audit: {where}", cols, rows, status_col=2)


@app.command("start")
@handle_errors
def start_cmd(
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run in this terminal until Ctrl-C.")
    ] = False,
    server: ServerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Start redis-server with the generated config and wait until it answers.

    In the background by default (pid in .tk/run/redis.pid, log in .tk/logs/redis.log).
    """
    from toolkit.redis import server as srv

    notify = None if as_json else (lambda line: typer.echo(line, err=True))
    info = srv.start(settings(redis_server=server), foreground=foreground, notify=notify)
    if as_json:
        print_json(info)
        return
    typer.echo(f"Redis running: pid {info['pid']}, port {info['port']}, {info['binary']}")
    typer.echo(f"log: {info['log']}")


@app.command("stop")
@handle_errors
def stop_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Stop the managed server with SHUTDOWN (the AOF is synced first)."""
    from toolkit.redis import server as srv

    message = srv.stop(settings())
    if as_json:
        print_json({"stopped": True, "message": message})
    else:
        typer.echo(message)


@app.command("status")
@handle_errors
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Say whether the managed server runs, which binary and version, port, memory, AOF."""
    from toolkit.redis import server as srv

    info = srv.status(settings())
    if as_json:
        print_json(info)
    else:
        for key, value in status_lines(info):
            typer.echo(f"{key:12} {value}")
    raise typer.Exit(0 if info["running"] and info.get("reachable") else 1)


def status_lines(info: dict[str, Any]) -> list[tuple[str, str]]:
    """`tk redis status` for a human: yes/no, sizes in units, "-" for what is not known."""
    from toolkit.units import human_size

    def size(key: str) -> str:
        value = info.get(key)
        return human_size(int(value)) if isinstance(value, int) and value > 0 else "-"

    def yes_no(key: str) -> str:
        return "-" if info.get(key) is None else ("yes" if info[key] else "no")

    uptime = info.get("uptime_s")
    lines = [
        ("running", yes_no("running")),
        ("pid", str(info.get("pid") or "-")),
        ("binary", str(info.get("binary") or "-")),
        ("version", str(info.get("version") or "-")),
        ("port", str(info.get("port") or "-")),
        ("conf", str(info.get("conf") or "-")),
        ("uptime", "-" if uptime is None else f"{uptime:g} s"),
        ("memory", size("rss_bytes")),
        ("reachable", yes_no("reachable")),
        (
            "aof",
            "-" if info.get("aof_enabled") is None else ("on" if info["aof_enabled"] else "off"),
        ),
        ("used_memory", size("used_memory")),
        ("maxmemory", "none" if info.get("maxmemory") == 0 else size("maxmemory")),
        ("keys", str(info.get("keys", "-"))),
    ]
    if info.get("error"):
        lines.append(("error", str(info["error"])))
    return lines


@app.command("ping")
@handle_errors
def ping_cmd(
    user: Annotated[str, typer.Option(help="ACL user to connect as.")] = "tk-monitor",
    url: Annotated[OptStr, typer.Option(help="Ping this server instead.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """PING the server as an ACL user and print the round trip."""
    from toolkit.redis import server as srv

    ms = srv.ping(settings(), user=user, url=url)
    if as_json:
        print_json({"pong": True, "ms": round(ms, 3), "user": user})
    else:
        typer.echo(f"PONG ({ms:.2f} ms, as {user})")


__all__ = ["app", "fail"]
