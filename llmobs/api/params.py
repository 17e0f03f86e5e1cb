"""Query parameters shared by several routes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Query

from llmobs.api.models import IsoDateTime
from llmobs.store.queries import check_range

DEFAULT_RANGE = timedelta(hours=24)

From = Annotated[
    IsoDateTime | None,
    Query(
        alias="from",
        description="Start of the time range (inclusive, ISO 8601; naive times are UTC). Default: 24 h before `to`.",
    ),
]
To = Annotated[IsoDateTime | None, Query(description="End of the time range (exclusive). Default: now.")]
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]
Hex32 = r"^[0-9a-fA-F]{32}$"
Hex16 = r"^[0-9a-fA-F]{16}$"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def time_range(
    start: datetime | None, end: datetime | None, default: timedelta = DEFAULT_RANGE
) -> tuple[datetime, datetime]:
    """The range a request asks for, with defaults; "from must be before to" otherwise."""
    end = _utc(end) if end is not None else datetime.now(UTC)
    if start is not None:
        start = _utc(start)
    else:
        try:
            start = end - default
        except OverflowError:
            start = datetime.min.replace(tzinfo=UTC)
    check_range(start, end)
    return start, end
