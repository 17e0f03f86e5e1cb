"""`llmobs erase`, `llmobs export` and `llmobs import`: a project's data on request."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmobs.cli.context import ctx_obj, is_interactive
from llmobs.cli.render import print_json

if TYPE_CHECKING:
    from llmobs.cli.context import CliContext
    from llmobs.config import Settings
    from llmobs.store.erase import ErasureResult, Subject

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ProjectOpt = Annotated[str, typer.Option("--project", help="Project name.", show_default=False)]


def register(app: typer.Typer) -> None:
    app.command("erase")(erase)
    app.command("export")(export)
    app.command("import")(import_)


class _Progress:
    """A line on stderr at most every two seconds, and one at the end."""

    def __init__(self, obj: CliContext, verb: str) -> None:
        self.obj, self.verb = obj, verb
        self.shown = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        import time

        if time.monotonic() - self.shown < 2 and done != total:
            return
        self.shown = time.monotonic()
        of = f" of {total:,}" if total is not None else ""
        self.obj.err_console.print(f"{self.verb} {done:,}{of} spans", markup=False)


def _subject(user: str | None, session: str | None, trace: str | None) -> Subject:
    from llmobs.errors import UsageError
    from llmobs.store.erase import Subject

    given = [(kind, value) for kind, value in (("user", user), ("session", session), ("trace", trace)) if value]
    if len(given) != 1:
        raise UsageError("give exactly one of --user, --session or --trace")
    kind, value = given[0]
    return Subject(kind, value.lower() if kind == "trace" else value)  # type: ignore[arg-type]


def backups_note(settings: Settings) -> str:
    """What the operator must know after an erasure: backups still hold the data."""
    max_age = settings.get_int("BACKUP_PRUNE_MAX_AGE_DAYS")
    bound = (
        f"`llmobs backup prune` deletes backups older than {max_age} d (BACKUP_PRUNE_MAX_AGE_DAYS)"
        if max_age
        else "no upper bound is set: run `llmobs backup prune --max-age DAYS` (or set BACKUP_PRUNE_MAX_AGE_DAYS)"
    )
    return f"backups taken before now still hold this data until they expire; {bound}"


def _describe(result: ErasureResult) -> str:
    rows = ", ".join(f"{n} {table}" for table, n in result.rows.items())
    return f"{result.traces} trace(s): {rows}"


def erase(
    ctx: typer.Context,
    project: ProjectOpt,
    user: Annotated[str | None, typer.Option("--user", help="Erase this user's traces.", show_default=False)] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Erase this session's traces.", show_default=False)
    ] = None,
    trace: Annotated[str | None, typer.Option("--trace", help="Erase this trace.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be erased.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Erase a user's, session's or trace's data from a project: every trace in which some span
    carries that id, with everything stored against it, as stored now (data arriving later stays).
    Idempotent and audited. Backups keep the data until they expire."""
    from llmobs.errors import UsageError
    from llmobs.store import audit
    from llmobs.store.db import connect
    from llmobs.store.erase import erase as run_erase
    from llmobs.store.projects import RetentionDefaults, get_project

    obj = ctx_obj(ctx)
    subject = _subject(user, session, trace)
    with connect(obj.settings, "admin", autocommit=True) as conn:
        project_id = get_project(conn, project, RetentionDefaults.from_settings(obj.settings)).id

        def run(dry: bool) -> ErasureResult:
            return run_erase(conn, project_id, subject, dry_run=dry, actor=audit.cli_actor(), source=audit.cli_source())

        if not dry_run and not yes:
            if not is_interactive():
                raise UsageError("erasing needs confirmation; pass --yes to confirm without a terminal")
            counted = run(True)
            typer.confirm(
                f"Erase {_describe(counted)} of {subject.kind} {subject.id!r} in project {project}? "
                "This cannot be undone.",
                abort=True,
            )
        result = run(dry_run)
    _show_erasure(obj, result, project, json_)


def _show_erasure(obj: CliContext, result: ErasureResult, project: str, json_: bool) -> None:
    note = None if result.dry_run else backups_note(obj.settings)
    if json_:
        print_json({**result.to_dict(), "project": project, "backups": note})
        return
    verb = "would erase" if result.dry_run else "erased"
    obj.console.print(f"{verb} {_describe(result)} ({result.subject.kind} in project {project})")
    if note:
        obj.err_console.print(f"[yellow]note:[/] {note}")


def export(
    ctx: typer.Context,
    project: ProjectOpt,
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="A file, or s3://BUCKET/KEY (BACKUP_S3_* endpoint).", show_default=False),
    ],
    format_: Annotated[str, typer.Option("--format", help="jsonl, otlp or parquet.")] = "jsonl",
    from_: Annotated[
        str | None,
        typer.Option(
            "--from", help="Spans starting at or after this ISO 8601 time (default: the oldest).", show_default=False
        ),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="... and before this time (default: now).", show_default=False)
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Export a project's spans (with their messages) as jsonl, OTLP/JSON or parquet. Progress on
    stderr. Interrupted (even killed), the same command continues where it stopped."""
    from datetime import UTC, datetime, timedelta

    from llmobs.backup.export import ExportRequest, export_spans
    from llmobs.backup.pitr import parse_target_time
    from llmobs.store.db import connect
    from llmobs.store.projects import RetentionDefaults, get_project

    obj = ctx_obj(ctx)
    start = parse_target_time(from_) if from_ else datetime(1970, 1, 1, tzinfo=UTC)
    end = parse_target_time(to) if to else datetime.now(UTC) + timedelta(days=2)
    req = ExportRequest(project, start, end, format_, output, open_end=to is None)  # type: ignore[arg-type]
    req.check()
    with connect(obj.settings, "admin", autocommit=True) as conn:
        project_id = get_project(conn, project, RetentionDefaults.from_settings(obj.settings)).id
        staging = (obj.settings.project_dir or Path.cwd()) / "exports"
        result = export_spans(
            conn,
            obj.settings,
            project_id,
            req,
            staging_dir=staging,
            progress=_Progress(obj, "exported"),
            overwrite=overwrite,
        )
    if json_:
        print_json(
            {"project": project, "output": result.output, "spans": result.spans, "resumed_from": result.resumed_from}
        )
        return
    resumed = f" (resumed after {result.resumed_from:,})" if result.resumed_from else ""
    obj.console.print(f"exported {result.spans:,} spans of project {project} to {result.output}{resumed}")


def import_(
    ctx: typer.Context,
    file: Annotated[
        str, typer.Argument(help="A file written by `llmobs export`, or s3://BUCKET/KEY (format detected).")
    ],
    project: ProjectOpt,
    json_: JsonOpt = False,
) -> None:
    """Import spans exported by `llmobs export` into a project (created when missing). Spans the
    project already holds (same trace and span id) are skipped: running it twice is harmless."""
    from datetime import UTC, datetime

    from llmobs.backup.export import fetch_input, import_spans
    from llmobs.store.apikeys import ensure_project
    from llmobs.store.db import connect
    from llmobs.store.projects import RetentionDefaults, get_project

    obj = ctx_obj(ctx)
    defaults = RetentionDefaults.from_settings(obj.settings)
    path = fetch_input(obj.settings, file, (obj.settings.project_dir or Path.cwd()) / "exports")
    with connect(obj.settings, "admin", autocommit=True) as conn:
        project_id, created = ensure_project(conn, project)
        if created:
            obj.err_console.print(f"created project {project}", markup=False)
        cutoff = get_project(conn, project, defaults).span_cutoff(datetime.now(UTC))
        result = import_spans(
            conn, obj.settings, path, project_id, retention_cutoff=cutoff, progress=_Progress(obj, "read")
        )
    if json_:
        print_json({"project": project, "project_created": created, **result.__dict__})
        return
    obj.console.print(f"imported {result.inserted:,} spans into project {project}; {result.skipped:,} already there")
    if result.expired:
        obj.err_console.print(
            f"note: {result.expired:,} span(s) are older than the project's retention and go at the next "
            "`llmobs db maintain` (`llmobs projects set` changes the retention)",
            markup=False,
        )
