"""Liveness, readiness and Prometheus metrics (no authentication)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from llmobs import __version__
from llmobs.api import prom
from llmobs.api.deps import State, strict_query
from llmobs.api.models import Health, Readiness
from llmobs.api.respond import json_response
from llmobs.api.routing import StrictJsonRoute

router = APIRouter(tags=["health"], dependencies=[Depends(strict_query)], route_class=StrictJsonRoute)


INSTANCE = f"{socket.gethostname()}:{os.getpid()}"


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Response:
    return json_response({"status": "ok", "version": __version__, "instance": INSTANCE})


async def _timed(check: Awaitable[tuple[bool, str]]) -> dict:
    started = time.perf_counter()
    ok, detail = await check
    return {"ok": ok, "detail": detail, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


@router.get(
    "/health/ready",
    response_model=Readiness,
    summary="Readiness: PostgreSQL and Redis reachable",
    responses={
        503: {
            "model": Readiness,
            "description": "PostgreSQL down (unavailable) or Redis down (degraded: reads still work)",
        }
    },
)
async def ready(state: State) -> Response:
    database, redis = await asyncio.gather(_timed(state.db.ping()), _timed(state.redis.ping()))
    if not database["ok"]:
        status = "unavailable"
    elif not redis["ok"]:
        status = "degraded"
    else:
        status = "ok"
    return json_response(
        {"status": status, "version": __version__, "checks": {"database": database, "redis": redis}},
        status=200 if status == "ok" else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    body, content_type = prom.exposition()
    return Response(body, media_type=content_type)
