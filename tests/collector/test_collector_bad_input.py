"""Bad input gets the right error code, and the collector keeps serving (one collector for all)."""

from __future__ import annotations

import gzip
import zlib

import grpc
import httpx
import pytest

from helpers.collector import RunningCollector, grpc_export, http_export, otlp_request

MAX_BODY = 64 * 1024
MAX_DECOMPRESSED = 1024 * 1024


@pytest.fixture
def collector(start_collector) -> RunningCollector:
    return start_collector(
        COLLECTOR_MAX_REQUEST_BYTES=str(MAX_BODY), COLLECTOR_MAX_DECOMPRESSED_BYTES=str(MAX_DECOMPRESSED)
    )


def still_serving(c: RunningCollector, admin_conn) -> None:
    body = otlp_request([{"trace_id": "fe" * 16, "span_id": "fe" * 8, "name": "canary"}])
    assert grpc_export(c.grpc_target, body, c.token)[0] == grpc.StatusCode.OK
    assert http_export(c.http_url, body, c.token).status_code == 200
    assert admin_conn.execute("SELECT count(*) FROM spans WHERE name = 'canary'").fetchone()[0] == 2
    assert c.proc.poll() is None


def test_malformed_bodies(collector, admin_conn):
    c = collector
    garbage = b"\x0a\xff\xff\xff\xff\x0f not protobuf"
    code, details, _ = grpc_export(c.grpc_target, garbage, c.token)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed protobuf" in details
    response = http_export(c.http_url, garbage, c.token)
    assert response.status_code == 400 and response.headers["content-type"] == "application/x-protobuf"

    response = http_export(c.http_url, b'{"resourceSpans": [', c.token, content_type="application/json")
    assert response.status_code == 400 and "invalid JSON" in response.json()["message"]
    response = http_export(c.http_url, b'{"resourceSpans": {"a": 1}}', c.token, content_type="application/json")
    assert response.status_code == 400 and "must be a list" in response.json()["message"]
    response = http_export(c.http_url, b"\x1f\x8b\x08garbage", c.token, headers={"content-encoding": "gzip"})
    assert response.status_code == 400
    response = http_export(
        c.http_url, b"{}", c.token, content_type="application/json", headers={"content-encoding": "br"}
    )
    assert response.status_code == 415
    still_serving(c, admin_conn)


def test_wrong_content_type_method_and_path(collector, admin_conn):
    c = collector
    assert http_export(c.http_url, b"x", c.token, content_type="text/plain").status_code == 415
    assert httpx.get(f"{c.http_url}/v1/traces").status_code == 405
    assert httpx.post(f"{c.http_url}/v1/profiles", content=b"").status_code == 404
    still_serving(c, admin_conn)


def test_invalid_utf8(collector, admin_conn):
    c = collector
    valid = otlp_request([{"trace_id": "ab" * 16, "span_id": "ab" * 8, "name": "NAME"}])
    broken = valid.replace(b"NAME", b"N\xffME")
    assert grpc_export(c.grpc_target, broken, c.token)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert http_export(c.http_url, broken, c.token).status_code == 400
    body = b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "\xff"}]}]}]}'
    assert http_export(c.http_url, body, c.token, content_type="application/json").status_code == 400
    still_serving(c, admin_conn)


def test_oversized_bodies_and_gzip_bombs(collector, admin_conn):
    c = collector
    big = otlp_request([{"trace_id": "cd" * 16, "span_id": "cd" * 8, "attributes": {"blob": "x" * MAX_BODY}}])
    response = http_export(c.http_url, big, c.token)
    assert response.status_code == 413

    bomb = gzip.compress(b"\x00" * (50 * MAX_DECOMPRESSED))  # 50 MiB of zeros in about 50 KiB
    assert len(bomb) < MAX_BODY
    response = http_export(c.http_url, bomb, c.token, headers={"content-encoding": "gzip"})
    assert response.status_code == 413 and c.proc.poll() is None

    huge = otlp_request(
        [{"trace_id": "cd" * 16, "span_id": "cd" * 8, "attributes": {"blob": "y" * (2 * MAX_DECOMPRESSED)}}]
    )
    code, _, _ = grpc_export(c.grpc_target, huge, c.token)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    code, _, _ = grpc_export(c.grpc_target, huge, c.token, compression=grpc.Compression.Gzip)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(zlib.compress(huge)) < MAX_DECOMPRESSED  # the compressed message itself was small
    assert admin_conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 0
    still_serving(c, admin_conn)


def test_ids_of_the_wrong_length_are_rejected_as_partial_success(collector, admin_conn):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    c = collector
    body = otlp_request(
        [
            {"trace_id": "01" * 16, "span_id": "01" * 8, "name": "ok"},
            {"trace_id": "01" * 8, "span_id": "02" * 8, "name": "short trace id"},
            {"trace_id": "01" * 16, "span_id": "03" * 4, "name": "short span id"},
            {"trace_id": "00" * 16, "span_id": "04" * 8, "name": "zero trace id"},
        ]
    )
    code, response, _ = grpc_export(c.grpc_target, body, c.token)
    assert code == grpc.StatusCode.OK
    partial = ExportTraceServiceResponse.FromString(response).partial_success
    assert partial.rejected_spans == 3 and "trace id" in partial.error_message
    http_response = ExportTraceServiceResponse.FromString(http_export(c.http_url, body, c.token).content)
    assert http_response.partial_success.rejected_spans == 3
    assert admin_conn.execute("SELECT name, count(*) FROM spans GROUP BY 1").fetchall() == [("ok", 2)]
    still_serving(c, admin_conn)


def test_ten_thousand_attributes_on_one_span(collector, admin_conn):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    c = collector
    body = otlp_request(
        [
            {
                "trace_id": "09" * 16,
                "span_id": "09" * 8,
                "name": "wide",
                "attributes": {f"a{i}": i for i in range(10_000)},
            }
        ]
    )
    code, response, _ = grpc_export(c.grpc_target, body, c.token)
    assert code == grpc.StatusCode.OK
    partial = ExportTraceServiceResponse.FromString(response).partial_success
    assert partial.rejected_spans == 0 and "9000 attributes over the limit" in partial.error_message
    attrs = admin_conn.execute("SELECT attributes FROM spans WHERE name = 'wide'").fetchone()[0]
    assert len(attrs) == 1001 and attrs["a999"] == 999
    still_serving(c, admin_conn)


@pytest.mark.parametrize("depth", [1000, 2000])  # within and beyond what the JSON parser itself allows
def test_deeply_nested_json_is_refused(collector, admin_conn, depth):
    c = collector
    value = '{"arrayValue":{"values":[' * depth + '{"stringValue":"leaf"}' + "]}}" * depth
    body = (
        '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"'
        + "0a" * 16
        + '","spanId":"'
        + "0a" * 8
        + '","name":"deep","startTimeUnixNano":"1","attributes":[{"key":"deep","value":'
        + value
        + "}]}]}]}]}"
    )
    response = http_export(c.http_url, body.encode(), c.token, content_type="application/json")
    assert response.status_code == 400
    still_serving(c, admin_conn)
