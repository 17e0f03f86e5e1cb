"""OTLP logs and metrics: the collector's receivers (gRPC and HTTP, protobuf, JSON, gzip) with
their auth, limits and partial success, GenAI log events joined to their span's messages whether
they come before or after the span, and GenAI metrics read back as series through the API; then
the real ``opentelemetry-instrumentation-openai-v2`` in its default mode, driving the real
``openai`` SDK against a fake OpenAI server, exporting with the OTel SDK's own exporters."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValueList

from llmobs.config import Settings

from helpers.api import api_client, make_project
from helpers.collector import (
    LOGS_EXPORT,
    METRICS_EXPORT,
    grpc_export,
    http_export,
    key_value,
    otlp_request,
)
from helpers.fake_openai import COMPLETION_TOKENS, PROMPT_TOKENS

TRACE = "5b8aa5a2d2c872e8321cf37308d69df2"
LLM_SPAN, TOOL_SPAN = "051581bf3cb55c13", "1a2b3c4d5e6f7081"
SECRET = "sk-" + "A1b2C3d4E5" * 4  # the default secret detectors redact it
TOOL_LINE = "tool weather called:\t{'city': 'C:\\Paris'}\nok"  # COPY's special characters survive
BOUNDS = [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0]
HELPERS = Path(__file__).parents[1] / "helpers"


def any_value(value: Any) -> AnyValue:
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[key_value(k, v) for k, v in value.items()]))
    return key_value("v", value).value


def logs_request(records: list[dict[str, Any]], service: str = "chatbot") -> bytes:
    """An ExportLogsServiceRequest; each record: trace_id, span_id (hex), event_name, body, attributes."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(key_value("service.name", service))
    sl = rl.scope_logs.add()
    sl.scope.name = "tests"
    for r in records:
        rec = sl.log_records.add(time_unix_nano=r.get("time", time.time_ns()), severity_number=9)
        rec.trace_id = bytes.fromhex(r.get("trace_id", ""))
        rec.span_id = bytes.fromhex(r.get("span_id", ""))
        rec.event_name = r.get("event_name", "")
        if "body" in r:
            rec.body.CopyFrom(any_value(r["body"]))
        for k, v in r.get("attributes", {}).items():
            rec.attributes.append(key_value(k, v))
    return req.SerializeToString()


def metrics_request(metrics: list[dict[str, Any]], service: str = "chatbot") -> bytes:
    """An ExportMetricsServiceRequest; each metric: name, unit, kind (histogram, sum, gauge),
    temporality (1 delta, 2 cumulative), points [{attributes, time, start, count, sum, counts | value}]."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(key_value("service.name", service))
    sm = rm.scope_metrics.add()
    for m in metrics:
        metric = sm.metrics.add(name=m["name"], unit=m.get("unit", ""))
        data = getattr(metric, m["kind"])
        if m["kind"] != "gauge":
            data.aggregation_temporality = m.get("temporality", 2)
        for p in m["points"]:
            dp = data.data_points.add(time_unix_nano=p["time"], start_time_unix_nano=p.get("start", 0))
            for k, v in p.get("attributes", {}).items():
                dp.attributes.append(key_value(k, v))
            if m["kind"] == "histogram":
                dp.count, dp.sum = p["count"], p["sum"]
                dp.explicit_bounds.extend(p.get("bounds", BOUNDS))
                dp.bucket_counts.extend(p["counts"])
            else:
                dp.as_double = p["value"]
    return req.SerializeToString()


def test_logs_and_metrics_over_http_and_grpc(start_collector, settings: Settings):
    collector = start_collector(COLLECTOR_MAX_REQUEST_BYTES="65536")
    token, now = collector.token, time.time_ns()

    # A GenAI event before its span exists, and a record with a malformed span id: partial success.
    before = logs_request(
        [
            {
                "trace_id": TRACE,
                "span_id": LLM_SPAN,
                "event_name": "gen_ai.user.message",
                "body": {"content": f"What is the capital of France? My key is {SECRET}"},
                "time": now - 3_000_000,
            },
            {"trace_id": TRACE, "span_id": "abcd", "body": "broken ids"},
        ]
    )
    response = http_export(collector.http_url, before, token, path="/v1/logs")
    assert response.status_code == 200, response.text
    partial = ExportLogsServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_log_records == 1 and "span id" in partial.error_message

    # The span, then (OTLP/JSON, gzip) the completion after it, its event name in an attribute.
    span = {
        "trace_id": TRACE,
        "span_id": LLM_SPAN,
        "name": "chat gpt-4o",
        "kind": 3,
        "start": now - 5_000_000,
        "end": now,
        "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
    }
    assert http_export(collector.http_url, otlp_request([span]), token).status_code == 200
    after = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "chatbot"}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": str(now - 1_000_000),
                                "traceId": TRACE.upper(),
                                "spanId": LLM_SPAN,
                                "attributes": [{"key": "event.name", "value": {"stringValue": "gen_ai.choice"}}],
                                "body": {
                                    "kvlistValue": {
                                        "values": [
                                            {"key": "index", "value": {"intValue": "0"}},
                                            {"key": "finish_reason", "value": {"stringValue": "stop"}},
                                            {
                                                "key": "message",
                                                "value": {
                                                    "kvlistValue": {
                                                        "values": [
                                                            {"key": "content", "value": {"stringValue": "Paris."}}
                                                        ]
                                                    }
                                                },
                                            },
                                        ]
                                    }
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    }
    response = http_export(
        collector.http_url,
        gzip.compress(json.dumps(after).encode()),
        token,
        content_type="application/json",
        headers={"content-encoding": "gzip"},
        path="/v1/logs",
    )
    assert response.status_code == 200 and response.json() == {}, response.text

    # gRPC: a plain log line of another span of the trace.
    plain = logs_request([{"trace_id": TRACE, "span_id": TOOL_SPAN, "body": TOOL_LINE, "time": now}])
    code, answer, _ = grpc_export(collector.grpc_target, plain, token, method=LOGS_EXPORT)
    assert code == grpc.StatusCode.OK, answer

    # Refusals: no key, a key of no project, a reader's key, too large.
    assert http_export(collector.http_url, plain, None, path="/v1/logs").status_code == 401
    reader = make_project(settings, "readers").keys["reader"]
    refused = http_export(collector.http_url, plain, reader, path="/v1/logs", content_type="application/json")
    assert refused.status_code == 403 and "cannot ingest log records" in refused.json()["message"]
    code, _, _ = grpc_export(collector.grpc_target, plain, "llmobs_nope", method=METRICS_EXPORT)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    huge = logs_request([{"body": "x" * 70_000}])
    assert http_export(collector.http_url, huge, token, path="/v1/metrics").status_code == 413
    logged = collector.logs()  # each refusal logged as the span receivers' are
    assert "refused http request: unauthenticated (401)" in logged and "refused grpc request: unauth" in logged
    assert "refused http request: permission_denied (403)" in logged and reader not in logged

    # Metrics: cumulative token usage (two exports), a histogram whose buckets do not fit its
    # bounds (rejected), a metric that is not GenAI (accepted, counted, not stored).
    usage = {"gen_ai.token.type": "input", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai"}
    start = now - 120_000_000_000
    body = metrics_request(
        [
            {
                "name": "gen_ai.client.token.usage",
                "unit": "{token}",
                "kind": "histogram",
                "points": [
                    {"attributes": usage, "time": now - 60_000_000_000, "start": start, "count": 1, "sum": 100,
                     "counts": [0, 0, 0, 0, 1, 0, 0]},
                    {"attributes": {**usage, "gen_ai.token.type": "output"}, "time": now - 60_000_000_000,
                     "start": start, "count": 1, "sum": 10, "counts": [0, 0, 1, 0, 0, 0, 0]},
                ],
            },
            {"name": "gen_ai.client.operation.duration", "kind": "histogram",
             "points": [{"time": now, "count": 1, "sum": 1.0, "counts": [1, 0]}]},
            {"name": "process.cpu.utilization", "kind": "gauge", "points": [{"time": now, "value": 0.5}]},
        ]
    )  # fmt: skip
    response = http_export(collector.http_url, body, token, path="/v1/metrics")
    assert response.status_code == 200, response.text
    partial = ExportMetricsServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_data_points == 1 and "bucket" in partial.error_message
    later = metrics_request(
        [{"name": "gen_ai.client.token.usage", "unit": "{token}", "kind": "histogram",
          "points": [{"attributes": usage, "time": now, "start": start, "count": 3, "sum": 400,
                      "counts": [0, 0, 0, 1, 2, 0, 0]}]}]
    )  # fmt: skip
    code, answer, _ = grpc_export(collector.grpc_target, later, token, method=METRICS_EXPORT)
    assert code == grpc.StatusCode.OK, answer
    # OTLP/JSON: a delta sum, two points
    sums = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "gen_ai.test.retries",
                                "sum": {
                                    "aggregationTemporality": "AGGREGATION_TEMPORALITY_DELTA",
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {"timeUnixNano": str(now - 1000), "asInt": "2"},
                                        {"timeUnixNano": str(now), "asDouble": 3.0},
                                    ],
                                },
                            }
                        ]
                    }
                ]
            }
        ]
    }
    response = http_export(
        collector.http_url, json.dumps(sums).encode(), token, content_type="application/json", path="/v1/metrics"
    )
    assert response.status_code == 200 and response.json() == {}, response.text
    counted = httpx.get(f"{collector.metrics_url}/metrics").text
    assert 'llmobs_collector_signal_items_total{outcome="not_stored",signal="metrics"} 1.0' in counted, counted

    with api_client(settings) as client:
        auth = {"Authorization": f"Bearer {settings.secret('LLMOBS_ADMIN_API_KEY')}"}
        got = client.get(f"/api/v1/spans/{LLM_SPAN}", headers=auth).json()
        assert [(m["role"], m["parts"]) for m in got["input_messages"]] == [
            ("user", [{"type": "text", "content": "What is the capital of France? My key is [REDACTED:api_key]"}])
        ]
        assert got["output_messages"][0]["parts"] == [{"type": "text", "content": "Paris."}]
        assert got["output_messages"][0]["finish_reason"] == "stop"
        trace = client.get(f"/api/v1/traces/{TRACE}", headers=auth).json()
        assert trace["roots"][0]["output_messages"] == got["output_messages"]
        query = f'{{ span(spanId: "{LLM_SPAN}") {{ inputMessages outputMessages }} }}'
        graphql = client.post("/graphql", json={"query": query}, headers=auth).json()["data"]["span"]
        assert graphql == {"inputMessages": got["input_messages"], "outputMessages": got["output_messages"]}

        logs = client.get(f"/api/v1/traces/{TRACE}/logs", headers=auth).json()
        assert [r["event_name"] for r in logs["log_records"]] == ["gen_ai.user.message", "gen_ai.choice", None]
        assert logs["log_records"][0]["service_name"] == "chatbot" and not logs["truncated"]
        tool_logs = client.get(f"/api/v1/spans/{TOOL_SPAN}/logs", headers=auth).json()["log_records"]
        assert [r["body"] for r in tool_logs] == [TOOL_LINE]

        series = client.get(
            "/api/v1/metrics/series",
            params={"name": "gen_ai.client.token.usage", "group_by": "token_type", "from": "2000-01-01T00:00:00Z"},
            headers=auth,
        ).json()
        assert series["kind"] == "histogram" and series["unit"] == "{token}"
        by_type = {s["group"]: s["points"] for s in series["series"]}
        # cumulative points become deltas: 1 call of 100 tokens, then 2 more of 300 in all
        assert sum(p["count"] for p in by_type["input"]) == 3
        assert sum(p["sum"] for p in by_type["input"]) == 400
        assert sum(p["sum"] for p in by_type["output"]) == 10
        retries = client.get(
            "/api/v1/metrics/series",
            params={"name": "gen_ai.test.retries", "from": "2000-01-01T00:00:00Z"},
            headers=auth,
        ).json()
        assert retries["kind"] == "sum" and sum(p["value"] for p in retries["series"][0]["points"]) == 5
        none = client.get("/api/v1/metrics/series", params={"name": "gen_ai.nothing"}, headers=auth).json()
        assert none["series"] == [] and none["kind"] is None
        assert client.get("/api/v1/metrics/series", params={"name": "cpu"}, headers=auth).status_code == 422


def test_openai_v2_default_mode_sends_messages_as_logs_and_usage_as_metrics(
    start_collector, settings: Settings, fake_openai
):
    """The official instrumentation on its defaults (content capture on), through the SDK's
    gRPC and HTTP exporters: messages, log records and metric series read back through the API."""
    collector = start_collector()
    for protocol in ("grpc", "http"):
        endpoint = collector.http_url if protocol == "http" else f"http://{collector.grpc_target}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_"))},
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{collector.token}",
            "OTEL_SERVICE_NAME": f"openai-v2-{protocol}",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
            "OPENAI_BASE_URL": fake_openai.base_url,
        }
        run = subprocess.run(
            [sys.executable, str(HELPERS / "genai_signals_driver.py"), protocol],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Failed to export" not in run.stderr, run.stderr[-3000:]

    with api_client(settings) as client:
        auth = {"Authorization": f"Bearer {settings.secret('LLMOBS_ADMIN_API_KEY')}"}
        for protocol in ("grpc", "http"):
            listed = client.get("/api/v1/traces", params={"service": f"openai-v2-{protocol}"}, headers=auth).json()
            assert len(listed["traces"]) == 3, listed
            questions, answers = [], []
            for summary in listed["traces"]:
                trace = client.get(f"/api/v1/traces/{summary['trace_id']}", headers=auth).json()
                (span,) = trace["roots"]
                assert span["request_model"] == "gpt-4o-mini" and span["input_tokens"] == PROMPT_TOKENS
                questions.append([m["parts"][0]["content"] for m in span["input_messages"]])
                answers += [m["parts"][0]["content"] for m in span["output_messages"]]
                logs = client.get(f"/api/v1/spans/{span['span_id']}/logs", headers=auth).json()["log_records"]
                assert {r["event_name"] for r in logs} >= {"gen_ai.user.message", "gen_ai.choice"}
                assert all(r["trace_id"] == summary["trace_id"] for r in logs)
            assert sorted(questions) == [
                ["Be brief.", "And GenAI events?"],
                ["Be brief.", "What is OTLP?"],
                ["Stream please"],
            ]
            assert len(answers) == 3 and all(a.startswith("Hello from fake") for a in answers), answers
            # q= finds the messages the log records carried
            found = client.get(
                "/api/v1/traces", params={"service": f"openai-v2-{protocol}", "q": "GenAI events"}, headers=auth
            ).json()["traces"]
            assert len(found) == 1, found

            def series(name: str, protocol: str = protocol, **params: str) -> dict[str, Any]:
                query = {"name": name, "service": f"openai-v2-{protocol}", "from": "2000-01-01T00:00:00Z", **params}
                return client.get("/api/v1/metrics/series", params=query, headers=auth).json()

            tokens = series("gen_ai.client.token.usage", group_by="token_type")
            by_type = {s["group"]: s["points"] for s in tokens["series"]}
            # openai-v2 2.4b0 records token usage of the two plain calls, not of the stream
            assert sum(p["count"] for p in by_type["input"]) == 2, tokens
            assert sum(p["sum"] for p in by_type["input"]) == 2 * PROMPT_TOKENS, tokens
            assert sum(p["sum"] for p in by_type["output"]) == 2 * COMPLETION_TOKENS, tokens
            durations = series("gen_ai.client.operation.duration", group_by="operation")
            (duration,) = durations["series"]
            assert duration["group"] == "chat" and durations["unit"] == "s"
            assert sum(p["count"] for p in duration["points"]) == 3
            assert all(p["p50"] is not None and p["p50"] >= 0 for p in duration["points"])


def test_logs_and_metrics_outside_the_time_window_are_rejected_not_retried(start_collector, admin_conn):
    """Only the days of the span window have partitions, so a record or point timestamped a year
    ago is rejected in partial_success (a retry would never succeed), and the rest of the
    request is stored."""
    collector = start_collector()
    now = time.time_ns()
    year_ago = now - 365 * 86_400 * 10**9
    logs = logs_request([{"body": "old", "time": year_ago}, {"body": "fresh", "time": now}])
    response = http_export(collector.http_url, logs, collector.token, path="/v1/logs")
    assert response.status_code == 200, response.text
    partial = ExportLogsServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_log_records == 1 and "outside the accepted window" in partial.error_message
    bodies = [b for (b,) in admin_conn.execute("SELECT body FROM log_records")]
    assert bodies == ['"fresh"'] or bodies == ["fresh"], bodies

    metrics = metrics_request(
        [{"name": "gen_ai.client.operation.duration", "kind": "histogram",
          "points": [{"time": year_ago, "count": 1, "sum": 1.0, "counts": [1, 0, 0, 0, 0, 0, 0]},
                     {"time": now, "count": 1, "sum": 2.0, "counts": [1, 0, 0, 0, 0, 0, 0]}]}]
    )  # fmt: skip
    code, answer, _ = grpc_export(collector.grpc_target, metrics, collector.token, method=METRICS_EXPORT)
    assert code == grpc.StatusCode.OK
    partial = ExportMetricsServiceResponse.FromString(answer).partial_success
    assert partial.rejected_data_points == 1 and "outside the accepted window" in partial.error_message
    assert admin_conn.execute("SELECT count(*) FROM metric_points").fetchone()[0] == 1
