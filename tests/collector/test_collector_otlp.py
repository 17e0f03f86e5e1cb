"""The collector as LLM apps use it: the OpenTelemetry SDK's OTLP exporters (gRPC and HTTP),
configured only through OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_HEADERS, send traces;
the spans are read back from PostgreSQL."""

from __future__ import annotations

import gzip
import json
import threading
import time
from datetime import UTC, datetime

import grpc
import httpx
import pytest

from helpers.collector import grpc_export, http_export, otlp_request

GENAI = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 200,
    "gen_ai.response.finish_reasons": ("stop",),
}


#: a span of another trace that the children of ``sdk_export`` link to
LINKED_TRACE, LINKED_SPAN = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
#: an API key in a link attribute, which the default secret detectors redact
LINK_SECRET = "sk-" + "A1b2C3d4E5" * 4


def sdk_export(
    monkeypatch, protocol: str, endpoint: str, token: str, service: str, spans: list[tuple[str, dict]], **env: str
) -> None:
    """Emit one trace (a root span with the given children, each linked to LINKED_SPAN, with the
    link attribute ``LINK_SECRET``) through the SDK's exporter."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer {token}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "deployment.environment.name": "test"})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("llm-app")
    linked = trace.SpanContext(
        LINKED_TRACE, LINKED_SPAN, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    link = trace.Link(linked, {"link.reason": "batch", "llm.api_key": LINK_SECRET})
    with tracer.start_as_current_span("agent run"):
        for name, attributes in spans:
            with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, links=[link]) as span:
                span.set_attributes(attributes)
                span.add_event("gen_ai.choice", {"index": 0})
    assert provider.force_flush(30_000)
    provider.shutdown()


def rows(admin_conn, service: str) -> dict[str, dict]:
    cur = admin_conn.execute("SELECT * FROM spans WHERE service_name = %s", (service,))
    names = [c.name for c in cur.description]
    return {r[names.index("name")]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_exporter_traces_are_stored_with_model_tokens_and_cost(protocol, start_collector, admin_conn, monkeypatch):
    c = start_collector()
    endpoint = f"http://{c.grpc_target}" if protocol == "grpc" else c.http_url
    sdk_export(
        monkeypatch,
        protocol,
        endpoint,
        c.token,
        f"app-{protocol}",
        [("chat gpt-4o", GENAI)],
        OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
    )
    stored = rows(admin_conn, f"app-{protocol}")
    assert set(stored) == {"agent run", "chat gpt-4o"}
    chat = stored["chat gpt-4o"]
    assert (chat["provider"], chat["request_model"], chat["response_model"]) == (
        "openai",
        "gpt-4o",
        "gpt-4o-2024-08-06",
    )
    assert (chat["input_tokens"], chat["output_tokens"], chat["environment"]) == (1000, 200, "test")
    assert chat["cost_usd"] == pytest.approx(0.0045)
    assert chat["parent_span_id"] == stored["agent run"]["span_id"] and chat["kind"] == "client"
    assert chat["events"][0]["name"] == "gen_ai.choice"
    assert stored["agent run"]["parent_span_id"] is None
    # span links are kept, and their attributes go through redaction like the span's own
    [link] = chat["links"]
    assert (link["trace_id"], link["span_id"]) == (f"{LINKED_TRACE:032x}", f"{LINKED_SPAN:016x}")
    assert link["attributes"]["link.reason"] == "batch"
    assert LINK_SECRET not in json.dumps(link)
    assert stored["agent run"]["links"] == []


def test_openinference_and_openllmetry_style_spans(start_collector, admin_conn, monkeypatch):
    c = start_collector()
    sdk_export(
        monkeypatch,
        "grpc",
        f"http://{c.grpc_target}",
        c.token,
        "mixed",
        [
            (
                "openinference llm",
                {
                    "openinference.span.kind": "LLM",
                    "llm.provider": "anthropic",
                    "llm.model_name": "claude-3-5-haiku-20241022",
                    "llm.token_count.prompt": 1000,
                    "llm.token_count.completion": 100,
                    "session.id": "sess-1",
                },
            ),
            (
                "openllmetry chat",
                {
                    "gen_ai.system": "Anthropic",
                    "llm.request.type": "chat",
                    "gen_ai.request.model": "claude-3-5-sonnet-20241022",
                    "gen_ai.usage.prompt_tokens": 1000,
                    "gen_ai.usage.completion_tokens": 100,
                    "gen_ai.prompt.0.content": "hello",
                    "gen_ai.completion.0.content": "hi",
                },
            ),
        ],
    )
    stored = rows(admin_conn, "mixed")
    oi, ol = stored["openinference llm"], stored["openllmetry chat"]
    assert (oi["provider"], oi["operation"], oi["session_id"]) == ("anthropic", "chat", "sess-1")
    assert oi["cost_usd"] == pytest.approx(1000 * 0.8e-6 + 100 * 4e-6)
    assert (ol["provider"], ol["operation"], ol["input_tokens"]) == ("anthropic", "chat", 1000)
    assert ol["cost_usd"] == pytest.approx(1000 * 3e-6 + 100 * 15e-6)


def test_hand_written_otlp_json(start_collector, admin_conn):
    c = start_collector()
    now = time.time_ns()
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-app"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "name": "chat",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + 2_000_000),
                                "status": {"code": 2, "message": "upstream 500"},
                                "attributes": [
                                    {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "4000"}},
                                    {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 100}},
                                    {"key": "flags", "value": {"arrayValue": {"values": [{"boolValue": True}]}}},
                                ],
                                "events": [{"name": "retry", "timeUnixNano": str(now + 1000)}],
                                "links": [
                                    {
                                        "traceId": "0AF7651916CD43DD8448EB211C80319C",
                                        "spanId": "B7AD6B7169203331",
                                        "traceState": "vendor=1",
                                        "attributes": [{"key": "link.reason", "value": {"stringValue": "retry of"}}],
                                    }
                                ],
                            },
                            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "00ff", "name": "bad id"},
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b175",
                                "name": "bad link",
                                "startTimeUnixNano": str(now),
                                "links": [{"traceId": "xyz", "spanId": "B7AD6B7169203331"}],
                            },
                        ],
                    }
                ],
            }
        ]
    }
    response = http_export(c.http_url, json.dumps(body).encode(), c.token, content_type="application/json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json()["partialSuccess"]["rejectedSpans"] == "2"
    assert "span id" in response.json()["partialSuccess"]["errorMessage"]
    assert "link 0" in response.json()["partialSuccess"]["errorMessage"]
    row = rows(admin_conn, "json-app")["chat"]
    assert (row["trace_id"], row["span_id"], row["kind"]) == (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        "client",
    )
    assert (row["status_code"], row["status_message"], row["input_tokens"]) == ("error", "upstream 500", 4000)
    assert row["cost_usd"] == pytest.approx(4000 * 0.15e-6 + 100 * 0.6e-6)
    assert row["attributes"]["flags"] == [True] and row["events"][0]["name"] == "retry"
    assert row["links"] == [
        {
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331",
            "trace_state": "vendor=1",
            "attributes": {"link.reason": "retry of"},
        }
    ]

    gzipped = http_export(
        c.http_url,
        gzip.compress(json.dumps({"resourceSpans": []}).encode()),
        c.token,
        content_type="application/json",
        headers={"content-encoding": "gzip"},
    )
    assert (gzipped.status_code, gzipped.json()) == (200, {})


def test_api_key_is_required_and_decides_the_project(start_collector, admin_conn):
    from llmobs.store.apikeys import generate_api_key, store_key

    c = start_collector()
    reader = generate_api_key().token
    store_key(admin_conn, reader, project="default", role="reader", name="r")
    other = generate_api_key().token
    store_key(admin_conn, other, project="acme", role="writer", name="w")
    body = otlp_request([{"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "x"}])

    assert grpc_export(c.grpc_target, body, None)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_export(c.grpc_target, body, "llmobs_wrongwrongwro_" + "x" * 32)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_export(c.grpc_target, body, reader)[0] == grpc.StatusCode.PERMISSION_DENIED
    assert http_export(c.http_url, body, None).status_code == 401
    assert http_export(c.http_url, body, "not-a-key").status_code == 401
    assert http_export(c.http_url, body, reader).status_code == 403
    assert admin_conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 0

    assert grpc_export(c.grpc_target, body, other)[0] == grpc.StatusCode.OK
    project = admin_conn.execute("SELECT p.name FROM spans s JOIN projects p ON p.id = s.project_id").fetchone()
    assert project == ("acme",)
    # `llmobs keys list` tells when a key was last presented (the reader's was, and refused)
    store_key(admin_conn, generate_api_key().token, project="acme", role="writer", name="unused")
    used = dict(
        admin_conn.execute(
            "SELECT name, last_used_at IS NOT NULL FROM api_keys WHERE name IN ('r', 'w', 'unused')"
        ).fetchall()
    )
    assert used == {"w": True, "r": True, "unused": False}


def test_a_revoked_key_is_refused_at_once_despite_the_key_cache(start_collector, admin_conn):
    """The collector caches key lookups (here for 10 minutes); PostgreSQL announces the revocation
    and the key stops working within a moment, on both transports."""
    from llmobs.store import apikeys

    c = start_collector(COLLECTOR_AUTH_CACHE_SECONDS="600")
    created = apikeys.create_key(admin_conn, project="default", role="writer", actor="test")
    body = otlp_request([{"trace_id": "ef" * 16, "span_id": "01" * 8, "name": "before revocation"}])
    assert grpc_export(c.grpc_target, body, created.token)[0] == grpc.StatusCode.OK
    assert http_export(c.http_url, body, created.token).status_code == 200  # both answers now cached

    apikeys.revoke(admin_conn, created.key.key_id, actor="test")
    # The announcement takes a moment to arrive: probe until the key is refused (a probe accepted
    # before that is stored, under its own name), then nothing sent with it may be stored.
    probe = otlp_request([{"trace_id": "ef" * 16, "span_id": "03" * 8, "name": "probe"}])
    deadline = time.monotonic() + 5
    while grpc_export(c.grpc_target, probe, created.token)[0] != grpc.StatusCode.UNAUTHENTICATED:
        assert time.monotonic() < deadline, "the revoked key is still accepted"
        time.sleep(0.05)
    print(f"revoked key refused {5 - (deadline - time.monotonic()):.2f} s after the revocation")
    late = otlp_request([{"trace_id": "ef" * 16, "span_id": "02" * 8, "name": "after revocation"}])
    assert grpc_export(c.grpc_target, late, created.token)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert http_export(c.http_url, late, created.token).status_code == 401
    names = {n for (n,) in admin_conn.execute("SELECT name FROM spans WHERE trace_id = %s", ("ef" * 16,))}
    assert "before revocation" in names and "after revocation" not in names
    assert grpc_export(c.grpc_target, body, c.token)[0] == grpc.StatusCode.OK  # other keys unaffected


def test_health_metrics_and_ingest_stats(start_collector, admin_conn):
    c = start_collector()
    code, body = c.health()
    assert code == 200 and body["status"] == "ok" and body["version"]
    spans = [
        {
            "trace_id": "12" * 16,
            "span_id": f"{i:016x}",
            "attributes": {"gen_ai.request.model": "no-price-llm", "gen_ai.usage.input_tokens": 3},
        }
        for i in range(1, 6)
    ]
    assert grpc_export(c.grpc_target, otlp_request(spans), c.token)[0] == grpc.StatusCode.OK
    assert c.metric('llmobs_collector_spans_received_total{transport="grpc"}') == 5
    assert c.metric("llmobs_collector_spans_written_total") == 5
    assert c.metric("llmobs_collector_spans_unknown_model_price_total") == 5
    assert c.metric("llmobs_collector_batch_spans_count") >= 1
    assert c.stop() == 0  # flushes the ingest counts
    accepted = admin_conn.execute(
        "SELECT sum(accepted) FROM llmobs_ingest_stats WHERE source = 'collector-grpc'"
    ).fetchone()[0]
    assert accepted == 5


def test_new_traces_are_announced_on_redis(start_collector, redis_server):
    import redis

    c = start_collector()
    client = redis.Redis(
        host=redis_server.host, port=redis_server.port, username=redis_server.user, password=redis_server.password
    )
    pubsub = client.pubsub()
    pubsub.subscribe("llmobs:traces:1")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    trace = "ee" * 16
    t0 = time.time_ns() // 10**9 * 10**9  # a whole second
    spans = [
        {"trace_id": trace, "span_id": "01" * 8, "name": "root", "start": t0 + 2_000},
        {"trace_id": trace, "span_id": "02" * 8, "parent": "01" * 8, "name": "child", "status": 2, "start": t0 + 1_000},
    ]
    assert (
        grpc_export(c.grpc_target, otlp_request(spans, {"service.name": "announcer"}), c.token)[0] == grpc.StatusCode.OK
    )
    message = pubsub.get_message(timeout=10)
    assert message is not None and message["type"] == "message"
    assert json.loads(message["data"]) == {
        "project_id": 1,
        "trace_id": trace,
        "span_count": 2,
        "service_name": "announcer",
        "root_name": "root",
        "start_time": datetime.fromtimestamp(t0 // 10**9, UTC).replace(microsecond=1).isoformat(),
        "has_error": True,
    }
    pubsub.close()


def test_redis_down_never_blocks_ingestion(start_collector, admin_conn):
    from helpers.common import free_port

    c = start_collector(REDIS_PORT=str(free_port()))  # nothing listens there
    for n in range(1, 4):
        started = time.monotonic()
        body = otlp_request([{"trace_id": f"{n:032x}", "span_id": f"{n:016x}"}])
        assert grpc_export(c.grpc_target, body, c.token)[0] == grpc.StatusCode.OK
        assert time.monotonic() - started < 1.0
    assert admin_conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 3
    deadline = time.monotonic() + 5
    while c.metric("llmobs_collector_publish_errors_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c.metric("llmobs_collector_publish_errors_total") >= 1
    assert "cannot publish new traces to Redis" in c.logs()


def test_a_write_that_reaches_a_standby_is_retried_not_refused(start_collector, admin_conn):
    """A standby answers COPY with SQLSTATE 25006 ("cannot execute COPY during recovery"): under
    the `ha` profile a write can reach the new leader a moment before its promotion ends. The
    collector answers 503 with Retry-After, so the client retries, and writes once the server
    takes writes. Here a trigger on `spans` raises the standby's error."""
    admin_conn.execute(
        "CREATE FUNCTION pretend_standby() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'cannot execute COPY during recovery' USING ERRCODE = 'read_only_sql_transaction'; "
        "END $$"
    )
    admin_conn.execute(
        "CREATE TRIGGER pretend_standby BEFORE INSERT ON spans FOR EACH STATEMENT EXECUTE FUNCTION pretend_standby()"
    )
    c = start_collector()
    body = otlp_request([{"trace_id": "ab" * 16, "span_id": "01" * 8, "name": "standby"}])
    refused = http_export(c.http_url, body, c.token)
    assert refused.status_code == 503 and refused.headers.get("retry-after"), (refused.status_code, refused.text)
    admin_conn.execute("DROP TRIGGER pretend_standby ON spans")
    deadline = time.monotonic() + 30
    while (answer := http_export(c.http_url, body, c.token)).status_code != 200:
        assert answer.status_code == 503 and time.monotonic() < deadline, (answer.status_code, answer.text)
        time.sleep(0.2)
    assert admin_conn.execute("SELECT count(*) FROM spans WHERE trace_id = %s", ("ab" * 16,)).fetchone()[0] == 1


def test_prices_changed_by_the_cli_apply_without_a_restart(start_collector, admin_conn):
    from llmobs.collector.pricing import rule_from_fields, set_price

    c = start_collector(COLLECTOR_PRICE_REFRESH_SECONDS="1")
    span = {"attributes": {"gen_ai.request.model": "house-llm", "gen_ai.usage.input_tokens": 1_000_000}}
    assert (
        grpc_export(c.grpc_target, otlp_request([{**span, "trace_id": "01" * 16, "span_id": "01" * 8}]), c.token)[0]
        == grpc.StatusCode.OK
    )
    set_price(
        admin_conn,
        rule_from_fields({"model_pattern": "^house-llm$", "input_per_mtok": 7, "output_per_mtok": 1}, where="test"),
    )
    time.sleep(2.5)
    assert (
        grpc_export(c.grpc_target, otlp_request([{**span, "trace_id": "02" * 16, "span_id": "02" * 8}]), c.token)[0]
        == grpc.StatusCode.OK
    )
    costs = dict(admin_conn.execute("SELECT trace_id, cost_usd FROM spans").fetchall())
    assert costs == {"01" * 16: None, "02" * 16: 7.0}


def test_queue_full_is_refused_with_retry_after_and_sigterm_drains(start_collector, pg_server, db_name):
    """While PostgreSQL holds the writer back, the queue fills: 429 / RESOURCE_EXHAUSTED with a retry
    hint. SIGTERM then waits until what was accepted is committed."""
    import psycopg

    c = start_collector(COLLECTOR_QUEUE_MAX_SPANS="10", COLLECTOR_DRAIN_SECONDS="30")
    refused = 'llmobs_collector_spans_refused_total{reason="queue_full"}'
    # Exported at 0 before the first refusal, so that Prometheus' rate() sees the first ones.
    assert f"{refused} 0.0" in httpx.get(f"{c.metrics_url}/metrics", timeout=5).text.splitlines()
    lock = psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", password=pg_server.password, dbname=db_name
    )
    lock.execute("LOCK TABLE spans IN ACCESS EXCLUSIVE MODE")
    first = otlp_request([{"trace_id": "aa" * 16, "span_id": f"{i:016x}"} for i in range(1, 9)])
    results: list = []
    sender = threading.Thread(target=lambda: results.append(grpc_export(c.grpc_target, first, c.token)))
    sender.start()
    deadline = time.monotonic() + 10
    while c.metric("llmobs_collector_queue_spans") < 8 and time.monotonic() < deadline:
        time.sleep(0.05)

    second = otlp_request([{"trace_id": "bb" * 16, "span_id": f"{i:016x}"} for i in range(1, 9)])
    code, _, trailers = grpc_export(c.grpc_target, second, c.token)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "google.rpc.retryinfo-bin" in trailers
    response = http_export(c.http_url, second, c.token)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert c.metric(refused) == 16

    c.proc.send_signal(15)
    time.sleep(1)
    assert c.proc.poll() is None  # still draining: the first request is not committed yet
    lock.rollback()
    lock.close()
    sender.join(timeout=30)
    assert results[0][0] == grpc.StatusCode.OK
    assert c.proc.wait(timeout=30) == 0
    with psycopg.connect(
        host=pg_server.host, port=pg_server.port, user="postgres", password=pg_server.password, dbname=db_name
    ) as conn:
        assert conn.execute("SELECT trace_id, count(*) FROM spans GROUP BY 1").fetchall() == [("aa" * 16, 8)]


def test_several_workers_share_the_ports_and_report_together(start_collector, admin_conn):
    c = start_collector(COLLECTOR_WORKERS="2")
    code, body = c.health()
    assert code == 200 and body["workers"] == 2
    for n in range(1, 21):  # a new connection each time: the kernel spreads them over the workers
        spans = [{"trace_id": f"{n:032x}", "span_id": f"{n:08x}{i:08x}"} for i in range(1, 6)]
        assert grpc_export(c.grpc_target, otlp_request(spans), c.token)[0] == grpc.StatusCode.OK
        assert http_export(c.http_url, otlp_request(spans), c.token).status_code == 200
    assert admin_conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 200
    assert c.metric("llmobs_collector_spans_received_total") == 200
    assert c.metric("llmobs_collector_database_up") == 1
    assert c.stop() == 0
