"""`llmobs audit`: who did which admin action, when, from where."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from llmobs.cli.context import ctx_obj
from llmobs.cli.render import print_json


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)


def _since(text: str | None) -> datetime | None:
    """``2024-05-01``, an ISO time, or a relative age: ``30m``, ``12h``, ``7d``."""
    from llmobs.errors import UsageError

    if not text:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: give an ISO time (2024-05-01T12:00Z) or an age (30m, 12h, 7d)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def audit(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="Only this project's entries.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (key.create, key.revoke, ...).")] = None,
    since: Annotated[str | None, typer.Option(help="Only entries since: an ISO time or an age (30m, 12h, 7d).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many entries, newest first.")] = 50,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show the audit log of admin actions (key creation and revocation, restores, rotations)."""
    from llmobs.errors import UsageError
    from llmobs.store.audit import AuditQuery, entries
    from llmobs.store.db import connect

    obj = ctx_obj(ctx)
    with connect(obj.settings, "admin", autocommit=True) as conn:
        project_id = None
        if project is not None:
            row = conn.execute("SELECT id FROM projects WHERE name = %s", (project,)).fetchone()
            if row is None:
                raise UsageError(f"no project named {project!r}")
            project_id = row[0]
        found = entries(conn, AuditQuery(project_id=project_id, action=action, since=_since(since), limit=limit))
    if json_:
        print_json(
            [
                {
                    "id": e.id,
                    "at": e.at,
                    "project": e.project,
                    "actor": e.actor,
                    "action": e.action,
                    "target": e.target,
                    "source": e.source,
                    "details": e.details,
                }
                for e in found
            ]
        )
        return
    from rich.table import Table

    table = Table("time", "project", "actor", "action", "target", "from", "details")
    for e in found:
        details = ", ".join(f"{k}={v}" for k, v in e.details.items() if v not in (None, ""))
        table.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}", e.project or "-", e.actor, e.action, e.target or "", e.source or "", details
        )
    obj.console.print(table)
