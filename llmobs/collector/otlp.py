"""OTLP trace requests in (protobuf and JSON) and responses out.

Decoding has two steps so the collector can refuse work cheaply: parsing (in C: upb or orjson)
gives the span count for the queue's admission check, then conversion to :class:`RawSpan`
objects (the Python part) runs only for admitted requests.

OTLP/JSON differs from the generic protobuf JSON mapping: trace and span ids are hex, not
base64. Enums may be integers or names; 64-bit integers may be numbers or strings; keys are
lowerCamelCase (snake_case is accepted too).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from llmobs.collector.pipeline import RawSpan, span_link

SPAN_KINDS = ("internal", "internal", "server", "client", "producer", "consumer")  # index = OTLP enum
_KIND_NAMES = {f"SPAN_KIND_{k.upper()}": k for k in SPAN_KINDS[1:]} | {"SPAN_KIND_UNSPECIFIED": "internal"}
STATUS_CODES = ("unset", "ok", "error")
_STATUS_NAMES = {"STATUS_CODE_UNSET": "unset", "STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error"}


class InvalidRequest(ValueError):
    """The request as a whole cannot be decoded (400 / INVALID_ARGUMENT)."""


# ---------------------------------------------------------------------------------------------
# protobuf


class ProtobufRequest:
    def __init__(self, body: bytes) -> None:
        try:
            self.message = ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:  # also invalid UTF-8 in a string field
            raise InvalidRequest(f"malformed protobuf: {exc}") from None
        except RecursionError:
            raise InvalidRequest("malformed protobuf: nested too deeply") from None

    @property
    def span_count(self) -> int:
        return sum(len(ss.spans) for rs in self.message.resource_spans for ss in rs.scope_spans)

    def raw_spans(self) -> Iterator[RawSpan]:
        kinds = SPAN_KINDS
        statuses = STATUS_CODES
        for rs in self.message.resource_spans:
            resource = _pb_attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                scope = ss.scope.name or None
                for sp in ss.spans:
                    kind = sp.kind
                    status = sp.status
                    code = status.code
                    events = sp.events
                    links = sp.links
                    yield RawSpan(
                        sp.trace_id.hex(),
                        sp.span_id.hex(),
                        sp.name,
                        sp.start_time_unix_nano,
                        sp.end_time_unix_nano,
                        sp.parent_span_id.hex() or None,
                        kinds[kind] if 0 <= kind < 6 else "internal",
                        statuses[code] if 0 <= code < 3 else "unset",
                        status.message or None,
                        _pb_attributes(sp.attributes),
                        [
                            {"name": ev.name, "time": ev.time_unix_nano, "attributes": _pb_attributes(ev.attributes)}
                            for ev in events
                        ]
                        if events
                        else [],
                        resource,
                        scope,
                        [
                            span_link(
                                ln.trace_id.hex(), ln.span_id.hex(), ln.trace_state, _pb_attributes(ln.attributes)
                            )
                            for ln in links
                        ]
                        if links
                        else [],
                    )


_SCALARS = frozenset(("string_value", "int_value", "double_value", "bool_value"))


def _pb_attributes(kvs: Any) -> dict[str, Any]:
    # The hot loop of decoding; every field read crosses into upb. Most values are non-empty
    # strings: one read, and a value of another kind (or an empty string) reads "" and takes
    # WhichOneof. NaN and infinities (not JSON) are stored as null.
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        text = v.string_value
        if text:
            out[kv.key] = text
        else:
            kind = v.WhichOneof("value")
            out[kv.key] = getattr(v, kind) if kind in _SCALARS else _pb_value(v)
    return out


def _pb_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _pb_attributes(v.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind)


# ---------------------------------------------------------------------------------------------
# JSON


class JsonRequest:
    def __init__(self, body: bytes) -> None:
        try:
            self.data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"invalid JSON: {exc}") from None
        if not isinstance(self.data, dict):
            raise InvalidRequest("invalid OTLP JSON: the body must be an object")
        self.resource_spans = _list(_get(self.data, "resourceSpans", "resource_spans"), "resourceSpans")

    @property
    def span_count(self) -> int:
        count = 0
        for rs in self.resource_spans:
            for ss in _list(_get(_obj(rs), "scopeSpans", "scope_spans"), "scopeSpans"):
                count += len(_list(_get(_obj(ss), "spans"), "spans"))
        return count

    def raw_spans(self) -> Iterator[RawSpan]:
        for rs in self.resource_spans:
            resource = _json_attributes(_get(_obj(_get(rs, "resource") or {}), "attributes"))
            for ss in _list(_get(rs, "scopeSpans", "scope_spans"), "scopeSpans"):
                scope = _obj(_get(ss, "scope") or {}).get("name") or None
                for sp in _list(_get(ss, "spans"), "spans"):
                    yield _json_span(_obj(sp), resource, scope if isinstance(scope, str) else None)


def _json_span(sp: dict[str, Any], resource: dict[str, Any], scope: str | None) -> RawSpan:
    status = _obj(_get(sp, "status") or {})
    kind = _get(sp, "kind")
    code = _get(status, "code")
    return RawSpan(
        trace_id=_hex(_get(sp, "traceId", "trace_id")),
        span_id=_hex(_get(sp, "spanId", "span_id")),
        parent_span_id=_hex(_get(sp, "parentSpanId", "parent_span_id")) or None,
        name=_str(_get(sp, "name")),
        kind=_enum(kind, SPAN_KINDS, _KIND_NAMES, "internal"),
        start_time=_int(_get(sp, "startTimeUnixNano", "start_time_unix_nano")),
        end_time=_int(_get(sp, "endTimeUnixNano", "end_time_unix_nano")),
        status_code=_enum(code, STATUS_CODES, _STATUS_NAMES, "unset"),
        status_message=_str(_get(status, "message")) or None,
        attributes=_json_attributes(_get(sp, "attributes")),
        events=[
            {
                "name": _str(_get(_obj(ev), "name")),
                "time": _int(_get(ev, "timeUnixNano", "time_unix_nano")),
                "attributes": _json_attributes(_get(ev, "attributes")),
            }
            for ev in _list(_get(sp, "events"), "events")
        ],
        resource=resource,
        scope_name=scope,
        links=[
            span_link(
                _hex(_get(ln, "traceId", "trace_id")),
                _hex(_get(ln, "spanId", "span_id")),
                _str(_get(ln, "traceState", "trace_state")),
                _json_attributes(_get(ln, "attributes")),
            )
            for ln in map(_obj, _list(_get(sp, "links"), "links"))
        ],
    )


def _get(obj: dict[str, Any], camel: str, snake: str | None = None) -> Any:
    value = obj.get(camel)
    if value is None and snake is not None:
        value = obj.get(snake)
    return value


def _obj(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"invalid OTLP JSON: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"invalid OTLP JSON: {name} must be a list")
    return value


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _hex(value: Any) -> str:
    """Ids are hex in OTLP/JSON; anything else is passed on as is and rejected by the pipeline."""
    return value.lower() if isinstance(value, str) else ""


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _enum(value: Any, by_number: tuple[str, ...], by_name: dict[str, str], default: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(by_number):
        return by_number[value]
    if isinstance(value, str):
        return by_name.get(value, default)
    return default


def _json_attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in _list(kvs, "attributes"):
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[kv["key"]] = _json_value(kv.get("value"))
    return out


def _json_value(v: Any) -> Any:
    if not isinstance(v, dict) or not v:
        return None
    if "stringValue" in v or "string_value" in v:
        return _str(_get(v, "stringValue", "string_value"))
    if "intValue" in v or "int_value" in v:
        raw = _get(v, "intValue", "int_value")
        try:
            return int(raw)
        except (TypeError, ValueError):
            return None
    if "doubleValue" in v or "double_value" in v:
        raw = _get(v, "doubleValue", "double_value")
        return raw if isinstance(raw, (int, float)) and not isinstance(raw, bool) else _str(raw) or None
    if "boolValue" in v or "bool_value" in v:
        return _get(v, "boolValue", "bool_value") is True
    if "arrayValue" in v or "array_value" in v:
        inner = _get(v, "arrayValue", "array_value")
        return [_json_value(x) for x in _list(inner.get("values") if isinstance(inner, dict) else None, "values")]
    if "kvlistValue" in v or "kvlist_value" in v:
        inner = _get(v, "kvlistValue", "kvlist_value")
        return _json_attributes(inner.get("values") if isinstance(inner, dict) else None)
    if "bytesValue" in v or "bytes_value" in v:
        return _str(_get(v, "bytesValue", "bytes_value"))
    return None


# ---------------------------------------------------------------------------------------------
# responses


def export_response(rejected: int, message: str, *, json: bool) -> bytes:
    """An ExportTraceServiceResponse; ``partial_success`` only when spans were rejected or a
    warning is due (the spec's "full success" is an empty response)."""
    if json:
        if not rejected and not message:
            return b"{}"
        return orjson.dumps({"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}})
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return response.SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def status_body(grpc_code: int, message: str, *, json: bool) -> bytes:
    """A ``google.rpc.Status`` (the body of an OTLP/HTTP error response)."""
    if json:
        return orjson.dumps({"code": grpc_code, "message": message})
    text = message.encode()
    return b"\x08" + _varint(grpc_code) + b"\x12" + _varint(len(text)) + text


def retry_info(seconds: int) -> bytes:
    """A serialized ``google.rpc.RetryInfo`` (gRPC trailer ``google.rpc.retryinfo-bin``) asking
    the client to wait ``seconds`` before retrying; OTel SDK exporters honour it."""
    duration = b"\x08" + _varint(seconds)
    return b"\x0a" + _varint(len(duration)) + duration
