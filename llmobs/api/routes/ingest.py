"""``POST /api/v1/spans``: store spans sent as JSON (writer role)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response

from llmobs.api.deps import State, Writer, strict_query
from llmobs.api.errors import error_responses
from llmobs.api.ingest import SpanIn
from llmobs.api.models import IngestResult
from llmobs.api.respond import json_response
from llmobs.api.routing import StrictJsonRoute

router = APIRouter(prefix="/api/v1", tags=["ingest"], dependencies=[Depends(strict_query)], route_class=StrictJsonRoute)


@router.post(
    "/spans",
    response_model=IngestResult,
    status_code=201,
    summary="Store one span or a list of spans (normalized and priced like the collector does)",
    responses=error_responses(400, 401, 403, 413, 422, 429),
)
async def post_spans(
    principal: Writer,
    state: State,
    body: Annotated[SpanIn | list[SpanIn], Body(description="A span, or a list of up to 1000.")],
) -> Response:
    spans = body if isinstance(body, list) else [body]
    rows = await state.ingest.write(spans, principal.project_id)
    return json_response({"accepted": len(rows), "trace_ids": sorted({r.trace_id for r in rows})}, status=201)
