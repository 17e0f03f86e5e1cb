"""Tokens for API keys, and the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials

from llmobs.api.deps import Admin, State, authenticate, bearer, strict_query
from llmobs.api.errors import ApiError, error_responses
from llmobs.api.models import AuditList, IsoDateTime, TokenResult
from llmobs.api.respond import json_response
from llmobs.api.routing import StrictJsonRoute
from llmobs.store import audit

router = APIRouter(prefix="/api/v1", tags=["auth"], dependencies=[Depends(strict_query)], route_class=StrictJsonRoute)


@router.post(
    "/auth/token",
    response_model=TokenResult,
    summary="Exchange an API key for a JWT",
    responses=error_responses(401, 429),
)
async def issue_token(
    request: Request, state: State, credentials: HTTPAuthorizationCredentials | None = Security(bearer)
) -> Response:
    token = credentials.credentials if credentials else None
    if token and not token.startswith("llmobs_"):
        raise ApiError(
            401,
            "unauthorized",
            "tokens are issued for API keys only: send the API key",
            headers={"WWW-Authenticate": 'Bearer realm="llmobs"'},
        )
    principal = await authenticate(request, token)
    issued = state.auth.signer.issue(key_id=principal.key_id, project_id=principal.project_id, role=principal.role)
    return json_response(
        {
            "access_token": issued.token,
            "token_type": "bearer",
            "expires_in": int((issued.expires_at - datetime.now(UTC)).total_seconds()),
            "expires_at": issued.expires_at,
            "project": principal.project,
            "role": principal.role,
        }
    )


@router.get(
    "/audit",
    response_model=AuditList,
    tags=["audit"],
    summary="The project's audit log (admin)",
    responses=error_responses(401, 403, 422, 429),
)
async def audit_log(
    principal: Admin,
    state: State,
    since: Annotated[IsoDateTime | None, Query(description="Only entries at or after this time.")] = None,
    action: Annotated[
        str | None,
        Query(max_length=100, pattern=r"^[a-z0-9_.]+$", description="Only this action (key.create, key.revoke, ...)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    async with state.db.control() as conn:
        entries = await audit.aentries(
            conn, audit.AuditQuery(project_id=principal.project_id, action=action, since=since, limit=limit)
        )
    return json_response(
        {
            "entries": [
                {
                    "id": e.id,
                    "at": e.at,
                    "project": e.project,
                    "actor": e.actor,
                    "action": e.action,
                    "target": e.target,
                    "source": e.source,
                    "details": e.details,
                }
                for e in entries
            ]
        }
    )
