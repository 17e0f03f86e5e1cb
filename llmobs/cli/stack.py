"""`llmobs init|up|down|status|logs|scale|doctor` (being written by the lead)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
