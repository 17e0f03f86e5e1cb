"""FastAPI dependencies: the process state, and the authenticated, rate-limited caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from llmobs.api import prom, session
from llmobs.api.auth import Principal
from llmobs.api.errors import ApiError
from llmobs.api.state import ApiState
from llmobs.store.apikeys import Role

bearer = HTTPBearer(auto_error=False, description="An API key (`llmobs_...`) or a JWT from `POST /api/v1/auth/token`.")


def state_of(request: Request) -> ApiState:
    return request.app.state.api


async def api_state(request: Request) -> ApiState:
    """The dependency (async: a sync one would cost a thread hop per request)."""
    return state_of(request)


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _declared_query(route: object) -> frozenset[str]:
    names = _QUERY_NAMES.get(id(route))
    if names is None:
        found: set[str] = set()
        todo = [getattr(route, "dependant", None)]
        while todo:  # the route's parameters and those of its dependencies
            dependant = todo.pop()
            if dependant is not None:
                found.update(p.alias for p in dependant.query_params)
                todo.extend(dependant.dependencies)
        names = _QUERY_NAMES[id(route)] = frozenset(found)
    return names


async def strict_query(request: Request) -> None:
    """Refuse query parameters the route does not declare: a misspelt filter is an error, not a
    silently wider result."""
    allowed = _declared_query(request.scope.get("route"))
    unknown = sorted({k for k in request.query_params if k not in allowed})
    if unknown:
        known = f"; known: {', '.join(sorted(allowed))}" if allowed else "; this endpoint takes none"
        raise ApiError(422, "validation_error", f"unknown query parameter(s): {', '.join(map(repr, unknown))}{known}")


async def identify(state: ApiState, token: str | None, client: str | None) -> Principal:
    """The principal of ``token``. ApiError 429 when ``client`` failed to authenticate too often
    this minute (AUTH_FAILURES_PER_MINUTE; its credentials are not looked up) unless they are not a
    guess: credentials this process accepted lately, or a JWT signed with this API's keys (clients
    behind one NAT share the limit). 401 when the credentials are missing or bad (bad ones are
    counted against ``client``)."""
    wait = state.auth_failures.retry_after(client, token) if token else 0
    if wait and token and state.auth.signed_here(token):
        wait = 0
    if wait:
        raise ApiError(
            429,
            "auth_rate_limited",
            f"too many failed authentications from this address; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    try:
        principal = await state.auth.principal(token)
    except ApiError as exc:
        if exc.status == 401 and token:  # a wrong guess; no credentials at all cost nothing to refuse
            state.auth_failures.failed(client, token)
        raise
    if token:
        state.auth_failures.succeeded(token)
    return principal


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer <credentials>`` header value."""
    scheme, _, credentials = (authorization or "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def presented_token(request: Request) -> str | None:
    """The credentials ``request`` presents, as :func:`caller` reads them: its ``Authorization:
    Bearer`` token, else the web UI's session cookie."""
    return bearer_token(request.headers.get("authorization")) or request.cookies.get(session.SESSION_COOKIE)


async def authenticate(request: Request, token: str | None) -> Principal:
    """The caller of ``request``, after taking one request from its rate limit."""
    state = state_of(request)
    principal = await identify(state, token, request.client.host if request.client else None)
    if state.limiter.enabled:
        decision = await state.limiter.check(principal.key_id)
        request.state.response_headers = decision.headers()
        if not decision.allowed:
            if decision.checked:
                prom.RATE_LIMITED.inc()
                raise ApiError(
                    429,
                    "rate_limited",
                    f"rate limit of {decision.limit} requests per minute exceeded; retry in {decision.retry_after} s",
                    headers=decision.headers(),
                )
            raise ApiError(
                503,
                "rate_limiter_unavailable",
                "the rate limiter (Redis) is unreachable and the API is "
                "set to refuse requests then (API_RATE_LIMIT_FAIL_OPEN=false)",
                headers={"Retry-After": str(decision.retry_after)},
            )
    request.state.principal = principal
    return principal


async def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Principal:
    """The caller by its ``Authorization`` header, else by the web UI's session cookie; a write
    made with the cookie must pass the CSRF check (:mod:`llmobs.api.session`)."""
    if credentials is not None:
        return await authenticate(request, credentials.credentials)
    token = request.cookies.get(session.SESSION_COOKIE)
    if token and request.method not in session.SAFE_METHODS:
        session.check_csrf(request, request.headers.get(session.CSRF_HEADER))
    return await authenticate(request, token)


def role_required(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that passes the caller's principal on when its key has ``role``, else answers 403."""

    async def check(principal: Principal = Depends(caller)) -> Principal:
        if not principal.allows(role):
            raise ApiError(403, "forbidden", f"this needs a key with the {role} role; this key has {principal.role}")
        return principal

    return check


Reader = Annotated[Principal, Depends(role_required("reader"))]
Writer = Annotated[Principal, Depends(role_required("writer"))]
Admin = Annotated[Principal, Depends(role_required("admin"))]
State = Annotated[ApiState, Depends(api_state)]
