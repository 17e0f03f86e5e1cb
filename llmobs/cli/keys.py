"""`llmobs keys create|list|revoke`: API keys of the projects (admin actions, audited)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from llmobs.cli.context import ctx_obj, is_interactive
from llmobs.cli.render import print_json

if TYPE_CHECKING:
    from llmobs.store.apikeys import ApiKey

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _key_json(key: ApiKey) -> dict:
    return {
        "id": key.key_id,
        "project": key.project,
        "name": key.name,
        "role": key.role,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "last_used_at": key.last_used_at,
        "active": key.active,
    }


def _state(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "[red]revoked[/]"
    if not key.active:
        return "[yellow]expired[/]"
    return "[green]active[/]"


@keys_app.command("create")
def create(
    ctx: typer.Context,
    project: Annotated[str, typer.Option(help="Project of the key; created when it does not exist.")] = "default",
    role: Annotated[str, typer.Option(help="reader (read only), writer (send spans, read) or admin.")] = "reader",
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    expires: Annotated[
        int | None,
        typer.Option("--expires", min=1, help="Days until the key expires (default: never).", show_default=False),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Create an API key. The key is printed once: it is stored hashed and cannot be shown again."""
    from llmobs.store import apikeys, audit
    from llmobs.store.db import connect

    obj = ctx_obj(ctx)
    if role not in apikeys.ROLES:
        from llmobs.errors import UsageError

        raise UsageError(f"unknown role {role!r}; choose one of: {', '.join(apikeys.ROLES)}")
    with connect(obj.settings, "admin", autocommit=True) as conn:
        created = apikeys.create_key(
            conn,
            project=project,
            role=role,
            name=name,
            expires_in_days=expires,
            actor=audit.cli_actor(),
            source=audit.cli_source(),
        )
    if json_:
        print_json({**_key_json(created.key), "token": created.token, "project_created": created.project_created})
        return
    if created.project_created:
        obj.console.print(f"created project [bold]{project}[/]")
    obj.console.print(
        f"created {role} key [bold]{created.key.key_id}[/] for project {project}"
        + (f", expires {created.key.expires_at:%Y-%m-%d %H:%M %Z}" if created.key.expires_at else "")
    )
    obj.console.print("key (shown only now, store it safely):")
    # Plain print: no wrapping or markup, so the key can be copied or piped as is.
    print(created.token)


@keys_app.command("list")
def list_(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List API keys (ids, roles, state, last use; never the keys themselves)."""
    from llmobs.store import apikeys
    from llmobs.store.db import connect

    obj = ctx_obj(ctx)
    with connect(obj.settings, "admin", autocommit=True) as conn:
        keys = apikeys.list_keys(conn, project)
    if json_:
        print_json([_key_json(k) for k in keys])
        return
    from rich.table import Table

    table = Table("id", "project", "role", "name", "state", "created", "expires", "last used")
    for k in keys:
        table.add_row(
            k.key_id,
            k.project,
            k.role,
            k.name,
            _state(k),
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.expires_at:%Y-%m-%d %H:%M}" if k.expires_at else "never",
            f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never",
        )
    obj.console.print(table)


@keys_app.command("revoke")
def revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="Id of the key (the 12 characters after `llmobs_`).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Revoke an API key: requests with it (and tokens issued for it) are refused from then on."""
    from llmobs.errors import Aborted
    from llmobs.store import apikeys, audit
    from llmobs.store.db import connect

    obj = ctx_obj(ctx)
    with connect(obj.settings, "admin", autocommit=True) as conn:
        if not yes:
            key = apikeys.get_key(conn, key_id)
            if key is not None and key.revoked_at is None:
                if not is_interactive():
                    raise Aborted("revoking a key needs confirmation; pass --yes to confirm without a terminal")
                typer.confirm(
                    f"Revoke {key.role} key {key_id} ({key.name or 'no name'}) of project {key.project}?", abort=True
                )
        key = apikeys.revoke(conn, key_id, actor=audit.cli_actor(), source=audit.cli_source())
    if json_:
        print_json(_key_json(key))
        return
    obj.console.print(f"revoked key {key.key_id} of project {key.project}")
