"""`llmobs prices list|set|import`: the model price table the collector computes costs from.

Prices are USD per million tokens. The collector reloads the table every
COLLECTOR_PRICE_REFRESH_SECONDS, so changes apply within a minute without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmobs.cli.context import command_group, ctx_obj
from llmobs.cli.render import print_json

if TYPE_CHECKING:
    from llmobs.collector.pricing import PriceRule

prices_app = command_group("List and change model prices (USD per million tokens) used to compute span costs.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ProjectOpt = Annotated[
    str | None, typer.Option(help="A project's own prices (they override the global ones).", show_default=False)
]


def register(app: typer.Typer) -> None:
    app.add_typer(prices_app, name="prices")


def _table(rules: list[PriceRule], title: str | None = None):
    """The rules as a rich table. Patterns, names and titles are escaped: the seeded patterns
    hold ``[/.]``, which rich would otherwise read as markup (and fail on)."""
    from rich.markup import escape
    from rich.table import Table

    def money(v: float | None) -> str:
        return "-" if v is None else f"{v:g}"

    table = Table(
        "pattern",
        "provider",
        "project",
        "input",
        "output",
        "cached in",
        "cache write",
        "reasoning",
        "valid from",
        "source",
        title=escape(title) if title else None,
    )
    for r in rules:
        table.add_row(
            escape(r.model_pattern),
            escape(r.provider or "any"),
            escape(r.project or "all"),
            money(r.input_per_mtok),
            money(r.output_per_mtok),
            money(r.cached_input_per_mtok),
            money(r.cache_write_per_mtok),
            money(r.reasoning_per_mtok),
            r.valid_from.isoformat(),
            escape(r.source),
        )
    return table


@prices_app.command("list")
def list_(
    ctx: typer.Context,
    project: ProjectOpt = None,
    model: Annotated[
        str | None, typer.Option(help="Show only the price that applies to this model name today.", show_default=False)
    ] = None,
    provider: Annotated[
        str | None, typer.Option(help="With --model: the span's provider (gen_ai.system).", show_default=False)
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """List the prices (global ones and, with --project, that project's overrides)."""
    from datetime import UTC, datetime

    from llmobs.collector.normalize import provider_name
    from llmobs.collector.pricing import Pricing, list_prices, project_id_of
    from llmobs.store.db import connect

    obj = ctx_obj(ctx)
    with connect(obj.settings, "admin", autocommit=True) as conn:
        rules = list_prices(conn, project=project)
        project_id = project_id_of(conn, project) if project else 0
    if model is not None:
        found = Pricing(rules).find(project_id, provider_name(provider), model, datetime.now(UTC).date())
        if json_:
            print_json(found.to_dict() if found else None)
        elif found is None:
            obj.console.print(
                f"no price applies to {model!r}: its spans get no cost (add one with `llmobs prices set`)",
                markup=False,
            )
        else:
            obj.console.print(_table([found], title=f"price applied to {model}"))
        raise typer.Exit(0 if found else 1)
    if json_:
        print_json([r.to_dict() for r in rules])
    else:
        obj.console.print(_table(rules))


@prices_app.command("set")
def set_(
    ctx: typer.Context,
    pattern: Annotated[
        str,
        typer.Argument(
            help="Case-insensitive regex searched in the model name, e.g. '(^|/)gpt-4o(-\\d{4}-\\d{2}-\\d{2})?$'."
        ),
    ],
    input_: Annotated[float, typer.Option("--input", min=0, help="USD per million input tokens.")],
    output: Annotated[float, typer.Option(min=0, help="USD per million output tokens.")],
    cached_input: Annotated[
        float | None,
        typer.Option(min=0, help="USD per million cached (cache read) input tokens (default: the input price)."),
    ] = None,
    cache_write: Annotated[
        float | None, typer.Option(min=0, help="USD per million cache-write tokens (default: the input price).")
    ] = None,
    reasoning: Annotated[
        float | None, typer.Option(min=0, help="USD per million reasoning tokens (default: the output price).")
    ] = None,
    provider: Annotated[
        str | None, typer.Option(help="Apply only to spans from this provider (e.g. groq).", show_default=False)
    ] = None,
    project: ProjectOpt = None,
    valid_from: Annotated[str, typer.Option(help="First day (YYYY-MM-DD) the price applies to.")] = "2000-01-01",
    json_: JsonOpt = False,
) -> None:
    """Add a price, or change the one with the same pattern, provider, project and valid-from date."""
    from llmobs.collector.pricing import project_id_of, rule_from_fields, set_price
    from llmobs.store import audit
    from llmobs.store.db import connect

    obj = ctx_obj(ctx)
    fields = {
        "model_pattern": pattern,
        "input_per_mtok": input_,
        "output_per_mtok": output,
        "cached_input_per_mtok": cached_input,
        "cache_write_per_mtok": cache_write,
        "reasoning_per_mtok": reasoning,
        "provider": provider,
        "valid_from": valid_from,
    }
    with connect(obj.settings, "admin") as conn:
        project_id = project_id_of(conn, project) if project else None
        rule = rule_from_fields(fields, where="price", project_id=project_id, project=project)
        saved = set_price(conn, rule, actor=audit.cli_actor())
        conn.commit()
    if json_:
        print_json(saved.to_dict())
    else:
        obj.console.print(_table([saved], title="saved"))


@prices_app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV (with a header) or JSON list of objects with model_pattern, "
            "input_per_mtok, output_per_mtok and optionally "
            "cached_input_per_mtok, cache_write_per_mtok, reasoning_per_mtok, "
            "provider, valid_from."
        ),
    ],
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Add or update many prices from a file, all or nothing."""
    from llmobs.collector.pricing import import_prices
    from llmobs.store import audit
    from llmobs.store.db import connect

    obj = ctx_obj(ctx)
    with connect(obj.settings, "admin") as conn:
        saved = import_prices(conn, file, project=project, actor=audit.cli_actor())
        conn.commit()
    if json_:
        print_json([r.to_dict() for r in saved])
    else:
        obj.console.print(f"imported {len(saved)} price(s) from {file}")
