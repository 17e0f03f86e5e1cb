"""Aggregates: structured queries over spans, and metrics time series from the rollups.

Both results are cached in Redis for ``API_CACHE_TTL_SECONDS`` under a key holding the project
(``X-Cache: hit|miss`` says which). A request without an explicit ``to`` means "until now" and is
cached under the minute it was asked in, so repeated dashboard refreshes share an entry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from llmobs.api.deps import Reader, State, strict_query
from llmobs.api.errors import error_responses
from llmobs.api.models import MetricsResult, QueryRequest, QueryResult
from llmobs.api.params import From, Text, To, time_range
from llmobs.api.respond import json_response, to_json
from llmobs.api.routing import StrictJsonRoute
from llmobs.api.state import ApiState
from llmobs.store import queries
from llmobs.store import scores as score_store

router = APIRouter(
    prefix="/api/v1", tags=["analytics"], dependencies=[Depends(strict_query)], route_class=StrictJsonRoute
)


def now_minute() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)


async def cached(
    state: ApiState, project_id: int, kind: str, request: Any, compute: Callable[[], Awaitable[Any]]
) -> Response:
    async def body() -> bytes:
        return to_json(await compute())

    content, hit = await state.cache.fetch(state.cache.key(project_id, kind, request), body)
    return json_response(body=content, headers={"X-Cache": "hit" if hit else "miss"})


@router.post(
    "/query",
    response_model=QueryResult,
    summary="Aggregate spans: filters, group-by, aggregates",
    responses=error_responses(400, 401, 403, 422, 429),
)
async def query(body: QueryRequest, principal: Reader, state: State) -> Response:
    to = body.to if body.to is not None else now_minute()
    start, end = time_range(body.from_, to)
    q = queries.SpanQuery(
        start=start,
        end=end,
        filters=[queries.Filter(f.field, f.op, f.value) for f in body.filters],
        group_by=body.group_by,
        aggregates=[queries.Aggregate(a.fn, a.field, a.alias) for a in body.aggregates],
        order_by=[queries.Order(o.key, o.desc) for o in body.order_by],
        limit=body.limit,
        bucket=queries.INTERVALS[body.bucket] if body.bucket else None,
    )
    queries.compile_span_query(principal.project_id, q)  # refuse a bad query before the cache

    async def compute() -> dict[str, Any]:
        result = await state.db.read(
            principal.project_id, lambda conn: queries.run_span_query(conn, principal.project_id, q), may_lag=True
        )
        return {"columns": result.columns, "rows": result.rows, "truncated": result.truncated}

    key = body.model_dump(mode="json", by_alias=True) | {"from": start.isoformat(), "to": end.isoformat()}
    return await cached(state, principal.project_id, "query", key, compute)


@router.get(
    "/metrics",
    response_model=MetricsResult,
    summary="Time series from the rollups",
    responses=error_responses(401, 403, 422, 429),
)
async def metrics(
    principal: Reader,
    state: State,
    from_: From = None,
    to: To = None,
    interval: Annotated[
        str, Query(max_length=8, description="auto, or one of: " + ", ".join(queries.INTERVALS))
    ] = "auto",
    group_by: Annotated[queries.MetricsGroup, Query(description="One series per model, provider or service.")] = "none",
    service: Text = None,
    model: Text = None,
    provider: Text = None,
    spans: Annotated[
        Literal["llm", "all"],
        Query(description="llm: count LLM calls only (spans with a model or provider); all: every span."),
    ] = "llm",
    scores: Annotated[
        bool, Query(description="Add `score_series`: per score name, count and average value per bucket.")
    ] = False,
) -> Response:
    start, end = time_range(from_, to if to is not None else now_minute())
    req = queries.MetricsRequest(
        start,
        end,
        interval=interval,
        group_by=group_by,
        service=service,
        model=model,
        provider=provider,
        llm_only=spans == "llm",
    )
    resolved = req.resolved_interval()

    async def compute() -> dict[str, Any]:
        interval_name, source, series = await state.db.read(
            principal.project_id, lambda conn: queries.metric_series(conn, principal.project_id, req), may_lag=True
        )
        extra = {}
        if scores:
            step = queries.INTERVALS[interval_name]
            extra["score_series"] = await state.db.read(
                principal.project_id,
                lambda conn: score_store.score_series(conn, principal.project_id, start, end, step),
                may_lag=True,
            )
        return extra | {
            "from": start,
            "to": end,
            "interval": interval_name,
            "group_by": group_by,
            "source": source,
            "series": series,
        }

    key = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "interval": resolved,
        "group_by": group_by,
        "service": service,
        "model": model,
        "provider": provider,
        "spans": spans,
        "scores": scores,
    }
    return await cached(state, principal.project_id, "metrics", key, compute)
