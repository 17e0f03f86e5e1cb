"""Spans stored the way the collector stores them, projects with keys, and the API in-process or
as a subprocess: for the API, store (Grafana, lifecycle), collector and local tests.

Spans go through the collector's pipeline (normalization, prices from the seeded price table) and
its COPY, written as the app login role, so the tests exercise the real write path and the
row-level security it lives with.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from llmobs.collector.pipeline import RawSpan, SpanPipeline
from llmobs.config import Settings
from llmobs.store import apikeys
from llmobs.store.db import connect
from llmobs.store.maintain import maintain
from llmobs.store.spans import SpanRow, copy_spans

from helpers.common import free_port


def trace_id() -> str:
    return secrets.token_hex(16)


def span_id() -> str:
    return secrets.token_hex(8)


def llm_trace(
    start: datetime,
    *,
    service: str = "chatbot",
    model: str = "gpt-4o",
    provider: str = "openai",
    calls: int = 2,
    error: bool = False,
    user: str | None = None,
    session: str | None = None,
    root_ms: float = 1500.0,
    input_tokens: int = 1000,
    output_tokens: int = 200,
) -> list[RawSpan]:
    """A root span with ``calls`` LLM calls under it (OTel GenAI attributes), each call after the
    first linked to the one before it."""
    tid, root = trace_id(), span_id()
    resource = {"service.name": service}
    spans = [
        RawSpan(
            trace_id=tid,
            span_id=root,
            name=f"POST /{service}",
            kind="server",
            start_time=start,
            end_time=start + timedelta(milliseconds=root_ms),
            status_code="error" if error else "ok",
            resource=resource,
            attributes={k: v for k, v in (("user.id", user), ("session.id", session)) if v},
        )
    ]
    t = start + timedelta(milliseconds=10)
    previous: str | None = None
    for i in range(calls):
        end = t + timedelta(milliseconds=root_ms / (calls + 1))
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
        }
        if user:
            attrs["user.id"] = user
        if session:
            attrs["session.id"] = session
        links = (
            [{"trace_id": tid, "span_id": previous, "attributes": {"link.kind": "follows_from"}}] if previous else []
        )
        previous = span_id()
        spans.append(
            RawSpan(
                trace_id=tid,
                span_id=previous,
                parent_span_id=root,
                name=f"chat {model}",
                kind="client",
                start_time=t,
                end_time=end,
                status_code="error" if error and i == calls - 1 else "ok",
                attributes=attrs,
                resource=resource,
                links=links,
            )
        )
        t = end
    return spans


def store_spans(settings: Settings, project_id: int, spans: list[RawSpan]) -> list[SpanRow]:
    """Through the collector's pipeline and COPY, as the app login role (what the collector does)."""
    with connect(settings, "app", autocommit=True) as conn:
        pipeline = SpanPipeline.from_settings(settings)
        pipeline.load_prices(conn)
        result = pipeline.process(spans, project_id=project_id)
        assert result.rejected == 0, result.errors
        with conn.transaction():
            copy_spans(conn, result.rows)
    return result.rows


def refresh_rollups(settings: Settings) -> None:
    with connect(settings, "admin", autocommit=True) as conn:
        conn.execute("DELETE FROM llmobs_rollup_state")
        maintain(conn, settings)


@dataclass
class Project:
    id: int
    name: str
    keys: dict[str, str] = field(default_factory=dict)
    traces: list[str] = field(default_factory=list)

    def auth(self, role: str = "reader") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


def make_project(settings: Settings, name: str) -> Project:
    with connect(settings, "admin", autocommit=True) as conn:
        keys = {}
        for role in apikeys.ROLES:
            created = apikeys.create_key(conn, project=name, role=role, name=f"test-{role}", actor="test")
            keys[role] = created.token
            project_id = created.key.project_id
    return Project(project_id, name, keys)


@dataclass
class Seeded:
    a: Project
    b: Project
    now: datetime


def seed(settings: Settings, now: datetime | None = None) -> Seeded:
    """Two projects with distinct services, models, users; errors in A; rollups refreshed.

    A has 12 traces in the last 8 hours (``a.traces[:12]``, newest first) and one 3 days old.
    """
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    a, b = make_project(settings, "alpha"), make_project(settings, "beta")
    spans_a: list[RawSpan] = []
    for i in range(12):
        trace = llm_trace(
            now - timedelta(minutes=5 + i * 37),
            service="chatbot" if i % 2 else "rag",
            model="gpt-4o" if i % 3 else "gpt-4o-mini",
            error=i == 4,
            user=f"user-{i % 3}",
            session=f"sess-{i % 4}",
            root_ms=500 + 100 * i,
            calls=1 + i % 3,
        )
        spans_a += trace
        a.traces.append(trace[0].trace_id)
    spans_b: list[RawSpan] = []
    for i in range(6):
        trace = llm_trace(
            now - timedelta(minutes=7 + i * 50),
            service="secret-svc",
            model="claude-3-5-sonnet",
            provider="anthropic",
            user="b-user",
            session="b-session",
        )
        spans_b += trace
        b.traces.append(trace[0].trace_id)
    # Older data: the hourly rollup (ranges over a day) has something to show as well.
    old = llm_trace(now - timedelta(days=3), service="rag", model="gpt-4o")
    spans_a += old
    a.traces.append(old[0].trace_id)
    store_spans(settings, a.id, spans_a)
    store_spans(settings, b.id, spans_b)
    refresh_rollups(settings)
    return Seeded(a, b, now)


@contextmanager
def api_client(settings: Settings) -> Iterator[Any]:
    """The API in-process (ASGI), its lifespan run: a starlette TestClient."""
    import warnings

    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

    from llmobs.api.app import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def store_genai_metrics(
    settings: Settings, project_id: int, now: datetime, services: list[str], models: list[str]
) -> int:
    """Cumulative GenAI histograms (token usage by type, call duration, time to first token) for
    each service and model, two exports a minute apart, through the collector's conversion and
    COPY as the app login role. Returns the number of points stored."""
    from llmobs.collector.otlp_signals import RawPoint, SignalResult, metric_rows
    from llmobs.collector.redact import RedactionRules, Redactor
    from llmobs.store.signals import METRIC_POINTS, copy_signal_rows

    def ns(t: datetime) -> int:
        return int(t.timestamp() * 1e9)

    start, points = now - timedelta(minutes=10), []
    for service in services:
        for model in models:
            for step, minutes in enumerate((3, 2)):
                for name, attrs, value in (
                    ("gen_ai.client.token.usage", {"gen_ai.token.type": "input"}, 100.0),
                    ("gen_ai.client.token.usage", {"gen_ai.token.type": "output"}, 20.0),
                    ("gen_ai.client.operation.duration", {}, 1.5),
                    ("gen_ai.server.time_to_first_token", {}, 0.2),
                ):
                    count = step + 1
                    points.append(
                        RawPoint(
                            name, "s", "histogram", "cumulative", ns(now - timedelta(minutes=minutes)), ns(start),
                            {**attrs, "gen_ai.response.model": model, "gen_ai.operation.name": "chat"},
                            {"service.name": service}, count=count, sum=value * count,
                            bounds=[0.5, 1.0, 10.0], counts=[0, 0, count, 0],
                        )
                    )  # fmt: skip
    result = SignalResult()
    metric_rows(iter(points), project_id, Redactor(RedactionRules()), result)
    with connect(settings, "app", autocommit=True) as conn, conn.transaction():
        return copy_signal_rows(conn, METRIC_POINTS, result.rows)


@dataclass
class RunningApi:
    base: str
    proc: subprocess.Popen
    settings: Settings


def start_api(env: dict[str, str], workers: int) -> RunningApi:
    """`llmobs serve api` in a subprocess (its own session) with ``env``, answering /health."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "REDIS_", "LLMOBS_", "API_"))}
    child_env.update(env)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmobs",
            "serve",
            "api",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd="/",
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"api exited with {proc.returncode}: {proc.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return RunningApi(base, proc, Settings(env, None))
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_api(proc)
    pytest.fail("api did not answer /health within 60 s")


def stop_api(proc: subprocess.Popen) -> None:
    """Stop a server started by :func:`start_api` (its whole process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the session we started: uvicorn's master and its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stderr:
        proc.stderr.close()
