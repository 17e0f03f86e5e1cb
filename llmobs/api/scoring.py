"""Recording a score of a trace: one implementation for REST and GraphQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmobs.api.errors import ApiError, not_found
from llmobs.store import scores

if TYPE_CHECKING:
    from llmobs.api.auth import Principal
    from llmobs.api.models import ScoreIn
    from llmobs.api.state import ApiState


async def record_score(state: ApiState, principal: Principal, trace_id: str, body: ScoreIn) -> dict[str, Any]:
    """Store ``body`` as a score of ``trace_id`` (lowercase hex) in the caller's project and return
    it. ApiError 403 for a key below writer, 422 for a score with neither value nor label, 404 when
    the project has no such trace."""
    if not principal.allows("writer"):
        raise ApiError(403, "forbidden", f"scoring needs a key with the writer role; this key has {principal.role}")
    if body.value is None and body.label is None:
        raise ApiError(422, "validation_error", "a score needs a numeric value, a label, or both")
    async with state.db.write(principal.project_id) as conn:
        if not await scores.trace_exists(conn, principal.project_id, trace_id):
            raise not_found(f"trace {trace_id}")
        return await scores.add_score(
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
