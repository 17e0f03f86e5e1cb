"""The `llmobs` command line. Command modules register here; each imports its heavy
dependencies only inside the functions that need them, so `llmobs --help` stays fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmobs import __version__
from llmobs.cli.context import CliContext

app = typer.Typer(
    name="llmobs",
    help="LLM Observatory: run a self-hosted observability stack for LLM applications.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"llmobs {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    project_dir: Annotated[
        Path | None,
        typer.Option(
            "--project-dir",
            "-C",
            help="Project directory (default: $LLMOBS_PROJECT_DIR, else the current "
            "directory or the nearest parent holding an llmobs .env).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = CliContext(project_dir_option=project_dir)


def _register() -> None:
    from llmobs.cli import (
        audit,
        backup,
        db,
        keys,
        lifecycle,
        prices,
        project,
        projects,
        restore,
        secrets,
        serve,
        stack,
        swarm,
    )

    for module in (
        project,
        stack,
        db,
        serve,
        keys,
        projects,
        lifecycle,
        prices,
        audit,
        secrets,
        backup,
        restore,
        swarm,
    ):
        module.register(app)


_register()


def run() -> None:
    """Entry point: expected failures become a message and an exit code, never a traceback."""
    from llmobs.errors import LlmobsError

    try:
        app()
    except LlmobsError as exc:
        from rich.console import Console
        from rich.markup import escape

        console = Console(stderr=True, highlight=False)
        console.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            console.print(f"[dim]hint:[/] {escape(exc.hint)}")
        if os.environ.get("LLMOBS_DEBUG"):
            raise
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
