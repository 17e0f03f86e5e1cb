"""`llmobs init` and `llmobs doctor`: creating a project and checking the machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmobs.cli.context import ctx_obj
from llmobs.cli.render import print_json


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("doctor")(doctor)


def init(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Argument(help="Project directory (default: --project-dir or the current directory).", show_default=False),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Rewrite an existing .env, keeping its values and generating only missing secrets."
        ),
    ] = False,
    runtime: Annotated[str | None, typer.Option(help="Write LLMOBS_RUNTIME (auto, compose or local).")] = None,
) -> None:
    """Create a project: a .env (mode 0600) with every setting and strong generated secrets."""
    from llmobs.config import init_project

    obj = ctx_obj(ctx)
    target = directory or obj.project_dir_option or Path.cwd()
    result = init_project(target, force=force, overrides={"LLMOBS_RUNTIME": runtime} if runtime else None)
    verb = "created" if result.created else "rewrote"
    obj.console.print(f"{verb} {result.env_file} (mode 0600)")
    if result.generated:
        obj.console.print(f"generated secrets: {', '.join(result.generated)}")
    obj.console.print("next: [bold]llmobs up[/] (from that directory, or with --project-dir)")


def doctor(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check what each runtime needs on this machine (PostgreSQL and redis-server for local;
    Docker engine and compose plugin for compose), free ports and disk space, with fixes.
    Exit code 1 when neither runtime can run."""
    from llmobs.config import Settings
    from llmobs.errors import LlmobsError
    from llmobs.stack.doctor import run_checks, runtime_ready

    obj = ctx_obj(ctx)
    try:
        settings: Settings | None = obj.settings
    except LlmobsError:
        settings = None
    running = False
    if settings is not None:
        from llmobs.stack.runtime import remembered

        running = bool(remembered(settings))
    checks = run_checks(settings, stack_running=running)
    ready = {rt: runtime_ready(checks, rt) for rt in ("local", "compose")}
    if json_:
        print_json({"checks": [c.__dict__ for c in checks], "ready": ready})
    else:
        from rich.table import Table

        table = Table("scope", "check", "result", "detail", "fix")
        marks = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
        for c in checks:
            table.add_row(c.scope, c.name, marks[c.verdict], c.detail, c.hint)
        obj.console.print(table)
        for rt, ok in ready.items():
            obj.console.print(f"{rt} runtime: " + ("[green]ready[/]" if ok else "[red]not ready[/]"))
    raise typer.Exit(0 if any(ready.values()) else 1)
