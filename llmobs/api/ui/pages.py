"""The UI's pages and its sign-in, sign-out routes.

A page is a shell rendered for the signed-in caller (project, role, CSRF token); its JavaScript
module loads the data from ``/api/v1`` with the session cookie. Without a valid session a page
redirects to the sign-in page, which comes back to it afterwards.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from llmobs.api import session
from llmobs.api.auth import Principal
from llmobs.api.deps import state_of
from llmobs.api.errors import ApiError
from llmobs.api.params import Hex32
from llmobs.store import apikeys, ui_logins

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
#: Longest form body read (a sign-in form is a few hundred bytes).
MAX_FORM_BYTES = 8192


async def _principal(request: Request) -> Principal | None:
    """The caller of the session cookie, or None (no cookie, expired, revoked, rotated away)."""
    token = request.cookies.get(session.SESSION_COOKIE)
    if not token:
        return None
    try:
        return await state_of(request).auth.principal(token)
    except ApiError:
        return None


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path inside the UI, never another site."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ApiError(413, "payload_too_large", "form too large")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _render(request: Request, name: str, principal: Principal | None, status: int = 200, **extra: Any) -> Response:
    context = {"principal": principal, "csrf": session.csrf_token(request), **extra}
    return templates.TemplateResponse(request, name, context, status_code=status)


async def _page(request: Request, name: str, **extra: Any) -> Response:
    principal = await _principal(request)
    if principal is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)
    return _render(request, name, principal, **extra)


def _signed_in(request: Request, principal: Principal, target: str) -> Response:
    state = state_of(request)
    ttl = timedelta(seconds=state.settings.get_int("UI_SESSION_TTL_SECONDS"))
    issued = state.auth.signer.issue(
        key_id=principal.key_id, project_id=principal.project_id, role=principal.role, ttl=ttl
    )
    response = RedirectResponse(_safe_next(target), status_code=303)
    session.start_session(response, request, issued)
    return response


@router.get("", response_class=HTMLResponse)
async def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/", response_class=HTMLResponse)
async def traces_page(request: Request) -> Response:
    return await _page(request, "traces.html", nav="traces")


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
async def trace_page(request: Request, trace_id: Annotated[str, PathParam(pattern=Hex32)]) -> Response:
    return await _page(request, "trace.html", nav="traces", trace_id=trace_id.lower())


@router.get("/sessions", response_class=HTMLResponse)
async def sessions_page(request: Request) -> Response:
    return await _page(request, "sessions.html", nav="sessions")


@router.get("/sessions/{session_id}", response_class=HTMLResponse)
async def session_page(request: Request, session_id: Annotated[str, PathParam(max_length=200)]) -> Response:
    return await _page(request, "session.html", nav="sessions", session_id=session_id)


@router.get("/users", response_class=HTMLResponse)
async def users_page(request: Request) -> Response:
    return await _page(request, "users.html", nav="users")


@router.get("/overview", response_class=HTMLResponse)
async def overview_page(request: Request) -> Response:
    return await _page(request, "overview.html", nav="overview")


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/ui/") -> Response:
    return _render(request, "login.html", None, next=_safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Sign in with an API key pasted into the form (any role: reader keys browse)."""
    if not session.same_origin(request):
        raise ApiError(403, "csrf_failed", "cross-origin sign-in refused")
    form = await _form(request)
    target = _safe_next(form.get("next"))
    key = form.get("api_key", "").strip()
    if not key.startswith("llmobs_"):
        return _render(request, "login.html", None, 401, next=target, error="Paste an API key (llmobs_…).")
    try:
        principal = await state_of(request).auth.principal(key)
    except ApiError:
        return _render(request, "login.html", None, 401, next=target, error="That key is invalid, expired or revoked.")
    return _signed_in(request, principal, target)


@router.get("/login/link", response_class=HTMLResponse)
async def link_page(request: Request) -> Response:
    """The landing page of a one-time link (``#token=...``: the token stays in the browser, out of
    access logs): a button that posts it (a link preview that merely fetches the URL uses nothing
    up)."""
    return _render(request, "link.html", None)


@router.post("/login/link", response_class=HTMLResponse)
async def redeem_link(request: Request) -> Response:
    if not session.same_origin(request):
        raise ApiError(403, "csrf_failed", "cross-origin sign-in refused")
    token = (await _form(request)).get("token", "")
    state = state_of(request)
    key = None
    if token and len(token) <= 100:
        async with state.db.control() as conn:
            key_id = await ui_logins.aredeem_login(conn, token)
            key = await apikeys.aget_key(conn, key_id) if key_id else None
    if key is None or not key.active:
        error = "This sign-in link is invalid, expired or already used. Run `llmobs ui` for a new one."
        return _render(request, "login.html", None, 401, next="/ui/", error=error)
    return _signed_in(request, Principal(key.key_id, key.project_id, key.project, key.role, "jwt"), "/ui/")


@router.post("/logout", response_class=HTMLResponse)
async def logout(request: Request) -> Response:
    session.check_csrf(request, (await _form(request)).get(session.CSRF_FIELD))
    response = RedirectResponse("/ui/login", status_code=303)
    session.end_session(response, request)
    return response
