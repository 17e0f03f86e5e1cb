"""POST /api/v1/spans: the collector's pipeline (normalization, prices) and COPY, then the trace
announced on Redis like the collector announces it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis

from llmobs.config import Settings
from llmobs.store.db import connect

from helpers.api import api_client, make_project


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture
def project(settings: Settings):
    return make_project(settings, "ingest")


def _subscriber(settings: Settings, project_id: int):
    client = redis.Redis(
        host=settings.redis_host,
        port=settings.get_int("REDIS_PORT"),
        username=settings.get_str("REDIS_USER"),
        password=settings.secret("REDIS_PASSWORD"),
    )
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"llmobs:traces:{project_id}")
    return client, pubsub


def _next_message(pubsub, timeout: float = 5.0) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message":
            return json.loads(message["data"])
    return None


def test_spans_are_normalized_priced_and_announced(settings: Settings, project):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    spans = [
        {
            "trace_id": trace_id.upper(),
            "span_id": "00f067aa0ba902b7",
            "name": "agent run",
            "kind": "server",
            "start_time": iso(start),
            "end_time": iso(start + timedelta(seconds=3)),
            "service_name": "agent-svc",
        },
        # OpenInference names: model, provider and tokens come from the pipeline's mapping table.
        {
            "trace_id": trace_id,
            "span_id": "00f067aa0ba902b8",
            "parent_span_id": "00f067aa0ba902b7",
            "name": "llm",
            "kind": "client",
            "start_time": iso(start + timedelta(milliseconds=10)),
            "end_time": iso(start + timedelta(seconds=2)),
            "service_name": "agent-svc",
            "attributes": {
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o-mini",
                "llm.provider": "openai",
                "llm.token_count.prompt": 2000,
                "llm.token_count.completion": 500,
                "session.id": "s-1",
            },
        },
        # A cost sent by the client wins over the price table.
        {
            "trace_id": trace_id,
            "span_id": "00f067aa0ba902b9",
            "parent_span_id": "00f067aa0ba902b7",
            "name": "chat",
            "start_time": iso(start + timedelta(seconds=2)),
            "status_code": "error",
            "attributes": {
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 10,
                "gen_ai.usage.cost": 0.5,
            },
            "events": [
                {
                    "name": "exception",
                    "time": iso(start + timedelta(seconds=2)),
                    "attributes": {"exception.message": "boom"},
                }
            ],
            "links": [
                {
                    "trace_id": "0AF7651916CD43DD8448EB211C80319C",
                    "span_id": "b7ad6b7169203331",
                    "attributes": {"link.reason": "retry of"},
                }
            ],
        },
    ]
    client, pubsub = _subscriber(settings, project.id)
    try:
        with api_client(settings) as c:
            r = c.post("/api/v1/spans", headers=project.auth("writer"), json=spans)
            assert r.status_code == 201, r.text
            assert r.json() == {"accepted": 3, "trace_ids": [trace_id]}
            message = _next_message(pubsub)
            trace = c.get(f"/api/v1/traces/{trace_id}", headers=project.auth()).json()
    finally:
        pubsub.close()
        client.close()
    assert message == {
        "project_id": project.id,
        "trace_id": trace_id,
        "span_count": 3,
        "service_name": "agent-svc",
        "root_name": "agent run",
        "start_time": start.isoformat(),
        "has_error": True,
    }
    assert trace["span_count"] == 3 and trace["error_count"] == 1
    llm, chat = trace["roots"][0]["children"]
    assert (llm["response_model"] or llm["request_model"]) == "gpt-4o-mini" and llm["provider"] == "openai"
    assert llm["operation"] == "chat" and llm["session_id"] == "s-1"
    assert llm["input_tokens"] == 2000 and llm["output_tokens"] == 500
    assert llm["cost_usd"] == pytest.approx((2000 * 0.15 + 500 * 0.6) / 1e6) and llm["cost_source"] == "computed"
    assert chat["cost_usd"] == 0.5 and chat["cost_source"] == "client"
    assert chat["end_time"] == chat["start_time"]  # no end time: the start time
    assert chat["events"][0]["attributes"] == {"exception.message": "boom"}
    assert chat["links"] == [
        {
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331",
            "attributes": {"link.reason": "retry of"},
        }
    ]
    assert llm["links"] == []
    with connect(settings, "admin") as conn:
        row = conn.execute(
            "SELECT sum(accepted), sum(rejected) FROM llmobs_ingest_stats WHERE source = 'api' AND project_id = %s",
            (project.id,),
        ).fetchone()
    assert row == (3, 0)


def test_one_span_object_with_an_offset_time(settings: Settings, project):
    """Times with an offset are stored in UTC (and land in the right daily partition)."""
    local = datetime.now(UTC).astimezone(timezone(timedelta(hours=-5))).replace(microsecond=0)
    span = {"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "single", "start_time": local.isoformat()}
    with api_client(settings) as c:
        r = c.post("/api/v1/spans", headers=project.auth("writer"), json=span)
        assert r.status_code == 201 and r.json()["accepted"] == 1
        stored = c.get(f"/api/v1/spans/{'cd' * 8}", headers=project.auth()).json()
    assert datetime.fromisoformat(stored["start_time"]) == local


RECENT = iso(datetime.now(UTC) - timedelta(hours=1))


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ([], 422, "no spans"),
        ({"trace_id": "zz" * 16, "span_id": "cd" * 8, "name": "x", "start_time": RECENT}, 422, "trace_id"),
        ({"trace_id": "00" * 16, "span_id": "cd" * 8, "name": "x", "start_time": RECENT}, 422, "all zeros"),
        (
            {"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "x", "start_time": "2001-01-01T00:00:00Z"},
            422,
            "outside the accepted window",
        ),
        ({"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "x", "start_time": 1700000000}, 422, "ISO 8601"),
        ({"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "x"}, 422, "start_time"),
        (
            {"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "x", "start_time": RECENT, "colour": "blue"},
            422,
            "colour",
        ),
        ([{"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "x", "start_time": RECENT}] * 1001, 413, "at most 1000"),
    ],
)
def test_invalid_spans_are_refused_and_nothing_is_stored(settings: Settings, project, body, status, fragment):
    with api_client(settings) as c:
        r = c.post("/api/v1/spans", headers=project.auth("writer"), json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]["message"]
    with connect(settings, "admin") as conn:
        assert conn.execute("SELECT count(*) FROM spans WHERE project_id = %s", (project.id,)).fetchone()[0] == 0


def test_spans_land_in_the_callers_project_only(settings: Settings, project):
    other = make_project(settings, "other")
    span = {
        "trace_id": "12" * 16,
        "span_id": "34" * 8,
        "name": "mine",
        "start_time": iso(datetime.now(UTC)),
        "resource": {"project_id": other.id},
        "attributes": {"project_id": other.id},
    }
    with api_client(settings) as c:
        assert c.post("/api/v1/spans", headers=project.auth("writer"), json=span).status_code == 201
        assert c.get(f"/api/v1/traces/{'12' * 16}", headers=other.auth()).status_code == 404
        assert c.get(f"/api/v1/traces/{'12' * 16}", headers=project.auth()).status_code == 200
