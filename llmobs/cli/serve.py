"""`llmobs serve api|collector`: the two servers of the stack (what the api and collector
services run, in containers and in the local runtime)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from llmobs.cli.context import command_group, ctx_obj

if TYPE_CHECKING:
    from llmobs.config import Settings

serve_app = command_group("Run one of the stack's servers in the foreground.")


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")


def server_settings(ctx: typer.Context) -> Settings:
    """Settings for a server: the project's when one is found, else the environment alone
    (containers pass configuration as environment variables and *_FILE secrets)."""
    from llmobs.config import Settings
    from llmobs.errors import LlmobsError

    obj = ctx_obj(ctx)
    try:
        return obj.settings
    except LlmobsError:
        if obj.project_dir_option is not None:
            raise
        return Settings.load(None)


@serve_app.command("api")
def serve_api(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (default: BIND_ADDRESS).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: API_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port.")] = 1,
) -> None:
    """Serve the REST/GraphQL API (uvicorn)."""
    from llmobs.api.server import serve
    from llmobs.serving import die_with_supervisor

    die_with_supervisor()
    serve(server_settings(ctx), host=host, port=port, workers=workers)


@serve_app.command("collector")
def serve_collector(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (default: BIND_ADDRESS).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Processes sharing the OTLP ports (default: COLLECTOR_WORKERS).", show_default=False),
    ] = None,
) -> None:
    """Serve the OTLP collector: gRPC, HTTP, and the metrics/health port."""
    from llmobs.collector.main import serve
    from llmobs.serving import die_with_supervisor

    die_with_supervisor()
    serve(server_settings(ctx), host=host, workers=workers)
