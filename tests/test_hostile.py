"""Hostile input and noisy neighbours (issue 17): one project's key, or no key, must not degrade
the service for another project. Each test drives an attack against the real servers and checks
that it is refused or absorbed, that another project's reads keep their latency (a baseline
measured in the same test, generous factors: the machine is noisy) and that health tells the truth.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from api_support import api_client, llm_trace, make_project, store_spans
from collector_support import RunningCollector, grpc_export, http_export, otlp_request, start_collector_fixture  # noqa: F401

from llmobs.store.maintain import span_partitions

NS_PER_DAY = 86_400 * 10**9


def read_latency(client, headers: dict[str, str], rounds: int = 5) -> float:
    """Median seconds of a cheap read of another project (the trace list), each answered 200."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = client.get("/api/v1/traces?limit=20", headers=headers)
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return statistics.median(timings)


def assert_latency_kept(before: float, after: float) -> None:
    """Another project's reads after the attack: at most a few times the baseline (plus noise)."""
    assert after < max(5 * before, before + 1.0), f"reads slowed from {before:.3f}s to {after:.3f}s"


@pytest.fixture
def neighbour(settings):
    """Project B with a few traces: the bystander whose reads must stay fast."""
    b = make_project(settings, "bystander")
    now = datetime.now(UTC)
    store_spans(settings, b.id, [s for i in range(5) for s in llm_trace(now - timedelta(minutes=5 + i))])
    return b


def test_span_timestamps_outside_the_window_are_rejected_and_make_no_partitions(
    start_collector, settings, admin_conn, neighbour
):
    collector: RunningCollector = start_collector()
    partitions_before = span_partitions(admin_conn)
    with api_client(settings) as api:
        baseline = read_latency(api, neighbour.auth())

        # one request with spans on 400 different days from 1970 to 2500, plus one span in the window
        now_ns = time.time_ns()
        spans = [
            {"trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}", "start": i * 365 * NS_PER_DAY + NS_PER_DAY}
            for i in range(400)
        ]
        spans.append({"trace_id": "ab" * 16, "span_id": "ab" * 8, "start": now_ns, "end": now_ns + 10**6})
        body = otlp_request(spans)
        response = http_export(collector.http_url, body, collector.token, content_type="application/x-protobuf")
        assert response.status_code == 200
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        answer = ExportTraceServiceResponse.FromString(response.content)
        assert answer.partial_success.rejected_spans == 400
        assert "outside the accepted window" in answer.partial_success.error_message
        assert "COLLECTOR_MAX_SPAN_AGE_DAYS" in answer.partial_success.error_message
        code, details, _ = grpc_export(collector.grpc_target, body, collector.token)
        assert code == grpc.StatusCode.OK
        assert ExportTraceServiceResponse.FromString(details).partial_success.rejected_spans == 400

        # the same through the API: refused, named, nothing stored
        writer = make_project(settings, "attacker")
        future = {"trace_id": "cd" * 16, "span_id": "cd" * 8, "name": "x", "start_time": "2400-01-01T00:00:00Z"}
        response = api.post("/api/v1/spans", json=[future], headers=writer.auth("writer"))
        assert response.status_code == 422 and "outside the accepted window" in response.json()["error"]["message"]

        # no partition was made for any of those days; the span in the window was stored once per transport
        assert span_partitions(admin_conn) == partitions_before
        stored = admin_conn.execute("SELECT count(*) FROM spans WHERE span_id = %s", ("ab" * 8,)).fetchone()[0]
        assert stored == 2
        # the app role cannot create partitions by itself either
        import psycopg

        from llmobs.store.db import connect

        with connect(settings, "app", autocommit=True) as app, pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT llmobs_ensure_span_partition('2300-01-01')")

        assert_latency_kept(baseline, read_latency(api, neighbour.auth()))
    assert collector.health()[0] == 200 and collector.health()[1]["database"] == "up"
    assert collector.proc.poll() is None


def test_numbers_out_of_range_are_rejected_and_rollups_keep_working(start_collector, settings, admin_conn, neighbour):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    from llmobs.store.maintain import maintain

    collector: RunningCollector = start_collector()
    now_ns = time.time_ns()
    bad = [
        {"gen_ai.usage.cost": 1.7e308},
        {"gen_ai.usage.cost": 1.7e308},
        {"gen_ai.usage.cost": -5.0},
        {"llm.cost.prompt": 9e305, "llm.cost.completion": 9e305},
        {"gen_ai.usage.input_tokens": 2**62},
        {"gen_ai.usage.output_tokens": -1},
        {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10**12, "gen_ai.usage.output_tokens": 10**12},
    ]
    spans = [
        {"trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}", "start": now_ns, "attributes": a}
        for i, a in enumerate(bad)
    ]
    # a span lasting 30 days, and a good one
    spans.append({"trace_id": "aa" * 16, "span_id": "aa" * 8, "start": now_ns, "end": now_ns + 30 * NS_PER_DAY})
    good = {"trace_id": "ab" * 16, "span_id": "ab" * 8, "start": now_ns, "attributes": {"gen_ai.usage.cost": 0.5}}
    spans.append(good)
    response = http_export(collector.http_url, otlp_request(spans), collector.token)
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert answer.rejected_spans == len(spans) - 1, answer.error_message
    message = answer.error_message
    assert "gen_ai.usage.cost: 1.7e+308 is out of range (0 to 1e+06)" in message
    assert "gen_ai.usage.input_tokens: 4.61169e+18 is out of range (0 to 1e+12)" in message
    assert "gen_ai.usage.output_tokens: -1 is out of range" in message
    assert "computed cost (gpt-4o)" in message and "duration" in message

    with api_client(settings) as api:
        writer = make_project(settings, "attacker")
        span = {
            "trace_id": "cd" * 16,
            "span_id": "cd" * 8,
            "name": "x",
            "start_time": datetime.now(UTC).isoformat(),
            "attributes": {"gen_ai.usage.cost": 1.7e308},
        }
        response = api.post("/api/v1/spans", json=[span], headers=writer.auth("writer"))
        assert response.status_code == 422 and "out of range" in response.json()["error"]["message"]

    # the rollup refresh runs, and counts the one good span's cost
    admin_conn.execute("DELETE FROM llmobs_rollup_state")
    maintain(admin_conn, settings)
    total = admin_conn.execute("SELECT sum(cost_usd) FROM spans_rollup_1m WHERE project_id = 1").fetchone()[0]
    assert total == pytest.approx(0.5)


def gql(client, headers: dict[str, str], query: str, variables: dict | None = None):
    return client.post("/graphql", headers=headers, json={"query": query, "variables": variables or {}})


NESTED_FRAGMENTS = """query($id: String!) { trace(traceId: $id) { spans { ...L1 } } }
fragment L1 on Span { trace { spans { ...L2 } } }
fragment L2 on Span { trace { spans { ...L3 } } }
fragment L3 on Span { trace { spans { name spanId } } }"""


def test_graphql_cost_is_bounded(settings, neighbour):
    attacker = make_project(settings, "attacker")
    trace = llm_trace(datetime.now(UTC) - timedelta(minutes=3), calls=15)  # 16 spans
    store_spans(settings, attacker.id, trace)
    variables = {"id": trace[0].trace_id}
    with api_client(settings) as api:
        baseline = read_latency(api, neighbour.auth())

        nested = "spans { trace { " * 4 + "spans { name }" + " } }" * 4
        response = gql(api, attacker.auth(), f"query($id: String!) {{ trace(traceId: $id) {{ {nested} }} }}", variables)
        assert response.status_code == 400
        assert "inside another `trace`" in response.json()["error"]["message"]

        # the same through fragments (which validation sees one at a time): 16^4 spans, stopped early
        started = time.monotonic()
        response = gql(api, attacker.auth(), NESTED_FRAGMENTS, variables)
        assert response.status_code == 400, response.text[:500]
        error = response.json()["error"]
        assert error["code"] == "query_too_costly" and "API_GRAPHQL_MAX_OBJECTS" in error["message"]
        assert time.monotonic() - started < 10

        # 30 aliases, each listing traces and looking each one up: bounded the same way
        aliases = " ".join(
            f"a{i}: traces(first: 200) {{ traces {{ trace {{ spans {{ name }} }} }} }}" for i in range(30)
        )
        response = gql(api, attacker.auth(), f"{{ {aliases} }}")
        assert response.status_code in (200, 400), response.text[:500]
        assert api.get("/health/ready").status_code == 200

        # a document within every limit still works
        response = gql(
            api, attacker.auth(), "query($id: String!) { trace(traceId: $id) { spans { name } } }", variables
        )
        assert response.status_code == 200 and len(response.json()["data"]["trace"]["spans"]) == 16

        assert_latency_kept(baseline, read_latency(api, neighbour.auth()))

    with api_client(settings.with_overrides(API_GRAPHQL_MAX_RESPONSE_BYTES="2048")) as api:
        response = gql(
            api, attacker.auth(), "query($id: String!) { trace(traceId: $id) { spans { attributes } } }", variables
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "response_too_large"
