"""`llmobs db migrate|status|maintain`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmobs.cli.context import command_group, ctx_obj
from llmobs.cli.render import print_json
from llmobs.errors import LlmobsError, UsageError

db_app = command_group("Schema migrations and database upkeep.")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


@db_app.command("migrate")
def migrate(ctx: typer.Context) -> None:
    """Apply pending migrations, then make sure roles and the default project's keys exist."""
    from llmobs.store.bootstrap import bootstrap

    obj = ctx_obj(ctx)
    result = bootstrap(obj.settings, on_migration=lambda m: obj.console.print(f"applying {m.version:04d}_{m.name} ..."))
    if result.applied:
        obj.console.print(
            f"[green]applied {len(result.applied)} migration(s)[/]; schema version {result.schema_version}"
        )
    else:
        obj.console.print(f"schema is up to date (version {result.schema_version})")


@db_app.command("status")
def status(ctx: typer.Context, json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List applied and pending migrations. Exit code 1 when some are pending."""
    from llmobs.store import migrations
    from llmobs.store.db import connect

    obj = ctx_obj(ctx)
    with connect(obj.settings, "admin", autocommit=True) as conn:
        st = migrations.status(conn)
    if json_:
        print_json(
            {
                "schema_version": st.schema_version,
                "applied": [
                    {
                        "version": m.version,
                        "name": m.name,
                        "applied_at": m.applied_at.isoformat(),
                        "execution_ms": m.execution_ms,
                        "modified": m.version in st.modified,
                    }
                    for m in st.applied
                ],
                "pending": [{"version": m.version, "name": m.name} for m in st.pending],
            }
        )
    else:
        from rich.table import Table

        table = Table("version", "name", "state", "applied at")
        for m in st.applied:
            state = "[yellow]applied (file changed since)[/]" if m.version in st.modified else "[green]applied[/]"
            table.add_row(f"{m.version:04d}", m.name, state, f"{m.applied_at:%Y-%m-%d %H:%M:%S %Z}")
        for p in st.pending:
            table.add_row(f"{p.version:04d}", p.name, "[yellow]pending[/]", "")
        obj.console.print(table)
    raise typer.Exit(1 if st.pending else 0)


@db_app.command("maintain")
def maintain(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    every: Annotated[
        int | None,
        typer.Option(
            "--every",
            min=5,
            help="Run a pass every N seconds until stopped (SIGTERM), logging one line "
            "per pass: the compose stack's `maintenance` service.",
            show_default=False,
        ),
    ] = None,
    volume: Annotated[
        list[str] | None,
        typer.Option(
            "--volume",
            metavar="NAME=PATH",
            help="Record how full the filesystem holding PATH is, as volume NAME (repeatable; "
            "the `monitoring` profile alerts on it).",
            show_default=False,
        ),
    ] = None,
    certificate: Annotated[
        list[Path] | None,
        typer.Option(
            "--certificate", help="Record when this PEM certificate expires (repeatable).", show_default=False
        ),
    ] = None,
) -> None:
    """Create span partitions ahead, enforce each project's retention (drop expired partitions,
    delete expired rows in batches), refresh the rollups; record the host facts asked for (volume
    usage, certificate expiry). A database error is a clear message and exit code, no traceback."""
    import psycopg

    from llmobs.store.db import first_line
    from llmobs.store.host_facts import HostFacts
    from llmobs.store.maintain import maintain_forever, maintain_once

    obj = ctx_obj(ctx)
    host = HostFacts(_parse_volumes(volume or []), list(certificate or [])) if volume or certificate else None
    if every is not None:
        maintain_forever(obj.settings, every, host=host)
        return
    try:
        result = maintain_once(obj.settings, host)
    except psycopg.Error as exc:
        raise LlmobsError(
            f"database maintenance failed: {first_line(exc)}",
            hint="check that PostgreSQL is up (`llmobs status`) and see its log; a pass is safe to run again",
        ) from None
    if json_:
        print_json(
            {
                "timescale": result.timescale,
                "partitions_created": result.partitions_created,
                "partitions_dropped": result.partitions_dropped,
                "rows_expired": result.retention.rows_deleted if result.retention else {},
                "rollup_rows": result.rollup_rows,
                "host_facts": result.host_facts,
            }
        )
        return
    if result.timescale:
        obj.console.print("TimescaleDB: retention policy set; chunks and aggregates are managed by its jobs")
        return
    obj.console.print(f"partitions created: {', '.join(result.partitions_created) or 'none'}")
    obj.console.print(f"partitions dropped: {', '.join(result.partitions_dropped) or 'none'}")
    if result.retention and result.retention.rows_deleted:
        deleted = ", ".join(f"{n} from {table}" for table, n in result.retention.rows_deleted.items())
        obj.console.print(f"expired rows deleted: {deleted} ({result.retention.batches} batches)")
    obj.console.print(f"rollups refreshed: {result.rollup_rows} minute rows")


def _parse_volumes(specs: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` options as a mapping; a malformed one is a usage error."""
    volumes = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--volume {spec!r}: expected NAME=PATH")
        volumes[name] = Path(path)
    return volumes
