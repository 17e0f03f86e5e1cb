"""OTLP decoding: JSON (ids in hex, enums as numbers or names, 64-bit integers as strings) and
protobuf give the same spans; a body that is not OTLP is refused as a whole."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from llmobs.collector.otlp import InvalidRequest, JsonRequest, ProtobufRequest

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"


def json_body(span: dict[str, Any], resource: list[dict[str, Any]] | None = None) -> bytes:
    base = {"traceId": TRACE_ID, "spanId": SPAN_ID, "name": "chat", "startTimeUnixNano": 1, "endTimeUnixNano": 2}
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": resource or []},
                    "scopeSpans": [{"scope": {"name": "sdk"}, "spans": [base | span]}],
                }
            ]
        }
    )


def only_span(body: bytes) -> Any:
    (span,) = JsonRequest(body).raw_spans()
    return span


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"stringValue": "gpt-4o"}, "gpt-4o"),
        ({"intValue": "9007199254740993"}, 9007199254740993),  # 64-bit as a string, exact
        ({"intValue": 42}, 42),
        ({"intValue": "not a number"}, None),
        ({"doubleValue": 0.5}, 0.5),
        ({"boolValue": True}, True),
        ({"boolValue": "true"}, False),  # only a JSON true is true
        ({"arrayValue": {"values": [{"stringValue": "stop"}, {"intValue": "1"}]}}, ["stop", 1]),
        ({"kvlistValue": {"values": [{"key": "a", "value": {"boolValue": False}}]}}, {"a": False}),
        ({"string_value": "snake case"}, "snake case"),
        ({}, None),
        ("not an object", None),
    ],
)
def test_json_attribute_values(value: Any, expected: Any) -> None:
    span = only_span(json_body({"attributes": [{"key": "k", "value": value}]}))
    assert span.attributes == {"k": expected}


@pytest.mark.parametrize(
    ("fields", "kind", "status"),
    [
        ({}, "internal", "unset"),
        ({"kind": 3, "status": {"code": 2}}, "client", "error"),
        ({"kind": "SPAN_KIND_SERVER", "status": {"code": "STATUS_CODE_OK"}}, "server", "ok"),
        ({"kind": 99, "status": {"code": 7}}, "internal", "unset"),  # unknown numbers: the defaults
        ({"kind": "SPAN_KIND_NONSENSE"}, "internal", "unset"),
    ],
)
def test_json_enums_as_numbers_or_names(fields: dict[str, Any], kind: str, status: str) -> None:
    span = only_span(json_body(fields))
    assert (span.kind, span.status_code) == (kind, status)


@pytest.mark.parametrize(
    ("fields", "start", "parent"),
    [
        ({"startTimeUnixNano": "1700000000000000001"}, 1700000000000000001, None),
        (
            {"startTimeUnixNano": None, "start_time_unix_nano": 5, "parentSpanId": "ABCDEF0123456789"},
            5,
            "abcdef0123456789",
        ),
        ({"startTimeUnixNano": "soon", "parentSpanId": ""}, 0, None),  # the pipeline refuses a zero time
    ],
)
def test_json_times_and_ids(fields: dict[str, Any], start: int, parent: str | None) -> None:
    span = only_span(json_body(fields))
    assert (span.start_time, span.parent_span_id, span.trace_id) == (start, parent, TRACE_ID)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"[]", "the body must be an object"),
        (b'{"resourceSpans": {}}', "resourceSpans must be a list"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": 3}]}]}', "spans must be a list"),
    ],
)
def test_json_that_is_not_otlp_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        list(JsonRequest(body).raw_spans())


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x05\x0a\x03"])
def test_malformed_protobuf_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="malformed protobuf"):
        ProtobufRequest(body)


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


@pytest.mark.parametrize(
    ("value", "json_value", "expected"),
    [
        (AnyValue(string_value="gpt-4o"), {"stringValue": "gpt-4o"}, "gpt-4o"),
        (AnyValue(string_value=""), {"stringValue": ""}, ""),
        (AnyValue(int_value=2**62), {"intValue": str(2**62)}, 2**62),
        (AnyValue(int_value=0), {"intValue": "0"}, 0),
        (AnyValue(bool_value=False), {"boolValue": False}, False),
        (AnyValue(), {}, None),
        (AnyValue(double_value=1.5), {"doubleValue": 1.5}, 1.5),
        (AnyValue(bool_value=True), {"boolValue": True}, True),
        (
            AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="a"), AnyValue(int_value=1)])),
            {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}},
            ["a", 1],
        ),
        (
            AnyValue(kvlist_value=KeyValueList(values=[kv("x", AnyValue(bool_value=False))])),
            {"kvlistValue": {"values": [{"key": "x", "value": {"boolValue": False}}]}},
            {"x": False},
        ),
    ],
)
def test_protobuf_and_json_decode_alike(value: AnyValue, json_value: dict[str, Any], expected: Any) -> None:
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=bytes.fromhex(TRACE_ID),
                                span_id=bytes.fromhex(SPAN_ID),
                                name="chat",
                                kind=Span.SPAN_KIND_CLIENT,
                                start_time_unix_nano=1,
                                end_time_unix_nano=2,
                                status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
                                attributes=[kv("k", value)],
                            )
                        ]
                    )
                ]
            )
        ]
    )
    (from_pb,) = ProtobufRequest(request.SerializeToString()).raw_spans()
    from_json = only_span(
        json_body(
            {
                "kind": 3,
                "status": {"code": 2, "message": "boom"},
                "attributes": [{"key": "k", "value": json_value}],
            }
        )
    )
    assert from_pb.attributes == from_json.attributes == {"k": expected}
    assert (from_pb.trace_id, from_pb.span_id, from_pb.kind, from_pb.status_code, from_pb.status_message) == (
        TRACE_ID,
        SPAN_ID,
        "client",
        "error",
        "boom",
    )
    assert (from_json.kind, from_json.status_code, from_json.status_message) == ("client", "error", "boom")
