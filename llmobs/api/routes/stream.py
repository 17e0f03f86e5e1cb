"""``GET /api/v1/traces/stream``: server-sent events of new traces of the caller's project.

The collector (and ``POST /api/v1/spans``) publish each committed trace on the Redis channel
``llmobs:traces:<project_id>``; a stream subscribes to its caller's channel only. When Redis goes
away the stream stays open, says so in a ``status`` event, and resubscribes when Redis returns
(announcements published meanwhile are not replayed: pub/sub keeps nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError

from llmobs.api.deps import Reader, State, strict_query
from llmobs.api.errors import error_responses
from llmobs.api.redis_link import client_for
from llmobs.api.routing import StrictJsonRoute

if TYPE_CHECKING:
    from llmobs.config import Settings

log = logging.getLogger("llmobs.api.stream")
router = APIRouter(prefix="/api/v1", tags=["traces"], dependencies=[Depends(strict_query)], route_class=StrictJsonRoute)

#: Seconds between keep-alive comments (proxies close idle connections).
HEARTBEAT = 15.0
RECONNECT_MAX = 5.0


def _event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def _events(request: Request, state_settings: Settings, project_id: int) -> AsyncIterator[bytes]:
    channel = f"llmobs:traces:{project_id}"
    yield b"retry: 3000\n\n"
    # A client of its own: a subscribed connection cannot serve other commands, and a blocking
    # read must not be cut by the short timeout of the shared client.
    client = client_for(state_settings, timeout=None)
    delay = 0.5
    announced = None  # the Redis state last told to the client: say each change once
    try:
        while not await request.is_disconnected():
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                yield _event("status", {"redis": "connected", "channel": channel})
                announced = "connected"
                delay = 0.5
                last_sent = time.monotonic()
                while not await request.is_disconnected():
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        try:
                            data = orjson.loads(message["data"])
                        except orjson.JSONDecodeError:
                            continue
                        if isinstance(data, dict) and data.get("project_id") == project_id:
                            yield _event("trace", data)
                            last_sent = time.monotonic()
                    elif time.monotonic() - last_sent >= HEARTBEAT:
                        yield b": keep-alive\n\n"
                        last_sent = time.monotonic()
            except (RedisError, OSError) as exc:
                if announced != "unavailable":
                    log.info("trace stream lost redis (%s); retrying", type(exc).__name__)
                    yield _event("status", {"redis": "unavailable"})
                    announced = "unavailable"
                else:
                    yield b": keep-alive\n\n"
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX, delay * 2)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
    finally:
        await client.aclose()


@router.get(
    "/traces/stream",
    summary="Server-sent events of new traces",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: trace` per new trace "
            "(JSON: project_id, trace_id, span_count, service_name, root_name, start_time, "
            "has_error); `event: status` when the Redis link changes.",
        },
        **error_responses(401, 403, 429),
    },
)
async def stream(request: Request, principal: Reader, state: State) -> StreamingResponse:
    return StreamingResponse(
        _events(request, state.settings, principal.project_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
