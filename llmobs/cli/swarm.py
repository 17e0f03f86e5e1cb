"""`llmobs swarm render`: the stack as a Docker Swarm stack file (see docs/scaling.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmobs.cli.context import ctx_obj

swarm_app = typer.Typer(help="Run the stack on Docker Swarm.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(swarm_app, name="swarm")


@swarm_app.command("render")
def render(
    ctx: typer.Context,
    replicas: Annotated[
        list[str] | None,
        typer.Argument(help="SERVICE=N pairs for the replicated services, e.g. api=3 collector=2.", show_default=False),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the file here (mode 0600) instead of printing it.", show_default=False
        ),
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option("--profile", help="Compose profiles to include (admin, backup).", show_default=False),
    ] = None,
) -> None:
    """Render a stack file for `docker stack deploy` from the project's compose configuration:
    host-mode ports, DNS round-robin endpoints, packaged files as configs, hashed secret names."""
    from llmobs.config import write_private_file
    from llmobs.errors import UsageError
    from llmobs.stack.compose import ComposeStack
    from llmobs.stack.swarm import render_stack_yaml

    counts: dict[str, int] = {}
    for item in replicas or []:
        name, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise UsageError(f"{item!r} is not SERVICE=N (for example api=3)")
        counts[name] = int(count)
    text = render_stack_yaml(ComposeStack(ctx_obj(ctx).settings, profiles=tuple(profile or ())), counts)
    if output is None:
        print(text, end="")
    else:
        write_private_file(output, text)
        print(f"wrote {output}; deploy with: docker stack deploy --resolve-image never -c {output} STACK")
