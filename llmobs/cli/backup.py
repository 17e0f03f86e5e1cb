"""`llmobs backup [create]|list|verify|prune|ship-wal|schedule|kept-aside`.

Safe from cron: no TTY needed (plain lines without one), a lock against overlap (exit code 3
when another backup operation runs), and ``--json`` prints one JSON object per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from llmobs.cli.context import CliContext, ctx_obj, is_interactive
from llmobs.cli.render import human_age, human_bytes, print_json

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per event on stdout, for scripts.")]
TypeOpt = Annotated[
    str,
    typer.Option(
        "--type",
        "-t",
        help="physical (pg_basebackup + WAL), logical (pg_dump -Fc), "
        "redis (RDB snapshot) or grafana (its data directory).",
    ),
]
NoUploadOpt = Annotated[bool, typer.Option("--no-upload", help="Keep the backup local even when S3 is set.")]
FromReplicaOpt = Annotated[
    bool,
    typer.Option(
        "--from-replica",
        help="Physical backup read from a replica (profile `ha`, through DB_READ_PORT); "
        "default: the setting BACKUP_FROM.",
    ),
]

backup_app = typer.Typer(
    help="Back up the stack: PostgreSQL (physical or logical), Redis and Grafana; "
    "list, verify and prune backups; run the backup schedule."
)


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")


class JsonProgress:
    """Progress as JSON lines: {"event": "step"|"done"|"warning", "message": ..., "at": ...}."""

    def _emit(self, event: str, message: str) -> None:
        emit({"event": event, "message": message})

    def step(self, message: str) -> None:
        self._emit("step", message)

    def done(self, message: str) -> None:
        self._emit("done", message)

    def warn(self, message: str) -> None:
        self._emit("warning", message)


def emit(event: dict[str, Any]) -> None:
    print_json({**event, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def run_command(
    obj: CliContext, json_: bool, argv: list[str], work: Callable[[Any], None], *, as_db_owner: bool = False
) -> None:
    """Run ``work(progress)`` here, or delegate ``llmobs ARGV`` into a compose job (a restore job,
    with the database volume, when ``as_db_owner``); with --json an expected failure is also an
    event."""
    from llmobs.errors import LlmobsError

    try:
        settings = obj.settings
        from llmobs.backup.runner import delegate, runs_here

        if not runs_here(settings):
            raise typer.Exit(delegate(settings, argv, as_db_owner=as_db_owner))
        if json_:
            work(JsonProgress())
            return
        from llmobs.cli.progress import ConsoleProgress

        with ConsoleProgress(obj.err_console) as progress:
            work(progress)
    except LlmobsError as exc:
        if not json_:
            raise
        # the error is this stream's last event; nothing else goes to stdout
        emit({"event": "error", "message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
        raise typer.Exit(exc.exit_code) from None


@backup_app.callback(invoke_without_command=True)
def backup_main(
    ctx: typer.Context,
    type_: TypeOpt = "physical",
    no_upload: NoUploadOpt = False,
    from_replica: FromReplicaOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Without a command: take a backup (as `llmobs backup create`)."""
    if ctx.invoked_subcommand is None:
        _create(ctx_obj(ctx), type_, no_upload, json_, from_replica)


@backup_app.command("create")
def create(
    ctx: typer.Context,
    type_: TypeOpt = "physical",
    no_upload: NoUploadOpt = False,
    from_replica: FromReplicaOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Take a backup. Physical backups end with a WAL switch, so the archive holds everything up
    to the backup. Prints the backup id."""
    _create(ctx_obj(ctx), type_, no_upload, json_, from_replica)


def _create(obj: CliContext, backup_type: str, no_upload: bool, json_: bool, from_replica: bool = False) -> None:
    argv = [
        "backup",
        "create",
        "--type",
        backup_type,
        *(["--no-upload"] if no_upload else []),
        *(["--from-replica"] if from_replica else []),
        *(["--json"] if json_ else []),
    ]

    def work(progress: Any) -> None:
        from llmobs.backup.jobs import create_backup

        entry = create_backup(
            obj.settings, backup_type, progress, upload=not no_upload, from_replica=True if from_replica else None
        )
        if json_:
            emit(
                {
                    "event": "backup.created",
                    "id": entry.id,
                    "type": entry.type,
                    "locations": entry.locations,
                    "size_bytes": entry.manifest.size_bytes,
                }
            )
        else:
            print(entry.id)

    run_command(obj, json_, argv, work)


@backup_app.command("list")
def list_(
    ctx: typer.Context,
    json_: JsonOpt = False,
    local: Annotated[bool, typer.Option("--local", help="Only the local repository (no S3 call).")] = False,
) -> None:
    """Every backup, local and in S3, and the window of time that can be restored."""
    obj = ctx_obj(ctx)

    def work(_progress: Any) -> None:
        from llmobs.backup.jobs import list_backups

        listing = list_backups(obj.settings, remote=not local)
        if json_:
            print_json(listing.to_dict())
            return
        _show_listing(obj, listing.to_dict())

    run_command(obj, json_, ["backup", "list", *(["--json"] if json_ else []), *(["--local"] if local else [])], work)


def _show_listing(obj: CliContext, data: dict[str, Any]) -> None:
    from datetime import UTC, datetime

    from rich.markup import escape
    from rich.table import Table

    for d in data["damaged"]:
        obj.console.print(f"[red]DAMAGED[/] {escape(d['id'])} ({d['type']}, {d['location']}): {escape(d['problem'])}")
    for a in data["failed_attempts"]:
        obj.console.print(
            f"[red]FAILED[/] {escape(a['id'])} ({a['type']}) at {a['at']}, step {escape(repr(a['step']))}: "
            + escape(a["error"])
        )
    if not data["backups"]:
        obj.console.print("no backups yet: take one with `llmobs backup`")
        return
    table = Table("id", "type", "finished", "size", "where", "WAL", "verified")
    now = datetime.now(UTC)
    for b in data["backups"]:
        finished = datetime.fromisoformat(b["finished_at"])
        wal = f"{b['wal_start']}..{b['wal_end'][-8:]}" if b.get("wal_start") else ""
        verified = {None: "-", True: "[green]yes[/]", False: "[red]FAILED[/]"}[b["verified"]]
        age = human_age((now - finished).total_seconds())
        table.add_row(
            b["id"],
            b["type"],
            f"{finished:%Y-%m-%d %H:%M:%S} ({age})",
            human_bytes(b["size_bytes"]),
            ",".join(b["locations"]),
            wal,
            verified,
        )
    obj.console.print(table)
    r = data["restorable"]
    if r["earliest"]:
        obj.console.print(
            f"point-in-time restore possible from {r['earliest']} to just before {r['latest']} "
            f"(timeline {data['timeline']})"
        )
        for w in r["windows"][:-1]:
            obj.console.print(f"[yellow]gap:[/] WAL missing at {w['gap']} after {w['latest']}")


@backup_app.command("verify")
def verify(
    ctx: typer.Context,
    backup_ids: Annotated[list[str] | None, typer.Argument(help="Backups to verify.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Verify every backup.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Check sha256 of every file, pg_verifybackup (physical), pg_restore --list (logical), and the
    WAL chain from each physical backup to the newest archived segment. Exit code 1 on any failure."""
    from llmobs.errors import UsageError

    obj = ctx_obj(ctx)
    if not backup_ids and not all_:
        raise UsageError("name the backups to verify, or pass --all")
    failed: list[str] = []

    def work(progress: Any) -> None:
        from llmobs.backup.jobs import verify_backups

        for r in verify_backups(obj.settings, backup_ids or None, progress):
            if json_:
                emit({"event": "verified", **r.to_dict()})
            else:
                mark = "[green]ok[/]" if r.ok else "[red]FAILED[/]"
                obj.console.print(f"{r.backup_id} ({r.backup_type}, {r.location}): {mark}")
                for c in r.checks:
                    obj.console.print(f"  {'✓' if c.ok else '✗'} {c.name}: {c.detail}", markup=False, soft_wrap=True)
            if not r.ok:
                failed.append(r.backup_id)

    run_command(
        obj,
        json_,
        ["backup", "verify", *(backup_ids or []), *(["--all"] if all_ else []), *(["--json"] if json_ else [])],
        work,
    )
    if failed:
        raise typer.Exit(1)


@backup_app.command("prune")
def prune(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be deleted.")] = False,
    max_age: Annotated[
        int | None,
        typer.Option(
            "--max-age",
            min=1,
            help="Days: delete every backup older than this, whatever the policy keeps (default: "
            "BACKUP_PRUNE_MAX_AGE_DAYS). Bounds how long erased data lives on in backups.",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Delete backups the retention policy (BACKUP_KEEP_*, BACKUP_RETENTION_DAYS,
    BACKUP_PRUNE_MAX_AGE_DAYS) does not keep, locally and in S3, and the WAL that no kept physical
    backup needs."""
    obj = ctx_obj(ctx)

    def work(_progress: Any) -> None:
        from llmobs.backup.jobs import prune_backups

        result = prune_backups(obj.settings, dry_run=dry_run, max_age_days=max_age)
        if json_:
            emit({"event": "pruned", **result.to_dict()})
            return
        verb = "would delete" if dry_run else "deleted"
        for backup_id, location in result.deleted:
            obj.console.print(f"{verb} {backup_id} ({location})")
        for location, names in result.wal_deleted.items():
            obj.console.print(f"{verb} {len(names)} WAL file(s) ({location}) older than {result.wal_kept_from}")
        obj.console.print(f"kept {len(result.kept)} backup(s)")

    argv = ["backup", "prune", *(["--dry-run"] if dry_run else []), *(["--json"] if json_ else [])]
    run_command(obj, json_, [*argv, *([f"--max-age={max_age}"] if max_age else [])], work)


@backup_app.command("ship-wal")
def ship_wal(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Copy archived WAL segments that S3 does not have yet (the scheduler does this every minute)."""
    obj = ctx_obj(ctx)

    def work(_progress: Any) -> None:
        from llmobs.backup.jobs import ship_wal as ship

        shipped = ship(obj.settings)
        if json_:
            emit({"event": "wal.shipped", "count": len(shipped), "last": shipped[-1] if shipped else None})
        else:
            obj.console.print(f"shipped {len(shipped)} WAL file(s)")

    run_command(obj, json_, ["backup", "ship-wal", *(["--json"] if json_ else [])], work)


@backup_app.command("schedule")
def schedule(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Run the backup schedule until stopped (BACKUP_SCHEDULE_* cron expressions, UTC). This is the
    compose stack's `backup` service."""
    from llmobs.progress import LogProgress

    obj = ctx_obj(ctx)

    def show(event: dict[str, Any]) -> None:
        if json_:
            emit(event)
        else:
            details = " ".join(f"{k}={v}" for k, v in event.items() if k != "event")
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {event['event']} {details}", flush=True)

    def work(_progress: Any) -> None:
        from llmobs.backup.schedule import run_schedule

        run_schedule(obj.settings, LogProgress("llmobs.backup"), show)

    from llmobs.backup.runner import runs_here
    from llmobs.errors import UsageError

    if not runs_here(obj.settings):
        raise UsageError(
            "the compose runtime runs the schedule as its `backup` service", hint="`llmobs up --profile backup`"
        )
    work(None)


@backup_app.command("finish-restore", hidden=True)
def finish_restore(ctx: typer.Context) -> None:
    """Undo a restore that was interrupted: run in a restore job by the compose runtime's `llmobs up`
    (the local runtime does it itself before PostgreSQL starts)."""
    obj = ctx_obj(ctx)

    def work(progress: Any) -> None:
        from llmobs.backup.restore import finish_interrupted_job
        from llmobs.backup.runner import restore_site

        done = finish_interrupted_job(obj.settings, restore_site(obj.settings), progress)
        if done:
            progress.warn(done)

    run_command(obj, False, ["backup", "finish-restore"], work, as_db_owner=True)


kept_app = typer.Typer(
    help="What restores kept aside (previous data directory, database, Redis and "
    "Grafana data): listed, and removed only here.",
    invoke_without_command=True,
)
backup_app.add_typer(kept_app, name="kept-aside")


def _kept_context(obj: CliContext) -> tuple[Any, Any]:
    from llmobs.backup.paths import BackupPaths
    from llmobs.stack.layout import LocalLayout

    settings = obj.settings
    pgdata = settings.get_str("BACKUP_PGDATA_DIR")
    if pgdata:  # a compose restore job: the database volume
        from pathlib import Path

        return BackupPaths.from_settings(settings), Path(pgdata)
    return BackupPaths.from_settings(settings), (
        LocalLayout(settings.project_dir).pgdata if settings.project_dir else None
    )


@kept_app.callback(invoke_without_command=True)
def kept_list(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """List what restores kept aside."""
    if ctx.invoked_subcommand is not None:
        return
    obj = ctx_obj(ctx)

    def work(_progress: Any) -> None:
        from llmobs.backup.kept_aside import find_kept_aside

        paths, pgdata = _kept_context(obj)
        items = find_kept_aside(obj.settings, paths, pgdata)
        if json_:
            print_json({"kept_aside": [i.to_dict() for i in items]})
            return
        if not items:
            obj.console.print("nothing is kept aside")
        for i in items:
            when = f", kept {i.kept_at:%Y-%m-%d %H:%M:%S}" if i.kept_at else ""
            obj.console.print(
                f"{i.name}  {i.kind}  {human_bytes(i.size_bytes)}{when}  {i.location}", markup=False, soft_wrap=True
            )

    run_command(obj, json_, ["backup", "kept-aside", *(["--json"] if json_ else [])], work, as_db_owner=True)


@kept_app.command("remove")
def kept_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name from `llmobs backup kept-aside`.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete one kept-aside item for good."""
    from llmobs.errors import Aborted

    obj = ctx_obj(ctx)
    if not yes:
        if not is_interactive():
            raise Aborted("removing kept-aside data needs confirmation; pass --yes")
        typer.confirm(f"Delete {name} for good?", abort=True)

    def work(_progress: Any) -> None:
        from llmobs.backup.jobs import audit_action
        from llmobs.backup.kept_aside import remove_kept_aside

        paths, pgdata = _kept_context(obj)
        item = remove_kept_aside(obj.settings, paths, pgdata, name)
        audit_action(obj.settings, "backup.kept_aside.remove", item.name, item.to_dict())
        obj.console.print(f"removed {item.name} ({item.kind}, {human_bytes(item.size_bytes)})")

    run_command(obj, False, ["backup", "kept-aside", "remove", name, "--yes"], work, as_db_owner=True)
