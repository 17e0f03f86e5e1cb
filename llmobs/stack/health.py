"""Health probes, the same for every runtime: they reach services over their published ports.

PostgreSQL: a real login and query. Redis: AUTH + PING. Our servers and the web UIs: HTTP GET
of their health path.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmobs.stack.services import Service
from llmobs.store.db import connect_kwargs, first_line

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
    version: str | None
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
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return first_line(exc)


def _probe_postgres(settings: Settings, timeout: float) -> str:
    import psycopg

    kwargs = connect_kwargs(settings, "admin", dbname="postgres", connect_timeout=max(1, int(timeout)))
    with psycopg.connect(**kwargs) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0].split()[0]}" if row else "PostgreSQL"


def _probe_redis(settings: Settings, timeout: float) -> str:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retry: the client's default (3 retries with back-off) made a hung Redis cost `status`
    # 27 s instead of the probe's timeout.
    client = redis.Redis(
        host=settings.redis_host,
        port=settings.get_int("REDIS_PORT"),
        username=settings.get_str("REDIS_USER"),
        password=settings.secret("REDIS_PASSWORD"),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
        return f"Redis {client.info('server').get('redis_version', '?')}"
    finally:
        client.close()


def uses_tls(settings: Settings) -> bool:
    """Whether the published api/OTLP ports speak TLS: the compose prod overlay terminates TLS in
    the proxy (the collector's metrics port stays plain)."""
    files = [f.strip() for f in settings.get_str("LLMOBS_COMPOSE_FILES").split(",")]
    return any(f.endswith("docker-compose.prod.yml") for f in files)


def service_url(settings: Settings, port_key: str) -> str:
    """The base URL (no trailing slash) a client on this host uses for the port ``port_key``."""
    host = settings.client_host
    host = f"[{host}]" if ":" in host else host
    tls = uses_tls(settings) and port_key in ("API_PORT", "COLLECTOR_HTTP_PORT")
    return f"{'https' if tls else 'http'}://{host}:{settings.get_int(port_key)}"


def ui_url(settings: Settings) -> str:
    """The web UI's address (served by the api at ``/ui/``)."""
    return f"{service_url(settings, 'API_PORT')}/ui/"


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """Verify against the project's CA when it has one (prod overlay's LLMOBS_TLS_DIR)."""
    ca = settings.path(settings.get_str("LLMOBS_TLS_DIR") or "tls", "ca.crt") if settings.project_dir else None
    return ssl.create_default_context(cafile=str(ca) if ca and ca.is_file() else None)


def _probe_http(service: Service, settings: Settings, timeout: float) -> str | None:
    port_key = service.health_port_key or service.port_keys[0]
    url = f"{service_url(settings, port_key)}{service.health_path}"
    context = _tls_context(settings) if url.startswith("https:") else None
    with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
        body = resp.read(65536)
    try:
        data = json.loads(body)
    except ValueError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version else None
