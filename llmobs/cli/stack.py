"""`llmobs up|down|status|logs|scale`: run the stack and see how it is doing."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Annotated

import typer

from llmobs.cli.context import CliContext, ctx_obj, is_interactive
from llmobs.cli.render import human_age, human_bytes, print_json

if TYPE_CHECKING:
    from llmobs.stack.lifecycle import StackStatus

RuntimeOpt = Annotated[
    str | None,
    typer.Option(
        "--runtime",
        help="auto, compose or local (default: the one the stack was started with, else LLMOBS_RUNTIME).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("scale")(scale)
    app.command("switchover")(switchover)
    app.command("failover")(failover)


def up(
    ctx: typer.Context,
    services: Annotated[
        list[str] | None, typer.Argument(help="Only these services (and what they need).", show_default=False)
    ] = None,
    runtime: RuntimeOpt = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(
            "--profile",
            help="Profiles to enable: admin (pgAdmin), backup (scheduler), monitoring (Prometheus, Alertmanager, "
            "exporters; also in the local runtime), ha (PostgreSQL under Patroni behind HAProxy; compose only).",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every service to be healthy.")] = 120,
    json_: JsonOpt = False,
) -> None:
    """Start the stack and wait until every service is healthy. Safe to re-run: only what is
    down is started, and migrations run once."""
    from llmobs.backup.runner import finish_interrupted_restore
    from llmobs.backup.status import backup_facts
    from llmobs.cli.progress import ConsoleProgress
    from llmobs.secrets.store import redis_passwords_in_play
    from llmobs.stack import lifecycle
    from llmobs.stack.runtime import get_stack, remember

    obj = ctx_obj(ctx)
    settings = obj.settings
    settings.require_secrets()
    stack = get_stack(
        settings,
        runtime,
        profiles=profile,
        for_start=True,
        before_database_start=finish_interrupted_restore,
        redis_passwords=redis_passwords_in_play,
    )
    remember(settings, stack.runtime, profile or [])
    console = obj.err_console if json_ else obj.console
    with ConsoleProgress(console) as progress:
        progress.done(f"runtime: {stack.runtime} (project {settings.project_dir})")
        lifecycle.up(stack, settings, progress, services=services, timeout=timeout)
    # Everything asked for is healthy (lifecycle.up raises otherwise): exit 0 even if other
    # services of the stack are down, as after `llmobs up timescaledb`.
    _show_status(obj, lifecycle.stack_status(stack, settings, fact_sources={"backup": backup_facts}), json_)


def down(
    ctx: typer.Context,
    volumes: Annotated[
        bool, typer.Option("--volumes", "-v", help="Also DELETE all data (database, Redis, WAL archive). Asks first.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    runtime: RuntimeOpt = None,
) -> None:
    """Stop every service cleanly (PostgreSQL fast shutdown, collector drains its queue)."""
    from llmobs.cli.progress import ConsoleProgress
    from llmobs.errors import Aborted
    from llmobs.stack import lifecycle
    from llmobs.stack.runtime import get_stack

    obj = ctx_obj(ctx)
    stack = get_stack(obj.settings, runtime)
    if volumes and not yes:
        if not is_interactive():
            raise Aborted("down --volumes deletes all data; pass --yes to confirm without a terminal")
        typer.confirm(
            f"Delete ALL data of the project in {obj.settings.project_dir} (database, Redis, WAL "
            "archive)? Backups are kept.",
            abort=True,
        )
    with ConsoleProgress(obj.console) as progress:
        removed = lifecycle.down(stack, progress, volumes=volumes)
        for item in removed:
            progress.done(f"deleted {item}")
    obj.console.print("stack stopped" + (" and data deleted" if volumes else "; data kept"))


def status(ctx: typer.Context, runtime: RuntimeOpt = None, json_: JsonOpt = False) -> None:
    """Show each service's state, health, latency, pids or containers, ports and version, plus
    operator facts. Exit code: 0 healthy, 1 degraded, 2 not running."""
    from llmobs.backup.status import backup_facts
    from llmobs.stack.lifecycle import stack_status
    from llmobs.stack.runtime import get_stack

    obj = ctx_obj(ctx)
    stack = get_stack(obj.settings, runtime)
    result = stack_status(stack, obj.settings, fact_sources={"backup": backup_facts})
    _show_status(obj, result, json_)
    raise typer.Exit(result.exit_code)


def _show_status(obj: CliContext, result: StackStatus, json_: bool) -> None:
    if json_:
        print_json(result.to_dict())
        return
    from rich.table import Table

    colours = {"healthy": "green", "unhealthy": "red", "starting": "yellow"}
    table = Table(title=f"LLM Observatory ({result.runtime} runtime)", title_justify="left")
    for col in ("service", "state", "health", "latency", "replicas", "pid / container", "ports", "version"):
        table.add_column(col)
    for s in result.services:
        health = f"[{colours.get(s.health, 'dim')}]{s.health}[/]"
        if s.detail and s.health not in ("healthy", "-"):
            health += f" [dim]({s.detail})[/]"
        ident = ", ".join(str(p) for p in s.pids) or ", ".join(s.containers) or "-"
        table.add_row(
            s.name,
            s.state if s.state == "running" else f"[dim]{s.state}[/]",
            health,
            f"{s.latency_ms:.0f} ms" if s.latency_ms is not None else "-",
            f"{s.replicas}/{s.desired}" if s.desired else "-",
            ident,
            ", ".join(str(p) for p in s.ports.values()) or "-",
            s.version or "-",
        )
    obj.console.print(table)
    f = result.facts
    if f:
        lines = []
        if "ui_url" in f:
            lines.append(f"web UI: {f['ui_url']}  (sign in: `llmobs ui`)")
        if "database_size_bytes" in f:
            lines.append(f"database size: {human_bytes(f['database_size_bytes'])}")
        if "spans_last_hour" in f:
            lines.append(f"spans ingested in the last hour: {f['spans_last_hour']:,}")
        if "schema_version" in f:
            lines.append(f"schema version: {f['schema_version']}")
        for project in f.get("projects") or []:
            oldest = project["oldest_span"]
            lines.append(
                f"project {project['name']}: keeps {project['retention_days']} d, oldest span "
                + (f"{oldest:%Y-%m-%d %H:%M %Z}" if oldest else "none")
            )
        archiver = f.get("wal_archiver")
        if archiver:
            from datetime import datetime

            last = archiver.get("last_archived_at")
            age = (datetime.now(UTC) - last).total_seconds() if last else None
            lines.append(
                f"WAL archiving: {archiver['archive_mode']}, last segment {human_age(age)}, "
                f"{archiver['failed_count']} failures"
            )
        backup = f.get("backup")
        if isinstance(backup, dict) and backup.get("available"):
            lines.append(
                f"last successful database backup: {human_age(backup.get('age_seconds'))}"
                f" (limit {backup.get('max_age_hours')} h)"
            )
        elif isinstance(backup, dict):
            lines.append(f"backups: not visible from here ({backup.get('reason', 'unknown')})")
        ha_facts = f.get("ha")
        if isinstance(ha_facts, dict):
            from llmobs.stack.ha import member_lines

            lines.extend(f"PostgreSQL {line}" for line in member_lines(ha_facts.get("members") or []))
            lines.append(f"etcd: {ha_facts.get('etcd')}")
        if "alerts" in f:
            lines.append(f"alerts firing: {', '.join(a['name'] for a in f['alerts']) or 'none'}")
        obj.console.print("\n".join(lines))
    for w in result.warnings:
        obj.console.print(f"[yellow]warning:[/] {w}")
    colour = {"healthy": "green", "degraded": "yellow", "down": "red"}[result.overall]
    obj.console.print(f"overall: [bold {colour}]{result.overall}[/]")


def logs(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Argument(help="One service (default: all).", show_default=False)] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end of each log.")] = 100,
    runtime: RuntimeOpt = None,
) -> None:
    """Print service logs."""
    from llmobs.stack.runtime import get_stack

    obj = ctx_obj(ctx)
    stack = get_stack(obj.settings, runtime)
    try:
        for line in stack.logs(service, follow=follow, tail=tail):
            print(line, flush=follow)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        pass


def scale(
    ctx: typer.Context,
    targets: Annotated[list[str], typer.Argument(help="SERVICE=N pairs, e.g. api=3 collector=2.", show_default=False)],
    runtime: RuntimeOpt = None,
) -> None:
    """Run N replicas of api and/or collector, sharing their published ports."""
    from llmobs.cli.progress import ConsoleProgress
    from llmobs.errors import UsageError
    from llmobs.stack.runtime import get_stack

    replicas: dict[str, int] = {}
    for item in targets:
        name, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise UsageError(f"{item!r} is not SERVICE=N (for example api=3)")
        replicas[name] = int(count)
    obj = ctx_obj(ctx)
    stack = get_stack(obj.settings, runtime)
    with ConsoleProgress(obj.console) as progress:
        stack.scale(replicas, progress)


_NODE_HELP = "The node to lead: db-1, db-2 (db-3 with HA_NODES=3)."
NodeOpt = Annotated[str | None, typer.Option("--to", help=_NODE_HELP, show_default=False)]


def switchover(ctx: typer.Context, to: NodeOpt = None, runtime: RuntimeOpt = None) -> None:
    """Profile `ha`: hand the leader role to another PostgreSQL node (default: the synchronous
    standby) through Patroni, and wait until it leads. Writes pause for a few seconds (the
    collector answers 503 with Retry-After meanwhile)."""
    from llmobs.cli.progress import ConsoleProgress
    from llmobs.stack import ha
    from llmobs.stack.runtime import get_stack

    obj = ctx_obj(ctx)
    stack = get_stack(obj.settings, runtime)
    with ConsoleProgress(obj.console) as progress:
        ha.switchover(stack, progress, to=to)


def failover(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help=_NODE_HELP)],
    runtime: RuntimeOpt = None,
) -> None:
    """Profile `ha`: make NODE the leader through Patroni even when the leader is not healthy (a
    manual failover). Prefer `switchover` while the leader is healthy; a failover to a node that is
    not the synchronous standby can lose the writes it had not received."""
    from llmobs.cli.progress import ConsoleProgress
    from llmobs.stack import ha
    from llmobs.stack.runtime import get_stack

    obj = ctx_obj(ctx)
    stack = get_stack(obj.settings, runtime)
    with ConsoleProgress(obj.console) as progress:
        ha.failover(stack, progress, to=to)
