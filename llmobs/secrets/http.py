"""Small HTTP requests to the stack's web services (the API, Grafana) with the standard library:
credentials go in headers and bodies, never in a URL."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from llmobs.errors import LlmobsError


def base_url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def request(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    service: str = "the service",
) -> tuple[int, bytes]:
    """Status and body of one request; LlmobsError when ``service`` cannot be reached."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise LlmobsError(
            f"cannot reach {service} at {url.split('/', 3)[2]}: {exc.reason}", hint="is the stack up? (`llmobs status`)"
        ) from None
