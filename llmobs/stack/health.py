"""Health probes, the same for every runtime: they reach services over their published ports.

PostgreSQL: a real login and query. Redis: AUTH + PING. Our servers and the web UIs: HTTP GET
of their health path.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmobs.stack.services import Service

if TYPE_CHECKING:
    from llmobs.config import Settings


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    latency_ms: float | None
    detail: str = ""
    version: str | None = None


def probe(service: Service, settings: Settings, *, timeout: float = 2.0) -> ProbeResult:
    started = time.monotonic()
    try:
        if service.probe == "postgres":
            version = _probe_postgres(settings, timeout)
        elif service.probe == "redis":
            version = _probe_redis(settings, timeout)
        elif service.health_path:
            version = _probe_http(service, settings, timeout)
        else:
            return ProbeResult(True, None, "no probe")
    except Exception as exc:  # any failure of a probe is an unhealthy service, described
        return ProbeResult(False, _ms(started), _describe(exc))
    return ProbeResult(True, _ms(started), "", version)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _describe(exc: BaseException) -> str:
    from llmobs.store.db import first_line

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return first_line(exc)


def _probe_postgres(settings: Settings, timeout: float) -> str:
    import psycopg

    from llmobs.store.db import connect_kwargs

    kwargs = connect_kwargs(settings, "admin", dbname="postgres", connect_timeout=max(1, int(timeout)))
    with psycopg.connect(**kwargs) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0].split()[0]}" if row else "PostgreSQL"


def _probe_redis(settings: Settings, timeout: float) -> str:
    import redis

    client = redis.Redis(host=settings.redis_host, port=settings.get_int("REDIS_PORT"),
                         username=settings.get_str("REDIS_USER"), password=settings.secret("REDIS_PASSWORD"),
                         socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
        return f"Redis {client.info('server').get('redis_version', '?')}"
    finally:
        client.close()


def _probe_http(service: Service, settings: Settings, timeout: float) -> str | None:
    port = settings.get_int(service.health_port_key or service.port_keys[0])
    host = settings.client_host
    host = f"[{host}]" if ":" in host else host
    with urllib.request.urlopen(f"http://{host}:{port}{service.health_path}", timeout=timeout) as resp:
        body = resp.read(65536)
    try:
        data = json.loads(body)
    except ValueError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version else None
