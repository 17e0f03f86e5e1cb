"""The ASGI application of ``llmobs serve api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from llmobs import __version__, http_guard
from llmobs.api import graphql
from llmobs.api.auth import Authenticator
from llmobs.api.cache import ResultCache
from llmobs.api.db import Database
from llmobs.api.errors import install_error_handlers
from llmobs.api.ingest import SpanIngest
from llmobs.api.middleware import AuthBeforeBody, RequestContext
from llmobs.api.ratelimit import RateLimiter
from llmobs.api.redis_link import RedisLink
from llmobs.api.routes import account, analytics, health, ingest, lifecycle, read, scores, signals, stream
from llmobs.api.state import ApiState
from llmobs.api.ui import mount_ui
from llmobs.auth_failures import FailedAuthLimiter
from llmobs.config import Settings
from llmobs.serving import setup_logging, tune_gc
from llmobs.store.key_events import follow_key_changes

DESCRIPTION = """Read (and write) the spans stored by LLM Observatory.

Authenticate with `Authorization: Bearer <API key>` or with a JWT from `POST /api/v1/auth/token`.
Every request sees only the project of its key. Errors are JSON: `{"error": {"code", "message",
"request_id"}}`. See docs/api.md."""


def create_app(settings: Settings) -> FastAPI:
    """The app for ``settings``. Configuration errors surface here, before any port is bound;
    connections open when the app starts (lifespan), and the app starts even while PostgreSQL or
    Redis are down (``/health/ready`` says so)."""
    db = Database(settings)
    redis = RedisLink(settings)
    state = ApiState(
        settings=settings,
        db=db,
        redis=redis,
        auth=Authenticator(settings, db),
        limiter=RateLimiter(redis, settings),
        cache=ResultCache(redis, settings.get_int("API_CACHE_TTL_SECONDS"), namespace=settings.get_str("DB_NAME")),
        ingest=SpanIngest(settings, db, redis),
        auth_failures=FailedAuthLimiter(settings.get_int("AUTH_FAILURES_PER_MINUTE")),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        await db.open()
        tune_gc()
        key_changes = asyncio.create_task(
            follow_key_changes(db.connect_kwargs, state.auth.forget, state.auth.forget_all), name="key-changes"
        )
        try:
            yield
        finally:
            key_changes.cancel()
            await db.close()
            await redis.close()

    app = FastAPI(
        title="LLM Observatory API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.api = state
    install_error_handlers(app)

    # stream before read: /api/v1/traces/stream must not be taken for a trace id; signals before
    # analytics: /api/v1/metrics/series is not the metrics endpoint.
    for module in (health, stream, read, scores, signals, analytics, ingest, account, lifecycle, graphql):
        app.include_router(module.router)

    origins = [o.strip() for o in settings.get_str("API_CORS_ORIGINS").split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "Retry-After",
                "X-Cache",
            ],
        )
    mount_ui(app)
    app.add_middleware(AuthBeforeBody)
    app.add_middleware(RequestContext)
    return app


def app_from_environment() -> FastAPI:
    """Factory for uvicorn worker processes: settings from the environment (see server.serve)."""

    settings = Settings.load(None)
    setup_logging(settings, "api-worker")
    http_guard.configure(settings)  # the limits live on the protocol class: set them in each worker
    return create_app(settings)
