"""Messages, full-text search, time to first token and one null rule, through REST and GraphQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from llmobs.collector.pipeline import RawSpan
from llmobs.config import Settings
from llmobs.store import queries
from llmobs.store.db import connect

from helpers.api import api_client, make_project, refresh_rollups, span_id, store_spans, trace_id


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def chat(start: datetime, question: str, answer: str, ttft_s: float | None = None) -> list[RawSpan]:
    """A trace: a root without token data and one chat call carrying its messages (current semconv)."""
    tid, root = trace_id(), span_id()
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 10,
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": question}]}]),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}]
        ),
    }
    if ttft_s is not None:
        attrs["gen_ai.server.time_to_first_token"] = ttft_s
    end = start + timedelta(seconds=1)
    return [
        RawSpan(trace_id=tid, span_id=root, name="POST /ask", start_time=start, end_time=end, kind="server"),
        RawSpan(
            trace_id=tid,
            span_id=span_id(),
            parent_span_id=root,
            name="chat gpt-4o",
            start_time=start + timedelta(milliseconds=5),
            end_time=end,
            kind="client",
            attributes=attrs,
        ),
    ]


@pytest.fixture
def world(settings: Settings):
    now = datetime.now(UTC).replace(microsecond=0)
    project = make_project(settings, "msgs")
    refund = chat(now - timedelta(minutes=10), "Where is my refund for order 42?", "Refunds take five days.", 0.2)
    weather = chat(now - timedelta(minutes=20), "Is it raining in Lyon?", "Sunny in Lyon today.", 0.4)
    quiet = [
        RawSpan(
            trace_id=trace_id(), span_id=span_id(), name="cron", start_time=now - timedelta(minutes=30),
            end_time=now - timedelta(minutes=29),
        )
    ]  # fmt: skip
    store_spans(settings, project.id, refund + weather + quiet)
    refresh_rollups(settings)
    return project, now, refund, weather, quiet


def test_messages_search_and_null_rule_on_every_read_path(settings: Settings, world):
    project, now, refund, weather, quiet = world
    headers = project.auth()
    window = {"from": iso(now - timedelta(hours=1)), "to": iso(now + timedelta(minutes=1))}
    with api_client(settings) as client:
        # messages on the span, an empty list where there are none
        span = client.get(f"/api/v1/spans/{refund[1].span_id}", headers=headers).json()
        assert span["input_messages"] == [
            {
                "role": "user",
                "parts": [{"type": "text", "content": "Where is my refund for order 42?"}],
                "finish_reason": None,
            }
        ]
        assert span["output_messages"][0]["finish_reason"] == "stop"
        assert span["time_to_first_token_ms"] == pytest.approx(200)
        root = client.get(f"/api/v1/spans/{refund[0].span_id}", headers=headers).json()
        assert (root["input_messages"], root["output_messages"], root["time_to_first_token_ms"]) == ([], [], None)

        # q= finds traces by the words of their messages, inputs and outputs alike
        def listed(**params: str) -> set[str]:
            response = client.get("/api/v1/traces", headers=headers, params={**window, **params})
            assert response.status_code == 200, response.text
            return {t["trace_id"] for t in response.json()["traces"]}

        assert listed(q="refund") == {refund[0].trace_id}
        assert listed(q="sunny lyon") == {weather[0].trace_id}
        assert listed(q='"order 42"') == {refund[0].trace_id}
        assert listed(q="lyon -raining") == set()
        assert listed(q="refund", sort="cost_usd") == {refund[0].trace_id}
        assert listed(q="nothing-matches-this") == set()

        gql = client.post(
            "/graphql",
            headers=headers,
            json={
                "query": """query($f: TraceFilterInput) { traces(filter: $f) { traces { traceId inputTokens
                    trace { inputTokens totalTokens costUsd
                            spans { inputMessages timeToFirstTokenMs costSource } } } } }""",
                "variables": {"f": {"from": window["from"], "to": window["to"], "q": "raining"}},
            },
        ).json()
        [found] = gql["data"]["traces"]["traces"]
        assert found["traceId"] == weather[0].trace_id
        assert sorted(s["timeToFirstTokenMs"] or 0 for s in found["trace"]["spans"]) == [0, pytest.approx(400)]

        # null versus 0: a trace without token data reports null on every path
        summary = client.get("/api/v1/traces", headers=headers, params={**window, "name": "cron"}).json()["traces"]
        assert [(t["input_tokens"], t["total_tokens"], t["cost_usd"]) for t in summary] == [(None, None, None)]
        whole = client.get(f"/api/v1/traces/{quiet[0].trace_id}", headers=headers).json()
        assert (whole["input_tokens"], whole["output_tokens"], whole["total_tokens"], whole["cost_usd"]) == (
            None,
            None,
            None,
            None,
        )
        gql = client.post(
            "/graphql",
            headers=headers,
            json={"query": f'{{ trace(traceId: "{quiet[0].trace_id}") {{ inputTokens totalTokens costUsd }} }}'},
        ).json()
        assert gql["data"]["trace"] == {"inputTokens": None, "totalTokens": None, "costUsd": None}
        assert client.get(f"/api/v1/traces/{refund[0].trace_id}", headers=headers).json()["input_tokens"] == 100

        # time to first token in the metrics, from the rollups
        metrics = client.get("/api/v1/metrics", headers=headers, params={**window, "interval": "1h"}).json()
        points = [p for s in metrics["series"] for p in s["points"] if p["time_to_first_token_p50_ms"] is not None]
        assert points, metrics
        assert sum(p["requests"] for p in points) == 2
        p50s = sorted(p["time_to_first_token_p50_ms"] for p in points)
        # log-scale buckets: within 25 % of the true values (200 and 400 ms, perhaps in one hour)
        assert all(150 <= v <= 500 for v in p50s)
        assert all(p["time_to_first_token_p95_ms"] >= p["time_to_first_token_p50_ms"] for p in points)


def test_q_is_served_by_the_message_index(settings: Settings, world):
    """With many indexed spans, the search term of the trace list reads the partial GIN index on
    message_words (0031), not a scan; the words are filled by `llmobs db maintain`."""
    project, now, *_ = world
    sql = f"EXPLAIN SELECT m.trace_id FROM spans m WHERE m.project_id = %(project)s AND {queries.MESSAGE_MATCH}"
    with connect(settings, "admin", autocommit=True) as conn:
        conn.execute(
            """INSERT INTO spans (project_id, trace_id, span_id, service_name, name, start_time, end_time,
                                  duration_ms, input_messages)
               SELECT %(project)s, md5(i::text), left(md5(i::text || 's'), 16), 'bulk', 'chat', %(t)s, %(t)s, 1,
                      jsonb_build_array(jsonb_build_object('role', 'user', 'parts', jsonb_build_array(
                          jsonb_build_object('type', 'text', 'content', 'lorem ipsum dolor sit amet ' || i))))
               FROM generate_series(1, 50000) i""",
            {"project": project.id, "t": now - timedelta(minutes=5)},
        )
        assert conn.execute("SELECT count(message_words) FROM spans").fetchone()[0] == 2  # written: not yet
        refresh_rollups(settings)  # `llmobs db maintain`: indexes the new spans' messages
        assert conn.execute("SELECT count(message_words) FROM spans").fetchone()[0] == 50000 + 2
        conn.execute("ANALYZE spans")
        plan = "\n".join(r[0] for r in conn.execute(sql, {"project": project.id, "q": "refund"}).fetchall())
    partition = f"spans_p{(now - timedelta(minutes=5)):%Y%m%d}"
    assert f"Bitmap Index Scan on {partition}_message_words_idx" in plan, plan
    assert f"Seq Scan on {partition} " not in plan, plan  # (empty partitions may be scanned: nothing to read)
