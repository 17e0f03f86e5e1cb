"""`llmobs ui`: print the web UI's address and a one-time sign-in link."""

from __future__ import annotations

from typing import Annotated

import typer

from llmobs.cli.context import ctx_obj
from llmobs.cli.render import print_json


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)


def ui(
    ctx: typer.Context,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Id of the API key to sign in as (see `llmobs keys list`; a reader key browses "
            "read-only). Default: the default project's admin key (LLMOBS_ADMIN_API_KEY).",
            show_default=False,
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Print a one-time link that signs a browser in to the web UI. The link works once, within
    UI_LOGIN_LINK_TTL_SECONDS; only its hash is stored."""
    from datetime import timedelta

    from llmobs.errors import UsageError
    from llmobs.stack.health import ui_url
    from llmobs.store import apikeys, audit, ui_logins
    from llmobs.store.db import connect

    obj = ctx_obj(ctx)
    settings = obj.settings
    key_id = key or apikeys.key_id_of(settings.secret("LLMOBS_ADMIN_API_KEY"))
    if not key_id:
        raise UsageError("LLMOBS_ADMIN_API_KEY is not a valid API key: name a key with --key")
    ttl = timedelta(seconds=settings.get_int("UI_LOGIN_LINK_TTL_SECONDS"))
    with connect(settings, "admin", autocommit=True) as conn, conn.transaction():
        found = apikeys.get_key(conn, key_id)
        if found is None or not found.active:
            raise UsageError(f"API key {key_id} does not exist or is revoked or expired", hint="llmobs keys list")
        token = ui_logins.create_login(conn, key_id, ttl)
        audit.record(
            conn,
            "ui.login_link",
            actor=audit.cli_actor(),
            project_id=found.project_id,
            target=key_id,
            source=audit.cli_source(),
        )
    base = ui_url(settings)
    # In the fragment: browsers never send it, so it reaches no server log and no Referer.
    link = f"{base}login/link#token={token}"
    if json_:
        print_json({"ui_url": base, "login_url": link, "key": key_id, "project": found.project, "role": found.role})
        return
    obj.console.print(f"web UI: {base}")
    obj.console.print(
        f"sign in as key {key_id} ({found.project}, {found.role}), once, within {int(ttl.total_seconds() // 60)} min:"
    )
    print(link)
