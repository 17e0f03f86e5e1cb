"""OTLP log records of a trace or a span, and GenAI metric series (from OTLP metrics)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from llmobs.api.deps import Reader, State, strict_query
from llmobs.api.errors import error_responses
from llmobs.api.models import LogRecordList, SignalMetricsResult
from llmobs.api.params import From, Hex16, Hex32, Text, To, time_range
from llmobs.api.respond import json_response
from llmobs.api.routes.analytics import cached, now_minute
from llmobs.api.routing import StrictJsonRoute
from llmobs.api.state import ApiState
from llmobs.store import queries, signal_queries

router = APIRouter(
    prefix="/api/v1", tags=["signals"], dependencies=[Depends(strict_query)], route_class=StrictJsonRoute
)


async def _log_records(
    state: ApiState, project_id: int, *, trace_id: str | None = None, span_id: str | None = None
) -> Response:
    """``{"log_records", "truncated"}`` of a trace or a span."""
    rows = await state.db.read(
        project_id, lambda conn: signal_queries.log_records(conn, project_id, trace_id=trace_id, span_id=span_id)
    )
    truncated = len(rows) > signal_queries.MAX_LOG_RECORDS
    return json_response({"log_records": rows[: signal_queries.MAX_LOG_RECORDS], "truncated": truncated})


@router.get(
    "/traces/{trace_id}/logs",
    response_model=LogRecordList,
    summary="The OTLP log records of a trace (GenAI events among them), in time order",
    responses=error_responses(401, 403, 422, 429),
)
async def trace_logs(
    principal: Reader, state: State, trace_id: Annotated[str, Path(pattern=Hex32, description="32 hex characters.")]
) -> Response:
    return await _log_records(state, principal.project_id, trace_id=trace_id.lower())


@router.get(
    "/spans/{span_id}/logs",
    response_model=LogRecordList,
    summary="The OTLP log records of a span, in time order",
    responses=error_responses(401, 403, 422, 429),
)
async def span_logs(
    principal: Reader, state: State, span_id: Annotated[str, Path(pattern=Hex16, description="16 hex characters.")]
) -> Response:
    return await _log_records(state, principal.project_id, span_id=span_id.lower())


@router.get(
    "/metrics/series",
    response_model=SignalMetricsResult,
    summary="A GenAI metric received over OTLP (token usage, durations, time to first token) as time series",
    responses=error_responses(401, 403, 422, 429),
)
async def metric_series(
    principal: Reader,
    state: State,
    name: Annotated[
        str,
        Query(
            max_length=200,
            pattern=r"^gen_ai\.[^\x00]*$",
            description="The metric, e.g. gen_ai.client.token.usage, gen_ai.client.operation.duration, "
            "gen_ai.server.time_to_first_token.",
        ),
    ],
    from_: From = None,
    to: To = None,
    interval: Annotated[
        str, Query(max_length=8, description="auto, or one of: " + ", ".join(queries.INTERVALS))
    ] = "auto",
    group_by: Annotated[signal_queries.SignalGroup, Query(description="One series per value of this attribute.")] = (
        "none"
    ),
    service: Text = None,
    model: Text = None,
    provider: Text = None,
    operation: Text = None,
    token_type: Annotated[Text, Query(description="input or output (gen_ai.token.type).")] = None,
) -> Response:
    start, end = time_range(from_, to if to is not None else now_minute())
    req = signal_queries.SignalMetricsRequest(
        name,
        start,
        end,
        interval=interval,
        group_by=group_by,
        service=service,
        model=model,
        provider=provider,
        operation=operation,
        token_type=token_type,
    )
    resolved = req.resolved_interval()

    async def compute() -> dict[str, Any]:
        return await state.db.read(
            principal.project_id,
            lambda conn: signal_queries.signal_metric_series(conn, principal.project_id, req),
            may_lag=True,
        )

    key = {
        "name": name,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "interval": resolved,
        "group_by": group_by,
        "service": service,
        "model": model,
        "provider": provider,
        "operation": operation,
        "token_type": token_type,
    }
    return await cached(state, principal.project_id, "signal-metrics", key, compute)
