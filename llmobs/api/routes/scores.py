"""Scores and feedback on traces: ``POST`` (writer keys, and the web UI's thumbs) and ``GET``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from llmobs.api.deps import Reader, State, Writer, strict_query
from llmobs.api.errors import error_responses
from llmobs.api.models import Score, ScoreIn, ScoreList
from llmobs.api.params import Hex32
from llmobs.api.respond import json_response
from llmobs.api.routing import StrictJsonRoute
from llmobs.api.scoring import record_score
from llmobs.store import scores

router = APIRouter(prefix="/api/v1", tags=["scores"], dependencies=[Depends(strict_query)], route_class=StrictJsonRoute)
TraceId = Annotated[str, Path(pattern=Hex32, description="32 hex characters.")]


@router.post(
    "/traces/{trace_id}/scores",
    response_model=Score,
    status_code=201,
    summary="Score a trace (writer)",
    responses=error_responses(400, 401, 403, 404, 422, 429),
)
async def add_score(body: ScoreIn, principal: Writer, state: State, trace_id: TraceId) -> Response:
    return json_response(await record_score(state, principal, trace_id.lower(), body), status=201)


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
