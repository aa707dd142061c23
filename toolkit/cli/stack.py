"""``tk up | down | status | logs | doctor``: launch, supervise and check the whole stack."""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

import typer

from toolkit.cli._common import console, handle_errors, print_json, print_status_table, warn
from toolkit.cli.state import settings
from toolkit.config import Settings

OptInt = Optional[int]  # noqa: UP045 - typer needs Optional on 3.10
OptStr = Optional[str]  # noqa: UP045
ListStr = Optional[list[str]]  # noqa: UP045

ROLES = ("redis", "worker", "api")


def _plan(s: Settings, workers: int | None) -> Any:
    from toolkit.stack.facts import gather
    from toolkit.stack.plan import build_plan

    return build_plan(s, gather(s), workers)


def _print_plan(plan: Any) -> None:
    typer.echo(f"project: {plan.project_dir}")
    if plan.harden_first:
        typer.echo("first:   tk redis harden (no redis-conf/redis.conf yet)")
    if plan.external_redis:
        typer.echo(f"redis:   {plan.external_redis} (not started here)")
    typer.echo(f"workers: {plan.workers} ({plan.workers_reason})")
    typer.echo(f"python:  {plan.worker_python} ({plan.python_reason})")
    for p in plan.procs:
        extra = " ".join(f"{k}={v}" for k, v in sorted(p.env.items()))
        typer.echo(f"  {p.name:9} {' '.join(p.argv)}")
        typer.echo(f"  {'':9} log {p.log}" + (f"; env {extra}" if extra else ""))
    typer.echo(f"api:     {plan.api_url}")


def _ready_message(plan: Any, s: Settings, detached: bool) -> str:
    from toolkit.stack.hints import tk, tk_command

    url = plan.api_url
    stop = tk(s, "down") if detached else f"Ctrl-C here (or {tk(s, 'down')} from another terminal)"
    return "\n".join(
        [
            f"stack ready: api {url}, {plan.workers} worker{'s' if plan.workers != 1 else ''}, "
            + (f"redis on port {plan.redis_port}" if plan.redis_port else "external redis"),
            f"logs: {plan.log_dir}   state: {plan.run_dir / 'stack.json'}",
            "try:",
            f"  {tk_command(s)} submit path/to/photo.jpg --wait",
            f"  curl -s -F file=@path/to/photo.jpg {url}/predict   # -> task id",
            f"  curl -s '{url}/result/<task id>?wait=10'",
            f"  curl -s -F file=@path/to/photo.jpg '{url}/predict?wait=10'   # -> result",
            f"  curl -s --data-binary @path/to/photo.jpg -H 'content-type: image/jpeg' "
            f"'{url}/predict?wait=10'   # the same, cheapest for the API",
            f"stop: {stop}",
        ]
    )


def up(
    workers: Annotated[
        OptInt, typer.Option("--workers", "-w", help="Worker processes. \\[default: per machine]")
    ] = None,
    redis_url: Annotated[
        OptStr,
        typer.Option(
            "--redis-url",
            help="Use this Redis instead of starting one (password: TK_REDIS_PASSWORD).",
        ),
    ] = None,
    api_port: Annotated[
        OptInt, typer.Option("--api-port", help="API port. \\[default: 8000]")
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; start nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="The plan as JSON (with --dry-run).")
    ] = False,
    supervise: Annotated[bool, typer.Option("--supervise", hidden=True)] = False,
) -> None:
    """Launch Redis (hardened), the inference workers and the API; supervise them.

    Ctrl-C (or `tk down` for --detach) drains in order: the API stops taking work, workers
    finish the batch in hand, Redis shuts down with its AOF synced.
    """
    _up(workers, redis_url, api_port, detach, dry_run, as_json, supervise)


@handle_errors
def _up(workers: int | None, redis_url: str | None, api_port: int | None, detach: bool,
        dry_run: bool, as_json: bool, supervise: bool) -> None:  # fmt: skip
    from toolkit.cli.redis import urlsplit_password
    from toolkit.errors import UsageError
    from toolkit.stack import control
    from toolkit.stack.hints import tk
    from toolkit.stack.supervisor import Supervisor

    control.check_flags(workers, api_port)
    s = settings(redis_url=redis_url, serve_port=api_port)
    if as_json and not dry_run:
        raise UsageError(
            "--json needs --dry-run",
            fix=f"{tk(s, 'up --dry-run --json')} prints the plan as JSON; "
            f"{tk(s, 'status --json')} describes a running stack",
        )
    if redis_url and urlsplit_password(redis_url):
        warn("a password on the command line shows up in `ps`; use TK_REDIS_PASSWORD")
    plan = _plan(s, workers)
    control.validate(s, plan)
    for w in plan.warnings:
        warn(w)
    if dry_run:
        print_json(plan.to_dict()) if as_json else _print_plan(plan)
        return
    for note in control.preflight(s, plan):
        typer.echo(note)
    if plan.harden_first:
        from toolkit.redis.harden import harden

        result = harden(s)
        typer.echo(f"wrote {result.conf} ({result.server})")
        plan = _plan(s, workers)
    if detach and not supervise:
        data = control.launch_detached(s, control.supervisor_argv(s, workers))
        typer.echo(f"supervisor pid {data['supervisor_pid']} (detached)")
        typer.echo(_ready_message(plan, s, detached=True))
        return
    typer.echo(f"workers run in {plan.worker_python} ({plan.python_reason})")

    def stamp(message: str) -> None:
        typer.echo(f"{time.strftime('%H:%M:%S')} tk up: {message}", err=supervise)

    sup = Supervisor(s, plan, stamp)
    code = sup.run(on_ready=lambda: typer.echo(_ready_message(plan, s, detached=supervise)))
    if code:
        raise typer.Exit(code)


@handle_errors
def down() -> None:
    """Stop the stack in order (API, then workers after their batch, then Redis with SHUTDOWN)."""
    from toolkit.stack import control

    typer.echo(control.down(settings()))


@handle_errors
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Processes (role, pid, uptime, restarts, memory), queue figures and worker heartbeats."""
    from toolkit.stack import control
    from toolkit.stack.hints import tk
    from toolkit.units import human_size

    s = settings()
    info = control.status(s)
    if as_json:
        print_json(info)
        raise typer.Exit(0 if info["running"] else 1)
    if not info.get("procs"):
        typer.echo(f"no stack running here (start one with {tk(s, 'up')})")
        raise typer.Exit(1)
    from rich.table import Table

    t = Table("role", "name", "pid", "alive", "uptime", "restarts", "memory")
    for p in info["procs"]:
        up_s = f"{p['uptime_s']:.0f}s" if p["uptime_s"] is not None else "-"
        mem = human_size(p["rss_bytes"]) if p["rss_bytes"] else "-"
        t.add_row(p["role"], p["name"], str(p["pid"] or "-"), "yes" if p["alive"] else "NO",
                  up_s, str(p["restarts"]), mem)  # fmt: skip
    con = console()
    state_word = "running" if info["running"] else "NOT running (supervisor gone)"
    con.print(f"stack {state_word}: supervisor pid {info['supervisor_pid']}, api {info['api_url']}")
    con.print(t)
    q = info.get("queue")
    if q:
        con.print(f"queue: {q['waiting']} waiting, {q['pending']} pending, {q['dead']} dead")
    hb = info.get("heartbeats") or {}
    con.print(f"heartbeats: {', '.join(_beat(n, hb[n]) for n in sorted(hb)) or 'none'}")
    raise typer.Exit(0 if info["running"] else 1)


def _beat(name: str, beat: Any) -> str:
    """``worker-1 (4 done, passes of 2)``: a heartbeat in a few words."""
    if not isinstance(beat, dict):
        return name
    parts = []
    if "completed" in beat:
        parts.append(f"{beat['completed']} done")
    if beat.get("forward_batch"):
        parts.append(f"passes of {beat['forward_batch']}")
    if str(beat.get("device", "cpu")) != "cpu":  # where it runs matters once it is not a CPU
        parts.append(f"on {beat['device']}, {beat.get('decode_threads', 1)} decode threads")
    return f"{name} ({', '.join(parts)})" if parts else name


LOG_ROLES = (*ROLES, "tk-up")


def logs(
    role: Annotated[
        OptStr,
        typer.Argument(
            help="api, worker, redis, or tk-up (the supervisor's own log: starts, restarts, "
            "why it stopped). \\[default: all]"
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing new lines, also of files that appear later."
        ),
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines of history.")] = 40,
) -> None:
    """Print the stack's logs (from .tk/logs), optionally following them.

    Exit 1 when there are no logs yet (and no --follow).
    """
    _logs(role, follow, lines)


@handle_errors
def _logs(role: str | None, follow: bool, lines: int) -> None:
    from toolkit.errors import TkError, UsageError
    from toolkit.stack.hints import tk
    from toolkit.stack.logtail import LogFollower, role_of

    if role is not None and role not in LOG_ROLES:
        raise UsageError(f"unknown role {role!r}", fix=f"use one of: {', '.join(LOG_ROLES)}")
    if lines < 0:
        raise UsageError(f"--lines must be 0 or more, got {lines}")
    s = settings()
    tail = LogFollower(s.log_dir, lambda p: role is None or role_of(p.name) == role)
    if not tail.current() and not follow:
        what = f"no {role} logs" if role else "no logs"
        raise TkError(f"{what} in {s.log_dir}", fix=f"start the stack with {tk(s, 'up')}")
    for name, line in tail.history(lines):
        typer.echo(f"{name:9} | {line}")
    while follow:  # like `tail -F`: files that appear, are truncated or replaced are followed
        time.sleep(0.5)
        for name, line in tail.poll():
            typer.echo(f"{name:9} | {line}")


def doctor(
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable (docs/doctor.md).")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 2 on warnings.")] = False,
    only: Annotated[ListStr, typer.Option("--only", help="Only this group (repeatable).")] = None,
    skip: Annotated[ListStr, typer.Option("--skip", help="Skip this group (repeatable).")] = None,
) -> None:
    """Check host, env, redis, queue, workers and api: ok | warn | fail, each with the fix.

    Exit 0 when all is ok, 1 on any failure, 2 on warnings with --strict.
    """
    _doctor(as_json, strict, only or [], skip or [])


@handle_errors
def _doctor(as_json: bool, strict: bool, only: list[str], skip: list[str]) -> None:
    from toolkit.health import doctor as doc

    _check_selection(only, skip)
    report = doc.run(settings(), only, skip)
    code = report.exit_code(strict)
    if as_json:
        print_json(report.to_dict(strict))
        raise typer.Exit(code)
    rows = [(r.group, r.id, r.status, r.finding, r.fix) for r in report.results]
    print_status_table(None, ("group", "check", "status", "finding", "fix"), rows, 2)
    typer.echo(f"exit {code}" + (" (--strict: warnings count)" if strict else ""))
    raise typer.Exit(code)


def _check_selection(only: list[str], skip: list[str]) -> None:
    """--only and --skip that contradict each other, or leave no check to run: a usage error
    (an unknown group is the checks' own error, raised when they are selected)."""
    from toolkit.errors import UsageError
    from toolkit.health.model import GROUPS

    if (set(only) | set(skip)) - set(GROUPS):
        return
    both = [g for g in GROUPS if g in only and g in skip]
    if both:
        raise UsageError(
            f"group {both[0]!r} is both in --only and in --skip",
            fix="name a group in one of them",
        )
    if not [g for g in GROUPS if (not only or g in only) and g not in skip]:
        raise UsageError("--skip leaves no check to run", fix=f"groups are: {', '.join(GROUPS)}")


def register(app: typer.Typer) -> None:
    for func in (up, down, status, logs, doctor):
        app.command(func.__name__)(func)
