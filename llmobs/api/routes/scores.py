"""Scores and feedback on traces: ``POST`` (writer keys, and the web UI's thumbs) and ``GET``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from llmobs.api.deps import Reader, State, Writer, strict_query
from llmobs.api.errors import ApiError, error_responses, not_found
from llmobs.api.models import Score, ScoreIn, ScoreList
from llmobs.api.params import Hex32
from llmobs.api.respond import json_response
from llmobs.store import scores

router = APIRouter(prefix="/api/v1", tags=["scores"], dependencies=[Depends(strict_query)])
TraceId = Annotated[str, Path(pattern=Hex32, description="32 hex characters.")]


@router.post(
    "/traces/{trace_id}/scores",
    response_model=Score,
    status_code=201,
    summary="Score a trace (writer)",
    responses=error_responses(401, 403, 404, 422, 429),
)
async def add_score(body: ScoreIn, principal: Writer, state: State, trace_id: TraceId) -> Response:
    if body.value is None and body.label is None:
        raise ApiError(422, "validation_error", "a score needs a numeric value, a label, or both")
    trace_id = trace_id.lower()
    async with state.db.write(principal.project_id) as conn:
        if not await scores.trace_exists(conn, principal.project_id, trace_id):
            raise not_found(f"trace {trace_id}")
        row = await scores.add_score(
            conn,
            principal.project_id,
            principal.key_id,
            scores.NewScore(
                trace_id=trace_id,
                name=body.name,
                value=body.value,
                label=body.label,
                comment=body.comment,
                source=body.source,
                span_id=body.span_id.lower() if body.span_id else None,
            ),
        )
    return json_response(row, status=201)


@router.get(
    "/traces/{trace_id}/scores",
    response_model=ScoreList,
    summary="The scores of a trace",
    responses=error_responses(401, 403, 422, 429),
)
async def list_scores(principal: Reader, state: State, trace_id: TraceId) -> Response:
    rows = await state.db.read(
        principal.project_id, lambda conn: scores.trace_scores(conn, principal.project_id, trace_id.lower())
    )
    return json_response({"scores": rows})
