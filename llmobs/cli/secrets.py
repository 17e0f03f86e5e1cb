"""`llmobs secrets rotate|status`: rotate the stack's secrets without downtime, and see their age."""

from __future__ import annotations

from typing import Annotated

import typer

from llmobs.cli.context import command_group, ctx_obj, is_interactive
from llmobs.cli.render import print_json

secrets_app = command_group("Rotate the stack's secrets without downtime, and see how old they are.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts (progress goes to stderr).")]


def register(app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")


@secrets_app.command("rotate")
def rotate(
    ctx: typer.Context,
    targets: Annotated[
        list[str],
        typer.Argument(
            help="What to rotate: db (superuser, app and readonly roles), redis, jwt (signing key), grafana "
            "(admin password, compose runtime), ha (replication user and Patroni's REST password, profile ha), "
            "or all.",
            show_default=False,
            metavar="db|redis|jwt|grafana|ha|all",
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Rotate secrets while the stack keeps serving: new credentials are valid before the old ones
    are revoked, services move over by a rolling restart, and the run ends by checking that the
    new credentials work and the old ones are refused. A rotation that was interrupted is
    finished first. .env is rewritten atomically; no secret value is printed."""
    from llmobs.cli.progress import ConsoleProgress
    from llmobs.errors import Aborted
    from llmobs.secrets.catalog import expand_targets, secrets_of
    from llmobs.secrets.rotate import rotate as run_rotation

    obj = ctx_obj(ctx)
    settings = obj.settings
    chosen = expand_targets(targets)
    if not yes:
        question = (
            f"Rotate {', '.join(secrets_of(chosen))} in {settings.project_dir}? The api and collector are "
            "restarted one replica at a time; tools of your own that use these credentials need the new "
            "values from .env."
        )
        if not is_interactive():
            raise Aborted("secrets rotate changes credentials; pass --yes to confirm without a terminal")
        typer.confirm(question, abort=True)
    console = obj.err_console if json_ else obj.console
    with ConsoleProgress(console) as progress:
        result = run_rotation(obj.project_dir, targets, progress)
    if json_:
        print_json(result.to_dict())
        return
    if not result.rotation_ids:
        obj.console.print("nothing rotated")
        return
    obj.console.print(f"rotated: {', '.join(result.secrets)}; new values are in {obj.project_dir / '.env'}")


@secrets_app.command("status")
def status(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Each secret's age (from the rotation log, never its value) and what needs doing. Exit code
    1 when a secret is older than SECRETS_MAX_AGE_DAYS or a rotation did not finish."""
    from llmobs.cli.render import human_age
    from llmobs.secrets.status import secrets_status
    from llmobs.stack.runtime import resolve_runtime

    obj = ctx_obj(ctx)
    settings = obj.settings
    result = secrets_status(
        obj.project_dir,
        runtime=resolve_runtime(settings),
        max_age_days=settings.get_int("SECRETS_MAX_AGE_DAYS"),
        jwt_previous_until=settings.get_str("SECRET_KEY_PREVIOUS_UNTIL"),
    )
    if json_:
        print_json(result.to_dict())
        raise typer.Exit(result.exit_code)
    from datetime import UTC, datetime

    from rich.table import Table

    now = datetime.now(UTC)
    table = Table(title=f"Secrets (warn after {result.max_age_days} days)", title_justify="left")
    for col in ("secret", "target", "used for", "last rotated", "age"):
        table.add_column(col)
    for s in result.secrets:
        when = {"rotated": "", "baseline": " (never rotated)", "estimated": " (never rotated; .env time)"}[s.source]
        age = human_age((now - s.since).total_seconds()) if s.since else "unknown"
        colour = "yellow" if s.warning else ("dim" if not s.in_use else "green")
        table.add_row(
            s.name,
            s.target,
            s.what + ("" if s.in_use else f" — not used by the {result.runtime} runtime"),
            (s.since.strftime("%Y-%m-%d %H:%M UTC") if s.since else "-") + when,
            f"[{colour}]{age}[/]",
        )
    obj.console.print(table)
    if result.jwt_previous_until:
        state = "accepted" if result.jwt_previous_until > now else "no longer accepted"
        obj.console.print(f"previous JWT key: {state} until {result.jwt_previous_until.isoformat()}")
    for w in result.warnings:
        obj.console.print(f"[yellow]warning:[/] {w}")
    raise typer.Exit(result.exit_code)
