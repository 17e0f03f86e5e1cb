"""The web UI at ``/ui/``: a trace explorer served by ``llmobs serve api`` (see docs/ui.md).

Pages are server-rendered Jinja2 shells; small JavaScript modules (``static/``, shipped in the
wheel, no build step) fetch their data from the REST API with the session cookie, so every read
goes through the API's authentication, rate limits and row-level security. No inline script or
style: the Content-Security-Policy forbids both.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from llmobs.api.ui.pages import router
from llmobs.api.ui.security import SecurityHeaders

STATIC_DIR = Path(__file__).parent / "static"


def mount_ui(app: FastAPI) -> None:
    """Add the UI's pages, its static assets and its security headers to ``app``."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.add_middleware(SecurityHeaders)
