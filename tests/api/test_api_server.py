"""The API as operators run it: `llmobs serve api` (uvicorn, several workers) in a subprocess, with a
redis-server of its own that the tests stop and start again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
import redis

from llmobs.config import Settings, generate_password

from helpers.api import RunningApi, api_client, make_project, seed
from helpers.api import start_api as _start
from helpers.api import stop_api as _stop
from helpers.collector import http_export, otlp_request
from helpers.common import free_port, make_workdir, require, settings_env


@dataclass
class OwnRedis:
    port: int
    password: str
    server: object

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, username="llmobs", password=self.password)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    from llmobs.stack.redis_server import RedisServer

    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    root = make_workdir("llmobs-api-redis-")
    server = RedisServer(root / "redis.conf", root / "data", root / "redis.pid", root / "redis.log")
    port, password = free_port(), generate_password()
    server.write_config(bind="127.0.0.1", port=port, user="llmobs", passwords=[password])
    server.start()
    try:
        yield OwnRedis(port, password, server)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def api_env(pg_server, db_name, own_redis) -> dict[str, str]:
    return settings_env(
        pg_server,
        None,
        db_name,
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(own_redis.port),
        REDIS_USER="llmobs",
        REDIS_PASSWORD=own_redis.password,
        LLMOBS_LOG_LEVEL="warning",
    )


@pytest.fixture
def running_api(api_env) -> Iterator[RunningApi]:
    api = _start(api_env, workers=2)
    try:
        yield api
    finally:
        _stop(api.proc)


def _wait_for(check, timeout: float = 15.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


class EventStream:
    """Reads server-sent events from a streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def next(self, event: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        name, data = None, None
        for line in self.lines:
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "":
                if name == event and data is not None:
                    return data
                name, data = None, None
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"no {event!r} event within {timeout} s")


def test_workers_serve_and_metrics_cover_them_all(running_api: RunningApi):
    seeded = seed(running_api.settings)
    with httpx.Client(base_url=running_api.base, headers=seeded.a.auth()) as c:
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["version"]
        assert c.get("/health/ready").json()["status"] == "ok"
        for trace_id in seeded.a.traces * 2:
            assert c.get(f"/api/v1/traces/{trace_id}").status_code == 200
        text = c.get("/metrics").text
    sample = 'llmobs_api_requests_total{method="GET",route="/api/v1/traces/{trace_id}",status="200"}'
    line = next(x for x in text.splitlines() if x.startswith(sample))
    assert float(line.rsplit(" ", 1)[1]) == len(seeded.a.traces) * 2  # summed over both workers


def test_a_stopping_api_answers_its_kept_alive_clients_instead_of_resetting_them(api_env):
    """On SIGTERM the server stops accepting, but a client's next request on a connection it
    already has gets an answer with `Connection: close` (then it connects elsewhere: a rolling
    restart's new replica), never a reset."""
    api = _start(api_env, workers=1)
    try:
        with httpx.Client(base_url=api.base, timeout=5) as client:
            first = client.get("/health")
            assert first.status_code == 200 and first.headers.get("connection") != "close"
            os.killpg(api.proc.pid, signal.SIGTERM)
            answers = []
            deadline = time.monotonic() + 5
            while not answers or answers[-1].headers.get("connection") != "close":
                assert time.monotonic() < deadline, "the stopping server never said Connection: close"
                answers.append(client.get("/health"))  # an error here is what the drain prevents
                time.sleep(0.02)
            assert all(a.status_code == 200 for a in answers)
        assert api.proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    finally:
        _stop(api.proc)


def test_event_stream_of_new_traces(running_api: RunningApi, own_redis: OwnRedis):
    a, b = make_project(running_api.settings, "alpha"), make_project(running_api.settings, "beta")
    publisher = own_redis.client()
    timeout = httpx.Timeout(10.0, read=30.0)
    try:
        with httpx.stream("GET", f"{running_api.base}/api/v1/traces/stream", headers=a.auth(), timeout=timeout) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = EventStream(r)
            assert events.next("status")["redis"] == "connected"
            message = {
                "project_id": b.id,
                "trace_id": "b" * 32,
                "span_count": 1,
                "service_name": "x",
                "root_name": "r",
                "start_time": "2024-01-01T00:00:00+00:00",
                "has_error": False,
            }
            publisher.publish(f"llmobs:traces:{b.id}", json.dumps(message))  # another project: not for A
            mine = {**message, "project_id": a.id, "trace_id": "a" * 32}
            publisher.publish(f"llmobs:traces:{a.id}", json.dumps(mine))
            assert events.next("trace") == mine
            # End to end: spans posted to the API come back on the stream.
            span = {
                "trace_id": "c" * 32,
                "span_id": "d" * 16,
                "name": "posted",
                "service_name": "svc",
                "start_time": datetime.now(UTC).isoformat(),
            }
            posted = httpx.post(f"{running_api.base}/api/v1/spans", headers=a.auth("writer"), json=span)
            assert posted.status_code == 201
            got = events.next("trace")
            assert got["trace_id"] == "c" * 32 and got["project_id"] == a.id and got["root_name"] == "posted"
            assert publisher.pubsub_numsub(f"llmobs:traces:{a.id}")[0][1] == 1
        # The client went away: the server drops its subscription.
        assert _wait_for(lambda: publisher.pubsub_numsub(f"llmobs:traces:{a.id}")[0][1] == 0, timeout=20)
    finally:
        publisher.close()


def test_collector_traces_reach_the_stream(pg_server, redis_server, db_name, start_collector):
    """End to end: OTLP into the collector, committed, announced on Redis, streamed by the API."""
    env = settings_env(pg_server, redis_server, db_name, LLMOBS_LOG_LEVEL="warning")
    api = _start(env, workers=1)
    collector = start_collector()
    headers = {"Authorization": f"Bearer {env['LLMOBS_ADMIN_API_KEY']}"}  # the default project's keys
    try:
        with httpx.stream(
            "GET", f"{api.base}/api/v1/traces/stream", headers=headers, timeout=httpx.Timeout(10.0, read=30.0)
        ) as r:
            events = EventStream(r)
            assert events.next("status")["redis"] == "connected"
            now = time.time_ns()
            trace_id, root, child = "5a" * 16, "6b" * 8, "7c" * 8
            body = otlp_request(
                [
                    {
                        "trace_id": trace_id,
                        "span_id": root,
                        "name": "POST /ask",
                        "kind": 2,
                        "start": now,
                        "end": now + 900_000_000,
                    },
                    {
                        "trace_id": trace_id,
                        "span_id": child,
                        "parent": root,
                        "name": "chat gpt-4o",
                        "kind": 3,
                        "start": now + 1_000_000,
                        "end": now + 800_000_000,
                        "status": 2,
                        "attributes": {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10},
                    },
                ],
                resource={"service.name": "e2e-svc"},
            )
            assert http_export(collector.http_url, body, collector.token).status_code == 200
            got = events.next("trace")
        assert got["trace_id"] == trace_id and got["span_count"] == 2 and got["has_error"] is True
        assert got["service_name"] == "e2e-svc" and got["root_name"] == "POST /ask"
        trace = httpx.get(f"{api.base}/api/v1/traces/{trace_id}", headers=headers).json()
        assert trace["span_count"] == 2 and trace["roots"][0]["children"][0]["response_model"] in (None, "gpt-4o")
        assert trace["models"] == ["gpt-4o"] and trace["cost_usd"] > 0
    finally:
        _stop(api.proc)


def test_redis_going_away_and_coming_back(running_api: RunningApi, own_redis: OwnRedis):
    seeded = seed(running_api.settings)
    base, headers = running_api.base, seeded.a.auth()
    timeout = httpx.Timeout(10.0, read=30.0)
    with (
        httpx.Client(base_url=base, headers=headers, timeout=10) as c,
        httpx.stream("GET", f"{base}/api/v1/traces/stream", headers=headers, timeout=timeout) as stream,
    ):
        events = EventStream(stream)
        assert events.next("status")["redis"] == "connected"
        assert c.get("/api/v1/metrics").headers["x-cache"] == "miss"
        assert c.get("/api/v1/traces").headers["x-ratelimit-limit"]

        own_redis.server.stop()
        ready = _wait_for(lambda: (r := c.get("/health/ready")).status_code == 503 and r)
        assert ready and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["redis"]["ok"] is False and ready.json()["checks"]["database"]["ok"] is True
        # Reads keep working from PostgreSQL: rate limiting fails open, the cache misses.
        for _ in range(3):
            r = c.get("/api/v1/traces")
            assert r.status_code == 200 and len(r.json()["traces"]) == 12
            assert "x-ratelimit-limit" not in r.headers
        assert c.get("/api/v1/metrics").status_code == 200
        assert c.get(f"/api/v1/traces/{seeded.a.traces[0]}").status_code == 200
        assert events.next("status")["redis"] == "unavailable"

        own_redis.server.start()
        assert _wait_for(lambda: c.get("/health/ready").status_code == 200, timeout=20)
        assert _wait_for(lambda: "x-ratelimit-limit" in c.get("/api/v1/traces").headers, timeout=10)
        assert events.next("status", timeout=20)["redis"] == "connected"
        publisher = own_redis.client()
        try:
            message = {
                "project_id": seeded.a.id,
                "trace_id": "e" * 32,
                "span_count": 2,
                "service_name": "s",
                "root_name": "again",
                "start_time": "2024-01-01T00:00:00+00:00",
                "has_error": False,
            }
            publisher.publish(f"llmobs:traces:{seeded.a.id}", json.dumps(message))
            assert events.next("trace") == message
        finally:
            publisher.close()
        assert _wait_for(
            lambda: c.get("/api/v1/metrics", params={"interval": "1h"}).headers["x-cache"] == "hit", timeout=10
        )


def test_rate_limiting_fails_open_or_closed_as_configured(settings: Settings):
    """Redis unreachable from the start (nothing listens on its port)."""
    project = make_project(settings, "gamma")
    down = settings.with_overrides(REDIS_PORT=str(free_port()))
    with api_client(down) as c:
        ready = c.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "degraded"
        assert c.get("/api/v1/traces", headers=project.auth()).status_code == 200
    with api_client(down.with_overrides(API_RATE_LIMIT_FAIL_OPEN="false")) as c:
        r = c.get("/api/v1/traces", headers=project.auth())
        assert r.status_code == 503 and r.json()["error"]["code"] == "rate_limiter_unavailable"
        assert r.headers["retry-after"]
        assert c.get("/health").status_code == 200


def test_database_down_is_503_not_500(settings: Settings):
    project = make_project(settings, "delta")
    gone = settings.with_overrides(DB_PORT=str(free_port()))
    with api_client(gone) as c:
        ready = c.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        r = c.get("/api/v1/traces", headers=project.auth())
        assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"


def test_concurrent_misses_of_one_entry_share_one_computation(settings: Settings):
    """Twenty requests missing the same cache entry at once run the query once; a caller that
    goes away does not take the others' answer with it; a failure reaches every waiting caller
    and is not cached."""
    import asyncio

    from llmobs.api.cache import ResultCache
    from llmobs.api.redis_link import RedisLink

    async def scenario() -> None:
        link = RedisLink(settings)
        cache = ResultCache(link, ttl_seconds=30, namespace=f"test-{generate_password(8)}")
        runs = 0

        async def slow_body() -> bytes:
            nonlocal runs
            runs += 1
            await asyncio.sleep(0.3)
            return b'{"n": %d}' % runs

        try:
            key = cache.key(1, "metrics", {"q": "shared"})
            first = asyncio.ensure_future(cache.fetch(key, slow_body))
            await asyncio.sleep(0.05)
            others = [asyncio.ensure_future(cache.fetch(key, slow_body)) for _ in range(19)]
            await asyncio.sleep(0.05)
            first.cancel()
            results = await asyncio.gather(*others)
            assert runs == 1 and results == [(b'{"n": 1}', False)] * 19
            assert await cache.fetch(key, slow_body) == (b'{"n": 1}', True)

            async def failing() -> bytes:
                nonlocal runs
                runs += 1
                await asyncio.sleep(0.2)
                raise RuntimeError("the database went away")

            other_key = cache.key(1, "metrics", {"q": "failing"})
            failed = await asyncio.gather(*(cache.fetch(other_key, failing) for _ in range(5)), return_exceptions=True)
            assert runs == 2 and all(isinstance(f, RuntimeError) for f in failed)
            assert await cache.fetch(other_key, slow_body) == (b'{"n": 3}', False)
        finally:
            await link.close()

    asyncio.run(scenario())
