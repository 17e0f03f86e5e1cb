"""`llmobs restore ID|--to TIME [--yes]`: restore a backup, or the data as it was at a time."""

from __future__ import annotations

from typing import Annotated

import typer

from llmobs.cli.backup import JsonOpt, JsonProgress, emit
from llmobs.cli.context import ctx_obj, is_interactive


def register(app: typer.Typer) -> None:
    app.command("restore")(restore)


def restore(
    ctx: typer.Context,
    backup_id: Annotated[
        str | None, typer.Argument(help="Backup to restore (`llmobs backup list`).", show_default=False)
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Point in time, ISO 8601 with a time zone (e.g. "
            "2025-03-01T14:30:00Z): the data as the stack had it then.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Restore PostgreSQL (physical backup, logical dump or point in time), Redis or Grafana. The
    services that write are stopped; the current data is kept aside (`llmobs backup kept-aside`)
    and put back if anything fails."""
    from llmobs.errors import Aborted, LlmobsError, UsageError

    obj = ctx_obj(ctx)
    try:
        from llmobs.backup.pitr import parse_target_time

        target = parse_target_time(to) if to else None
        if backup_id is None and target is None:
            raise UsageError("give a backup id or --to TIME", hint="`llmobs backup list` shows both")
        what = f"backup {backup_id}" if backup_id else ""
        what += (" " if what else "the data as it was at ") + (f"--to {to}" if backup_id and to else (to or ""))
        if not yes:
            if not is_interactive():
                raise Aborted("a restore replaces the live data; pass --yes to confirm without a terminal")
            typer.confirm(
                f"Restore {what.strip()}? The services that write stop meanwhile; the current data is kept aside.",
                abort=True,
            )
        from llmobs.backup.restore import run_restore
        from llmobs.backup.runner import delegate_restore, restore_site, runs_here

        if not runs_here(obj.settings):
            argv = [
                "restore",
                *([backup_id] if backup_id else []),
                *(["--to", to] if to else []),
                "--yes",
                *(["--json"] if json_ else []),
            ]
            if json_:
                raise typer.Exit(delegate_restore(obj.settings, argv, JsonProgress(), backup_id=backup_id))
            from llmobs.cli.progress import ConsoleProgress

            with ConsoleProgress(obj.err_console) as host_progress:
                code = delegate_restore(obj.settings, argv, host_progress, backup_id=backup_id)
            raise typer.Exit(code)
        from llmobs.secrets.store import redis_passwords_in_play

        site = restore_site(obj.settings, redis_passwords=redis_passwords_in_play)
        if json_:
            result = run_restore(obj.settings, site, backup_id=backup_id, target=target, progress=JsonProgress())
            emit({"event": "restored", **result.to_dict()})
            return
        from llmobs.cli.progress import ConsoleProgress

        with ConsoleProgress(obj.err_console) as progress:
            result = run_restore(obj.settings, site, backup_id=backup_id, target=target, progress=progress)
        where = f" (timeline {result.timeline})" if result.timeline else ""
        obj.console.print(f"restored {result.backup_id}{where}")
        if result.kept_aside:
            obj.console.print(
                f"the previous data is kept aside as {result.kept_aside}; remove it with "
                "`llmobs backup kept-aside remove NAME`"
            )
    except LlmobsError as exc:
        if json_:
            emit({"event": "error", "message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
        raise
