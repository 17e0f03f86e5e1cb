"""Spans and traces: one span, one trace as a tree, and the trace list."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from llmobs.api.deps import Reader, State, strict_query
from llmobs.api.errors import error_responses, not_found
from llmobs.api.log_messages import read_span, read_trace_spans
from llmobs.api.models import Span, Trace, TraceList
from llmobs.api.params import From, Hex16, Hex32, Text, To, time_range
from llmobs.api.respond import json_response
from llmobs.api.routing import StrictJsonRoute
from llmobs.api.trace_tree import build_trace
from llmobs.store import queries

router = APIRouter(prefix="/api/v1", tags=["traces"], dependencies=[Depends(strict_query)], route_class=StrictJsonRoute)


@router.get(
    "/spans/{span_id}", response_model=Span, summary="One span", responses=error_responses(401, 403, 404, 422, 429)
)
async def get_span(
    principal: Reader, state: State, span_id: Annotated[str, Path(pattern=Hex16, description="16 hex characters.")]
) -> Response:
    row = await state.db.read(principal.project_id, lambda conn: read_span(conn, principal.project_id, span_id.lower()))
    if row is None:
        raise not_found(f"span {span_id}")
    return json_response(row)


@router.get(
    "/traces/{trace_id}",
    response_model=Trace,
    summary="One trace as a tree of spans, with totals",
    responses=error_responses(401, 403, 404, 422, 429),
)
async def get_trace(
    principal: Reader, state: State, trace_id: Annotated[str, Path(pattern=Hex32, description="32 hex characters.")]
) -> Response:
    rows = await state.db.read(
        principal.project_id, lambda conn: read_trace_spans(conn, principal.project_id, trace_id.lower())
    )
    if not rows:
        raise not_found(f"trace {trace_id}")
    truncated = len(rows) > queries.MAX_TRACE_SPANS
    return json_response(build_trace(rows[: queries.MAX_TRACE_SPANS], truncated=truncated))


@router.get(
    "/traces",
    response_model=TraceList,
    summary="Traces in a time range, filtered, sorted and paged",
    responses=error_responses(401, 403, 422, 429),
)
async def list_traces(
    principal: Reader,
    state: State,
    from_: From = None,
    to: To = None,
    service: Annotated[Text, Query(description="Some span of the trace has this service.name.")] = None,
    model: Annotated[Text, Query(description="Some span used this model (response or request model).")] = None,
    provider: Annotated[Text, Query(description="Some span called this provider.")] = None,
    status: Annotated[
        Literal["ok", "error"] | None, Query(description="error: some span failed; ok: none did.")
    ] = None,
    user_id: Annotated[Text, Query(description="Some span has this user id.")] = None,
    session_id: Annotated[Text, Query(description="Some span has this session id.")] = None,
    name: Annotated[Text, Query(description="The root span has this name.")] = None,
    q: Annotated[
        Text,
        Query(
            description='Full-text search over the messages of the trace\'s spans (words, "a phrase", -word, or); '
            "served by an index."
        ),
    ] = None,
    min_duration_ms: Annotated[
        float | None, Query(ge=0, allow_inf_nan=False, description="Root span at least this long.")
    ] = None,
    min_cost_usd: Annotated[
        float | None, Query(ge=0, allow_inf_nan=False, description="Trace cost at least this much.")
    ] = None,
    score_name: Annotated[Text, Query(description="Some score of the trace has this name (`thumbs`, ...).")] = None,
    score_label: Annotated[Text, Query(description="... and this label (needs score_name).")] = None,
    min_score: Annotated[
        float | None, Query(allow_inf_nan=False, description="... and a value at least this (needs score_name).")
    ] = None,
    max_score: Annotated[
        float | None, Query(allow_inf_nan=False, description="... and a value at most this (needs score_name).")
    ] = None,
    sort: Annotated[
        queries.TraceSort, Query(description="Root start time, root duration, or trace cost.")
    ] = "start_time",
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page.")] = None,
) -> Response:
    start, end = time_range(from_, to)
    f = queries.TraceFilter(
        start,
        end,
        service=service,
        model=model,
        provider=provider,
        status=status,
        user_id=user_id,
        session_id=session_id,
        name=name,
        min_duration_ms=min_duration_ms,
        min_cost_usd=min_cost_usd,
        q=q,
        score_name=score_name,
        score_label=score_label,
        min_score=min_score,
        max_score=max_score,
    )
    descending = order == "desc"
    page_cursor = queries.TraceCursor.decode(cursor, sort, descending) if cursor else None
    page = await state.db.read(
        principal.project_id,
        lambda conn: queries.list_traces(
            conn, principal.project_id, f, sort=sort, descending=descending, limit=limit, cursor=page_cursor
        ),
        may_lag=True,
    )
    return json_response({"traces": page.traces, "next_cursor": page.next_cursor})
