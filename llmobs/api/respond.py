"""JSON responses serialised with orjson straight from dicts (the hot paths skip model validation;
:mod:`llmobs.api.models` describes their shape)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from fastapi.responses import Response


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(data: Any) -> bytes:
    return orjson.dumps(data, default=_default)


def json_response(
    data: Any = None, *, body: bytes | None = None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        body if body is not None else to_json(data), status_code=status, headers=headers, media_type="application/json"
    )
