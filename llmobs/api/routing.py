"""The route class of every API router: request bodies decoded as strict JSON.

Python's ``json`` (what FastAPI uses) accepts escapes of lone surrogates (``"\\ud800"``) and
makes strings that cannot be encoded again: the request then fails deep inside (PostgreSQL's
driver, the cache) with a 500. orjson refuses them while parsing, so such a body is answered
like any other invalid JSON: ``400 invalid_json``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        """The body as JSON; ``json.JSONDecodeError`` (orjson's is one) for invalid JSON,
        lone surrogates included."""
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
