"""Browser sessions of the web UI: a JWT in an HttpOnly cookie, and CSRF protection for writes.

The session cookie holds a token from :class:`llmobs.api.tokens.TokenSigner` (``SECRET_KEY`` and
its ``kid``), so secret rotation treats it like any API token and revoking its key ends it. The
cookie is HttpOnly, ``SameSite=Strict`` and ``Secure`` when the request came over TLS.

Writes authenticated by the cookie must also pass a double-submit check: the CSRF token (a
random value in a second cookie, also rendered into each page) sent back in the ``X-CSRF-Token``
header or a ``csrf`` form field, and an ``Origin`` (when the browser sends one) equal to the
page's own. A cross-site page can neither read the token nor send the cookie (``Strict``).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from llmobs.api.errors import ApiError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from llmobs.api.tokens import IssuedToken

SESSION_COOKIE = "llmobs_session"
CSRF_COOKIE = "llmobs_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
COOKIE_PATH = "/"


def is_tls(request: Request) -> bool:
    """Whether the browser reached us over TLS (directly, or through the stack's TLS proxy)."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def start_session(response: Response, request: Request, issued: IssuedToken) -> None:
    """Set the session and CSRF cookies on ``response`` for ``issued``."""
    max_age = max(0, int((issued.expires_at - datetime.now(UTC)).total_seconds()))
    secure = is_tls(request)
    response.set_cookie(
        SESSION_COOKIE, issued.token, max_age=max_age, path=COOKIE_PATH, httponly=True, secure=secure, samesite="strict"
    )
    response.set_cookie(
        CSRF_COOKIE,
        secrets.token_urlsafe(24),
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        secure=secure,
        samesite="strict",
    )


def end_session(response: Response, request: Request) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path=COOKIE_PATH, httponly=True, secure=is_tls(request), samesite="strict")


def csrf_token(request: Request) -> str:
    """The CSRF token of the request's session ("" without one): rendered into pages."""
    return request.cookies.get(CSRF_COOKIE, "")


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin than the host it asked.
    A ``Host`` without a port (the stack's proxy forwards nginx's ``$host``) is compared by name."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "").lower()
    parsed = urlsplit(origin.lower())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False  # "null" (opaque origins: sandboxed frames, data: URLs) and the like
    if urlsplit(f"//{host}").port is None:
        return parsed.hostname == urlsplit(f"//{host}").hostname
    return parsed.netloc == host


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse (403 ``csrf_failed``) a cookie-authenticated write whose CSRF token or origin is wrong."""
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not same_origin(request):
        raise ApiError(403, "csrf_failed", "cross-origin write refused")
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise ApiError(403, "csrf_failed", f"missing or wrong CSRF token (send the page's token in {CSRF_HEADER})")
