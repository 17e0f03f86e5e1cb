"""Spans in, rows of ``spans`` out: validation, normalization, cost and PII redaction.

This is the one place where a span becomes a stored row. Both the OTLP receivers of the collector
and the API's ``POST /api/v1/spans`` use it, so a span looks the same whichever way it came in.
Sampling is not done here: it belongs to the collector (see :mod:`llmobs.collector.sampling`).

Example::

    from llmobs.collector.pipeline import RawSpan, SpanPipeline
    from llmobs.store.spans import copy_spans

    pipeline = SpanPipeline.from_settings(settings)   # redaction rules from the settings
    pipeline.load_prices(conn)                        # model_prices; call again to refresh
    result = pipeline.process([
        RawSpan(trace_id="5b8aa5a2d2c872e8321cf37308d69df2", span_id="051581bf3cb55c13",
                name="chat gpt-4o", start_time=now_ns,       # within the accepted window
                end_time=now_ns + 1_250_000_000, kind="client",
                attributes={"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 120,
                            "gen_ai.usage.output_tokens": 40},
                resource={"service.name": "chatbot"}),
    ], project_id=1)
    result.rows        # [SpanRow(...)]: model, provider, tokens, cost_usd filled in
    result.rejected    # spans refused (bad ids, no start time), with result.errors saying why
    with conn.transaction():
        copy_spans(conn, result.rows)

The pipeline takes ownership of the ``attributes``, ``events`` and ``resource`` it is given:
redaction edits them in place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from llmobs.collector.messages import (
    MESSAGE_EVENTS,
    Message,
    cap_messages,
    messages_from_events,
    read_attributes,
)
from llmobs.collector.normalize import Normalized, OutOfRange, check_cost, normalize
from llmobs.collector.pricing import PriceRule, Pricing, aload_rules, load_rules
from llmobs.collector.redact import DETECTORS, RedactionRules, Redactor, parse_list
from llmobs.errors import ConfigError
from llmobs.store.spans import SpanRow, SpanWindow

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings

SPAN_KINDS = frozenset({"internal", "server", "client", "producer", "consumer"})
STATUS_CODES = frozenset({"unset", "ok", "error"})
DROPPED_ATTRIBUTES_KEY = "llmobs.dropped_attributes_count"
_MAX_MESSAGES = 10
#: Longest span accepted (end - start): beyond this the times are wrong, not the span long.
MAX_SPAN_DURATION = timedelta(days=7)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
#: Span events marking the first streamed token (OpenInference).
FIRST_TOKEN_EVENTS = frozenset({"First Token Stream Event", "gen_ai.first_token"})


@dataclass(slots=True)
class RawSpan:
    """A span as a receiver decoded it, before the pipeline.

    ``trace_id`` (32) and ``span_id``/``parent_span_id`` (16) are hex strings. Times are Unix
    nanoseconds (``int``) or aware ``datetime`` (naive means UTC). ``kind``: internal, server,
    client, producer or consumer. ``status_code``: unset, ok or error. ``events``: dicts with
    ``name``, ``time`` (ns or datetime) and ``attributes``. ``resource``: resource attributes
    (``service.name``, ``deployment.environment.name``, ...); spans of one resource may share
    the same dict, which is then processed once. ``links``: dicts with ``trace_id``, ``span_id``
    (hex, as the span's own), ``attributes`` and, when set, ``trace_state``.
    """

    trace_id: str
    span_id: str
    name: str
    start_time: int | datetime
    end_time: int | datetime
    parent_span_id: str | None = None
    kind: str = "internal"
    status_code: str = "unset"
    status_message: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    scope_name: str | None = None
    links: list[dict[str, Any]] = field(default_factory=list)


def span_link(trace_id: str, span_id: str, trace_state: str | None, attributes: dict[str, Any]) -> dict[str, Any]:
    """A span link as :class:`RawSpan` carries it and ``spans.links`` stores it; ``trace_state``
    only when the sender set one."""
    link: dict[str, Any] = {"trace_id": trace_id, "span_id": span_id, "attributes": attributes}
    if trace_state:
        link["trace_state"] = trace_state
    return link


@dataclass(frozen=True)
class PipelineConfig:
    redaction: RedactionRules = field(default_factory=RedactionRules)
    #: attributes kept per span; the rest are dropped and counted in DROPPED_ATTRIBUTES_KEY
    max_attributes: int = 1000
    #: attribute whose positive value marks a trace for keeping (tail sampling)
    priority_attribute: str | None = "sampling.priority"
    #: size cap of each side's messages (characters of JSON); 0: none
    max_message_chars: int = 65536
    #: start times accepted; spans outside are rejected (no partition is made for them)
    window: SpanWindow = field(default_factory=SpanWindow)

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineConfig:
        detectors = parse_list(settings.get_str("PII_DETECTORS"))
        unknown = [d for d in detectors if d not in DETECTORS]
        if unknown:
            raise ConfigError(
                "PII_DETECTORS",
                f"unknown detector(s) {', '.join(unknown)}",
                hint=f"known: {', '.join(DETECTORS)} (or `none`)",
            )
        rules = RedactionRules(
            detectors=detectors,
            strategy=settings.get_str("PII_STRATEGY"),  # type: ignore[arg-type]
            drop_keys=parse_list(settings.get_str("PII_DROP_KEYS")),
            hash_keys=parse_list(settings.get_str("PII_HASH_KEYS")),
        )
        if rules.needs_salt:
            rules = replace(rules, salt=settings.secret("PII_HASH_SALT").encode())
        return cls(
            redaction=rules,
            max_attributes=settings.get_int("COLLECTOR_MAX_ATTRIBUTES_PER_SPAN"),
            priority_attribute=settings.get_str("SAMPLING_PRIORITY_ATTRIBUTE") or None,
            max_message_chars=settings.get_int("COLLECTOR_MAX_MESSAGE_CHARS"),
            window=SpanWindow.from_settings(settings),
        )


@dataclass
class ProcessResult:
    rows: list[SpanRow] = field(default_factory=list)
    #: spans refused as invalid (OTLP ``partial_success.rejected_spans``)
    rejected: int = 0
    #: why spans were refused or changed (at most a few messages)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: spans with a model and token counts but no matching price (cost left NULL)
    unknown_price: int = 0
    #: trace ids of spans carrying the priority attribute
    priority_traces: set[str] = field(default_factory=set)

    def _note(self, bucket: list[str], message: str) -> None:
        if len(bucket) < _MAX_MESSAGES:
            bucket.append(message)

    @property
    def message(self) -> str:
        """One line for OTLP's ``partial_success.error_message`` (empty when all is well)."""
        return "; ".join(self.errors + self.warnings)


class _Resource:
    """What spans of one resource share: service, environment, encoded JSON."""

    __slots__ = ("environment", "json", "service")

    def __init__(self, resource: dict[str, Any], redactor: Redactor) -> None:
        service = resource.get("service.name")
        self.service = service if isinstance(service, str) and service else "unknown"
        env = resource.get("deployment.environment.name") or resource.get("deployment.environment")
        self.environment = env if isinstance(env, str) and env else None
        if redactor.active:
            redactor.attributes(resource)
            self.service = redactor.scrub(self.service)
            self.environment = redactor.scrub(self.environment) if self.environment else None
        self.json = to_json(resource)


class SpanPipeline:
    """Turns :class:`RawSpan` objects into :class:`~llmobs.store.spans.SpanRow` rows. Not thread-safe."""

    def __init__(self, config: PipelineConfig | None = None, pricing: Pricing | None = None) -> None:
        self.config = config or PipelineConfig()
        self.pricing = pricing or Pricing()
        self.redactor = Redactor(self.config.redaction)

    @classmethod
    def from_settings(cls, settings: Settings) -> SpanPipeline:
        return cls(PipelineConfig.from_settings(settings))

    # -- prices -------------------------------------------------------------------------------

    def set_prices(self, rules: Iterable[PriceRule]) -> None:
        self.pricing = Pricing(rules)

    def load_prices(self, conn: psycopg.Connection) -> None:
        """(Re)load ``model_prices``; prices changed by `llmobs prices` apply from the next call."""
        self.set_prices(load_rules(conn))

    async def aload_prices(self, conn: psycopg.AsyncConnection) -> None:
        self.set_prices(await aload_rules(conn))

    # -- spans --------------------------------------------------------------------------------

    def process(self, spans: Iterable[RawSpan], project_id: int) -> ProcessResult:
        """Validate, normalize, price and redact ``spans`` of ``project_id``; invalid spans are
        counted in ``rejected`` (with a reason in ``errors``), never raised."""
        result = ProcessResult()
        earliest, latest = self.config.window.bounds(datetime.now(UTC))
        resources: dict[int, _Resource] = {}
        rows = result.rows
        kept: list[tuple[RawSpan, dict[str, Any], _SpanMessages]] = []
        for span in spans:
            problem = _check_ids(span)
            if problem is None:
                res = resources.get(id(span.resource))
                if res is None:
                    res = resources[id(span.resource)] = _Resource(span.resource, self.redactor)
                try:
                    row, attrs, messages = self._row(span, project_id, res, result, earliest, latest)
                except (_Invalid, OutOfRange) as exc:
                    problem = str(exc)
                else:
                    rows.append(row)
                    kept.append((span, attrs, messages))
                    continue
            result.rejected += 1
            result._note(result.errors, f"span {span.span_id!r} rejected: {problem}")
        if self.redactor.scans and rows:
            # Every column comes from these texts: the columns built from attributes (model,
            # provider, finish reasons, ...) are scrubbed with them.
            # Each span's text goes in as its pieces (one join over all of them, no string per span).
            parts: list[str] = []
            firsts: list[int] = []
            for r in rows:
                firsts.append(len(parts))
                if (
                    r.events == "[]"
                    and r.links == "[]"
                    and r.status_message is None
                    and r.scope_name is None
                    and r.input_messages is None
                    and r.output_messages is None
                ):
                    parts += (r.name, r.attributes)
                else:
                    parts += (
                        r.name,
                        r.attributes,
                        r.events,
                        r.links,
                        r.status_message or "",
                        r.scope_name or "",
                        r.input_messages or "",
                        r.output_messages or "",
                    )
            for i in self.redactor.triggered_parts(parts, firsts):
                rows[i] = self._scrub(rows[i], *kept[i])
        return result

    def _row(
        self,
        span: RawSpan,
        project_id: int,
        res: _Resource,
        result: ProcessResult,
        earliest: datetime,
        latest: datetime,
    ) -> tuple[SpanRow, dict[str, Any], _SpanMessages]:
        start, end, duration_ms = _times(span.start_time, span.end_time)
        if not earliest <= start <= latest:
            raise _Invalid(
                f"start time {start:%Y-%m-%d %H:%M:%S} UTC is outside the accepted window "
                f"{earliest:%Y-%m-%d %H:%M} to {latest:%Y-%m-%d %H:%M} UTC"
                " (COLLECTOR_MAX_SPAN_AGE_DAYS, COLLECTOR_MAX_SPAN_FUTURE_MINUTES)"
            )
        if end - start > MAX_SPAN_DURATION:
            raise _Invalid(f"duration {duration_ms:g} ms is out of range (0 to {MAX_SPAN_DURATION.days} days)")
        attrs = span.attributes
        config = self.config
        if len(attrs) > config.max_attributes:
            dropped = len(attrs) - config.max_attributes
            attrs = dict(list(attrs.items())[: config.max_attributes])
            attrs[DROPPED_ATTRIBUTES_KEY] = dropped
            result._note(
                result.warnings,
                f"span {span.span_id}: {dropped} attributes over the limit of {config.max_attributes} dropped",
            )
        n = normalize(attrs)

        if config.priority_attribute is not None and _positive(attrs.get(config.priority_attribute)):
            result.priority_traces.add(span.trace_id)

        cost, cost_source = self._cost(n, project_id, start.date(), result)

        status_code = span.status_code if span.status_code in STATUS_CODES else "unset"
        if status_code == "unset" and n.error_type:
            status_code = "error"
        events = span.events
        user_id, session_id = n.user_id, n.session_id
        redactor = self.redactor
        if redactor.has_key_rules:  # value detectors run afterwards, on the spans their trigger flags
            redactor.apply_keys(attrs)
            for item in (*events, *span.links):
                if item.get("attributes"):
                    redactor.apply_keys(item["attributes"])
            user_id = redactor.column_keys(user_id, n.user_key)
            session_id = redactor.column_keys(session_id, n.session_key)
        # after the key rules: a dropped content key yields no message, a hashed one its hash
        messages = self._messages(attrs, events)
        ttft_ms = n.time_to_first_token_ms
        if ttft_ms is None and events:
            ttft_ms = _first_token_ms(events, span.start_time, start)
        if n.operation == "embeddings":
            ttft_ms = None  # nothing is streamed (OpenLIT sends its whole duration)

        # tuple.__new__ directly: SpanRow's own __new__ is a Python function of 35 arguments.
        row = _new_row(
            SpanRow,
            (
                project_id,
                span.trace_id,
                span.span_id,
                span.parent_span_id or None,
                res.service,
                res.environment or n.environment,
                span.scope_name or None,
                span.name or "",
                span.kind if span.kind in SPAN_KINDS else "internal",
                start,
                end,
                duration_ms,
                status_code,
                span.status_message or None,
                n.provider,
                n.request_model,
                n.response_model,
                n.operation,
                n.input_tokens,
                n.output_tokens,
                n.total_tokens,
                n.cached_input_tokens,
                n.reasoning_tokens,
                cost,
                cost_source,
                session_id,
                user_id,
                n.finish_reasons,
                to_json(attrs),
                to_json([_event(e) for e in events]) if events else "[]",
                res.json,
                to_json(span.links) if span.links else "[]",
                messages.input_json,
                messages.output_json,
                ttft_ms,
            ),
        )
        return row, attrs, messages

    def _cost(
        self, n: Normalized, project_id: int, day: date, result: ProcessResult
    ) -> tuple[float | None, str | None]:
        """(cost, cost_source): the client's cost wins, except 0 for a call with tokens (OpenLIT
        sends 0 when it could not price) when the price table knows the model; else the price
        table; an unknown model gives NULL and is counted."""
        client = n.client_cost
        has_tokens = n.input_tokens is not None or n.output_tokens is not None
        if client is not None and (client > 0 or not (n.input_tokens or n.output_tokens)):
            return client, "client"
        model = n.model
        if model is None or not has_tokens:
            return client, None if client is None else "client"
        rule = self.pricing.find(project_id, n.provider, model, day)
        if rule is not None:
            cost = rule.cost(n)
            check_cost(f"computed cost ({model})", cost)
            return cost, "computed"
        if client is not None:
            return client, "client"
        result.unknown_price += 1
        return None, None

    def _messages(self, attrs: dict[str, Any], events: list[dict[str, Any]]) -> _SpanMessages:
        """The span's input and output messages, from its attributes, else (per side) its GenAI
        events, each side capped in size. Content is stored once: the attributes a side was read
        from in full are removed from ``attrs`` (unless the cap cut that side)."""
        found = read_attributes(attrs)
        if found is None:
            if not events or MESSAGE_EVENTS.isdisjoint([e.get("name") for e in events]):
                return _NO_MESSAGES  # most spans: no LLM call
            inputs, outputs = messages_from_events(events)
            return _SpanMessages.of(inputs, outputs, self.config.max_message_chars)
        inputs, outputs, input_keys, output_keys = found
        if (not inputs or not outputs) and events and not MESSAGE_EVENTS.isdisjoint([e.get("name") for e in events]):
            event_inputs, event_outputs = messages_from_events(events)
            inputs = inputs or event_inputs
            outputs = outputs or event_outputs
        messages = _SpanMessages.of(inputs, outputs, self.config.max_message_chars)
        if messages.inputs is inputs:  # not cut by the cap
            for key in input_keys:
                attrs.pop(key, None)
        if messages.outputs is outputs:
            for key in output_keys:
                attrs.pop(key, None)
        return messages

    def _scrub(self, row: SpanRow, span: RawSpan, attrs: dict[str, Any], messages: _SpanMessages) -> SpanRow:
        """Run the value detectors on a span their trigger flagged: its attributes, events, links
        and messages, and every text column built from client data (name, models, provider, finish
        reasons, ...)."""
        redactor = self.redactor
        redactor.scrub_values(attrs)
        for item in (*span.events, *span.links):
            if item.get("attributes"):
                redactor.scrub_values(item["attributes"])
        if row.input_messages is not None or row.output_messages is not None:
            scrubbed = redactor.scrub_values({"in": messages.inputs, "out": messages.outputs})
            messages = _SpanMessages.of(scrubbed["in"], scrubbed["out"], 0)
            row = row._replace(input_messages=messages.input_json, output_messages=messages.output_json)
        return row._replace(
            attributes=to_json(attrs),
            events=to_json([_event(e) for e in span.events]) if span.events else "[]",
            links=to_json(span.links) if span.links else "[]",
            name=redactor.scrub(row.name),
            finish_reasons=[redactor.scrub(r) for r in row.finish_reasons] if row.finish_reasons else None,
            **redactor.scrub_columns(row, _SCRUBBED_COLUMNS),
        )


#: Text columns taken from client data that the value detectors scrub (besides the span name and
#: finish_reasons, a list).
_SCRUBBED_COLUMNS = (
    "scope_name",
    "environment",
    "status_message",
    "provider",
    "request_model",
    "response_model",
    "operation",
    "session_id",
    "user_id",
)


_new_row = tuple.__new__


class _Invalid(ValueError):
    pass


@dataclass(slots=True)
class _SpanMessages:
    """A span's messages (capped) and their JSON text for the row (None: no messages)."""

    inputs: list[Message]
    outputs: list[Message]
    input_json: str | None
    output_json: str | None

    @classmethod
    def of(cls, inputs: list[Message], outputs: list[Message], cap: int) -> _SpanMessages:
        """Encoded once; a side longer than ``cap`` characters is cut (a new list) and encoded again."""
        input_json = to_json(inputs) if inputs else None
        if input_json is not None and 0 < cap < len(input_json):
            inputs = cap_messages(inputs, cap)
            input_json = to_json(inputs)
        output_json = to_json(outputs) if outputs else None
        if output_json is not None and 0 < cap < len(output_json):
            outputs = cap_messages(outputs, cap)
            output_json = to_json(outputs)
        return cls(inputs, outputs, input_json, output_json)


#: A span without messages (shared: never changed).
_NO_MESSAGES = _SpanMessages([], [], None, None)


def _check_ids(span: RawSpan) -> str | None:
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if not isinstance(trace_id, str) or len(trace_id) != 32 or not _TRACE_ID.fullmatch(trace_id):
        return "trace id must be 32 hex characters (16 bytes)"
    if trace_id == _ZERO_TRACE:
        return "trace id is all zeros"
    if not isinstance(span_id, str) or len(span_id) != 16 or not _SPAN_ID.fullmatch(span_id):
        return "span id must be 16 hex characters (8 bytes)"
    if span_id == _ZERO_SPAN:
        return "span id is all zeros"
    if parent and (not isinstance(parent, str) or len(parent) != 16 or not _SPAN_ID.fullmatch(parent)):
        return "parent span id must be empty or 16 hex characters (8 bytes)"
    if parent == _ZERO_SPAN:
        span.parent_span_id = None
    for i, link in enumerate(span.links):
        linked_trace, linked_span = link.get("trace_id"), link.get("span_id")
        if (
            not isinstance(linked_trace, str)
            or not _TRACE_ID.fullmatch(linked_trace)
            or not isinstance(linked_span, str)
            or not _SPAN_ID.fullmatch(linked_span)
        ):
            return f"link {i}: trace id and span id must be 32 and 16 hex characters"
    return None


def _first_token_ms(events: list[dict[str, Any]], start: int | datetime, start_dt: datetime) -> float | None:
    """Milliseconds from the span's start to its first-token event, if it has one."""
    for event in events:
        if event.get("name") in FIRST_TOKEN_EVENTS:
            time = event.get("time")
            if type(time) is int and type(start) is int:
                return max(0.0, (time - start) / 1e6)
            if isinstance(time, datetime):
                return max(0.0, (_as_datetime(time) - start_dt) / timedelta(milliseconds=1))
            if type(time) is int and time > 0:
                return max(0.0, (ns_to_datetime(time) - start_dt) / timedelta(milliseconds=1))
    return None


#: days since the epoch -> (year, month, day) in UTC (spans fall on few days)
_DAY_FIELDS: dict[int, tuple[int, int, int]] = {}
_DAY_FIELDS_MAX = 1024
_US_PER_DAY = 86_400_000_000


def ns_to_datetime(ns: int) -> datetime:
    """Unix nanoseconds as an aware UTC datetime (truncated to microseconds); OverflowError
    outside the years datetime holds. Built from its fields, the date cached per day: fewer
    instructions than adding a timedelta to the epoch."""
    days, us = divmod(ns // 1000, _US_PER_DAY)
    ymd = _DAY_FIELDS.get(days)
    if ymd is None:
        day = _EPOCH + timedelta(days=days)
        if len(_DAY_FIELDS) >= _DAY_FIELDS_MAX:
            _DAY_FIELDS.clear()
        ymd = _DAY_FIELDS[days] = (day.year, day.month, day.day)
    seconds, us = divmod(us, 1_000_000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return datetime(ymd[0], ymd[1], ymd[2], hours, minutes, seconds, us, UTC)


def _times(start: int | datetime, end: int | datetime) -> tuple[datetime, datetime, float]:
    if type(start) is int and type(end) is int:
        if start <= 0:
            raise _Invalid("start time is missing")
        if end < start:
            end = start
        try:
            return ns_to_datetime(start), ns_to_datetime(end), (end - start) / 1e6
        except OverflowError:
            raise _Invalid("start or end time is out of range") from None
    start_dt, end_dt = _as_datetime(start), _as_datetime(end)
    if end_dt < start_dt:
        end_dt = start_dt
    return start_dt, end_dt, (end_dt - start_dt) / timedelta(milliseconds=1)


def _as_datetime(value: int | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        try:
            return ns_to_datetime(value)
        except OverflowError:
            raise _Invalid("time is out of range") from None
    raise _Invalid("start or end time is missing or not a time")


def _event(event: dict[str, Any]) -> dict[str, Any]:
    time = event.get("time")
    if isinstance(time, int) and not isinstance(time, bool) and time > 0:
        try:
            time = ns_to_datetime(time)
        except OverflowError:
            time = None
    elif not isinstance(time, datetime):
        time = None
    return {"name": event.get("name") or "", "time": time, "attributes": event.get("attributes") or {}}


def _positive(value: Any) -> bool:
    if value is True:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value > 0
    return False


def to_json(value: Any) -> str:
    """JSON text for a jsonb column. PostgreSQL's jsonb cannot hold NUL (``\\u0000``): it becomes
    U+FFFD. Integers beyond 64 bits (possible from JSON input) are kept exactly."""
    try:
        data = orjson.dumps(value, default=_json_default)
    except orjson.JSONEncodeError:
        return json.dumps(_without_nul(value), default=_json_default, ensure_ascii=False)
    if b"\\" in data and b"\\u0000" in data:  # a one-byte search first (memchr): most texts have no escape
        data = orjson.dumps(_without_nul(value), default=_json_default)
    return data.decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        import base64

        return base64.b64encode(value).decode()
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value
