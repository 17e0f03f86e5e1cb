"""Data lifecycle of the key's project (admin keys only): its retention, and erasure on request
of one user's, session's or trace's data."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from llmobs.api.auth import Principal
from llmobs.api.deps import Admin, State, strict_query
from llmobs.api.errors import ApiError, error_responses
from llmobs.api.models import ErasureResult, ProjectInfo, ProjectRetentionChange
from llmobs.api.params import Hex32
from llmobs.api.respond import json_response
from llmobs.api.routing import StrictJsonRoute
from llmobs.api.state import ApiState
from llmobs.errors import UsageError
from llmobs.store import erase as erasure
from llmobs.store.db import APP_GROUP_ROLE, connect
from llmobs.store.projects import RetentionChange, RetentionDefaults, aget_project_by_id, aset_retention

router = APIRouter(
    prefix="/api/v1", tags=["lifecycle"], dependencies=[Depends(strict_query)], route_class=StrictJsonRoute
)

_SCOPE_SQL = "SELECT set_config('llmobs.project_id', %s, true)"
DryRun = Annotated[bool, Query(description="Only count what would be erased.")]
SubjectId = Annotated[str, Path(min_length=1, max_length=erasure.MAX_SUBJECT_ID, pattern=r"^[^\x00]+$")]


@router.get(
    "/project",
    response_model=ProjectInfo,
    summary="The key's project and its retention (admin)",
    responses=error_responses(401, 403, 429),
)
async def get_project(principal: Admin, state: State) -> Response:
    defaults = RetentionDefaults.from_settings(state.settings)
    async with state.db.control() as conn:
        await conn.execute(_SCOPE_SQL, (str(principal.project_id),))  # the oldest span is read under RLS
        project = await aget_project_by_id(conn, principal.project_id, defaults)
    return json_response(project.to_dict())


@router.patch(
    "/project",
    response_model=ProjectInfo,
    summary="Change the project's retention (admin, audited)",
    responses=error_responses(400, 401, 403, 422, 429),
)
async def set_project_retention(
    principal: Admin, state: State, request: Request, body: ProjectRetentionChange
) -> Response:
    defaults = RetentionDefaults.from_settings(state.settings)
    async with state.db.control() as conn:
        await conn.execute(_SCOPE_SQL, (str(principal.project_id),))
        current = await aget_project_by_id(conn, principal.project_id, defaults)
        given = body.model_fields_set
        change = RetentionChange(
            body.retention_days if "retention_days" in given else current.own_retention_days,
            body.rollup_retention_days if "rollup_retention_days" in given else current.own_rollup_retention_days,
        )
        try:
            project = await aset_retention(
                conn,
                principal.project_id,
                change,
                defaults,
                actor=principal.actor,
                source=request.client.host if request.client else None,
            )
        except UsageError as exc:
            raise ApiError(422, "invalid_retention", exc.message) from None
    return json_response(project.to_dict())


def _erase_sync(
    state: ApiState, principal: Principal, subject: erasure.Subject, dry_run: bool, source: str | None
) -> erasure.ErasureResult:
    """The erasure on a connection of its own, as the app's group role scoped to the key's project
    (row-level security applies, as to every API write). Its batches commit one by one, which the
    pooled single-transaction helpers cannot do."""
    from psycopg import sql

    with connect(state.settings, "app", autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_GROUP_ROLE)))
        conn.execute("SELECT set_config('llmobs.project_id', %s, false)", (str(principal.project_id),))
        return erasure.erase(conn, principal.project_id, subject, dry_run=dry_run, actor=principal.actor, source=source)


async def _erase(
    request: Request, state: ApiState, principal: Principal, kind: erasure.SubjectKind, subject_id: str, dry_run: bool
) -> Response:
    subject = erasure.Subject(kind, subject_id.lower() if kind == "trace" else subject_id)
    source = request.client.host if request.client else None
    result = await asyncio.to_thread(_erase_sync, state, principal, subject, dry_run, source)
    return json_response(result.to_dict())


_ERASE_DOC = (
    "Deletes every trace of the key's project in which some span carries this id, with everything "
    "stored against those traces, as stored when the request arrived (data stored later stays). "
    "Idempotent; audited. Backups keep the data until they expire (`llmobs backup prune --max-age`)."
)


@router.delete(
    "/users/{user_id}",
    response_model=ErasureResult,
    summary="Erase a user's data (admin)",
    description=_ERASE_DOC,
    responses=error_responses(401, 403, 422, 429),
)
async def erase_user(
    principal: Admin, state: State, request: Request, user_id: SubjectId, dry_run: DryRun = False
) -> Response:
    return await _erase(request, state, principal, "user", user_id, dry_run)


@router.delete(
    "/sessions/{session_id}",
    response_model=ErasureResult,
    summary="Erase a session's data (admin)",
    description=_ERASE_DOC,
    responses=error_responses(401, 403, 422, 429),
)
async def erase_session(
    principal: Admin, state: State, request: Request, session_id: SubjectId, dry_run: DryRun = False
) -> Response:
    return await _erase(request, state, principal, "session", session_id, dry_run)


@router.delete(
    "/traces/{trace_id}",
    response_model=ErasureResult,
    summary="Erase a trace (admin)",
    description=_ERASE_DOC,
    responses=error_responses(401, 403, 422, 429),
)
async def erase_trace(
    principal: Admin,
    state: State,
    request: Request,
    trace_id: Annotated[str, Path(pattern=Hex32, description="32 hex characters.")],
    dry_run: DryRun = False,
) -> Response:
    return await _erase(request, state, principal, "trace", trace_id, dry_run)
