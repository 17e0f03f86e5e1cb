"""The `llmobs` command line. Command modules register here; each imports its heavy
dependencies only inside the functions that need them, so `llmobs --help` stays fast."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmobs import __version__
from llmobs.cli.context import CliContext
from llmobs.errors import LlmobsError

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
        ui,
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
        ui,
    ):
        module.register(app)


_register()


def _report(exc: LlmobsError) -> None:
    """The error as the command's output format: with ``--json``, one JSON document on stdout
    (scripts parse stdout; nothing else is printed there), else ``error:``/``hint:`` on stderr."""
    if "--json" in sys.argv[1:]:
        error = {"message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
        print(json.dumps({"error": error}))
        return
    from rich.markup import escape

    from llmobs.cli.context import make_console

    console = make_console(stderr=True)
    console.print(f"[bold red]error:[/] {escape(exc.message)}")
    if exc.hint:
        console.print(f"[dim]hint:[/] {escape(exc.hint)}")


def run() -> None:
    """Entry point: expected failures become a message and an exit code, never a traceback."""
    try:
        app()
    except LlmobsError as exc:
        _report(exc)
        if os.environ.get("LLMOBS_DEBUG"):
            raise
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
