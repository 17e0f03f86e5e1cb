"""`llmobs projects list|show|set`: projects and their retention (admin actions, audited)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from llmobs.cli.context import command_group, ctx_obj
from llmobs.cli.render import print_json

if TYPE_CHECKING:
    from llmobs.store.projects import Project

projects_app = command_group("Projects and their retention.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.add_typer(projects_app, name="projects")


def _days(days: int | None, own: int | None) -> str:
    text = "forever" if days is None else f"{days} d"
    return text if own is not None else f"{text} (default)"


def _oldest(project: Project) -> str:
    return f"{project.oldest_span:%Y-%m-%d %H:%M:%S %Z}" if project.oldest_span else "no spans"


@projects_app.command("list")
def list_(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """List projects: retention of spans and rollups, and the oldest span stored."""
    from rich.table import Table

    from llmobs.store.db import connect
    from llmobs.store.projects import RetentionDefaults, list_projects

    obj = ctx_obj(ctx)
    with connect(obj.settings, "admin", autocommit=True) as conn:
        found = list_projects(conn, RetentionDefaults.from_settings(obj.settings))
    if json_:
        print_json([p.to_dict() for p in found])
        return
    table = Table("project", "span retention", "rollup retention", "oldest span", "created")
    for p in found:
        table.add_row(
            p.name,
            _days(p.retention_days, p.own_retention_days),
            _days(p.rollup_retention_days, p.own_rollup_retention_days),
            _oldest(p),
            f"{p.created_at:%Y-%m-%d}",
        )
    obj.console.print(table)


def _print_project(ctx: typer.Context, project: Project, json_: bool) -> None:
    obj = ctx_obj(ctx)
    if json_:
        print_json(project.to_dict())
        return
    obj.console.print(f"project           {project.name}")
    obj.console.print(f"span retention    {_days(project.retention_days, project.own_retention_days)}")
    obj.console.print(f"rollup retention  {_days(project.rollup_retention_days, project.own_rollup_retention_days)}")
    obj.console.print(f"oldest span       {_oldest(project)}")
    obj.console.print(f"created           {project.created_at:%Y-%m-%d %H:%M:%S %Z}")


@projects_app.command("show")
def show(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Project name.")], json_: JsonOpt = False
) -> None:
    """One project: retention of spans and rollups, and the oldest span stored. Exit code 2 when
    there is no such project."""
    from llmobs.store.db import connect
    from llmobs.store.projects import RetentionDefaults, get_project

    obj = ctx_obj(ctx)
    with connect(obj.settings, "admin", autocommit=True) as conn:
        project = get_project(conn, name, RetentionDefaults.from_settings(obj.settings))
    _print_project(ctx, project, json_)


@projects_app.command("set")
def set_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Project name.")],
    retention_days: Annotated[
        int | None,
        typer.Option("--retention-days", help="Days the project's spans are kept.", show_default=False),
    ] = None,
    rollup_retention_days: Annotated[
        int | None,
        typer.Option(
            "--rollup-retention-days",
            help="Days its minute/hour rollups are kept (at least the span retention).",
            show_default=False,
        ),
    ] = None,
    default: Annotated[
        bool,
        typer.Option("--default", help="Follow RETENTION_DAYS and ROLLUP_RETENTION_DAYS again."),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Set a project's retention. `llmobs db maintain` enforces it at its next pass. An option left
    out keeps its current value."""
    from llmobs.errors import UsageError
    from llmobs.store import audit
    from llmobs.store.db import connect
    from llmobs.store.projects import RetentionChange, RetentionDefaults, get_project, set_retention

    obj = ctx_obj(ctx)
    if default and (retention_days is not None or rollup_retention_days is not None):
        raise UsageError("--default cannot be combined with --retention-days or --rollup-retention-days")
    if not default and retention_days is None and rollup_retention_days is None:
        raise UsageError("nothing to set: give --retention-days, --rollup-retention-days or --default")
    defaults = RetentionDefaults.from_settings(obj.settings)
    with connect(obj.settings, "admin", autocommit=True) as conn:
        current = get_project(conn, name, defaults)
        if default:
            change = RetentionChange(None, None)
        else:
            change = RetentionChange(
                retention_days if retention_days is not None else current.own_retention_days,
                rollup_retention_days if rollup_retention_days is not None else current.own_rollup_retention_days,
            )
        project = set_retention(conn, name, change, defaults, actor=audit.cli_actor(), source=audit.cli_source())
    _print_project(ctx, project, json_)
