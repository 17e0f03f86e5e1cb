"""``POST /graphql``: traces, spans and metrics, with the REST API's auth, scoping and queries.

Spans link to their children, parent and trace, so documents can nest: depth, size and aliases
are limited (:data:`MAX_DEPTH`, :data:`MAX_TOKENS`, :data:`MAX_ALIASES`), list sizes are
capped, a trace cannot be selected inside itself, and what one request costs is bounded: the
values it produces (API_GRAPHQL_MAX_OBJECTS), its response size (API_GRAPHQL_MAX_RESPONSE_BYTES)
and its time (API_QUERY_TIMEOUT_MS for all its queries together). A document that fails to parse
or validate is answered with 400 and the API's error shape (plus the GraphQL ``errors`` list);
field errors during execution follow GraphQL's rules (200, partial ``data``, ``errors``), except
bad arguments (400) and an unreachable database (503).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from inspect import isawaitable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import strawberry
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from graphql import FieldNode, GraphQLError, GraphQLResolveInfo, ValidationContext, ValidationRule
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.scalars import JSON
from strawberry.utils.await_maybe import AwaitableOrValue

from llmobs.api.auth import Principal
from llmobs.api.deps import Reader, State, strict_query
from llmobs.api.errors import ApiError, ErrorResponse, error_body, error_responses
from llmobs.api.log_messages import read_trace_spans
from llmobs.api.models import ScoreIn
from llmobs.api.params import time_range
from llmobs.api.respond import json_response, to_json
from llmobs.api.routing import StrictJsonRoute
from llmobs.api.scoring import record_score
from llmobs.api.state import ApiState
from llmobs.api.trace_tree import build_trace
from llmobs.store import queries
from llmobs.store import scores as score_store

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("llmobs.api.graphql")

MAX_DEPTH = 10
MAX_TOKENS = 2000
MAX_ALIASES = 30
MAX_PAGE = 200
MAX_QUERY_CHARS = 20_000

T = TypeVar("T")


class Budget:
    """What one request may still produce: values (fields and list items) counted as they resolve."""

    def __init__(self, max_objects: int) -> None:
        self.max_objects = max_objects
        self.spent = 0

    def spend_query(self) -> None:
        """Count a database query (QUERY_COST values); TooCostly past the limit, before it runs."""
        self.spent += QUERY_COST
        if self.spent > self.max_objects:
            raise TooCostly(self.max_objects)

    def spend(self, value: object) -> None:
        """Count one resolved field and, for a list, its items; TooCostly past the limit."""
        self.spent += 1 + (len(value) if isinstance(value, list) else 0)
        if self.spent > self.max_objects:
            raise TooCostly(self.max_objects)


class TooCostly(GraphQLError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the query produces more than {limit} values (API_GRAPHQL_MAX_OBJECTS): select fewer fields, "
            "fewer or smaller pages, and do not nest a trace inside its own spans",
            extensions={"code": "COST_LIMIT"},
        )


#: What one database query costs against the budget (a trace lookup per listed trace adds up).
QUERY_COST = 200


@dataclass
class Context:
    state: ApiState
    principal: Principal
    budget: Budget

    async def read(self, work: Callable[[psycopg.AsyncConnection], Awaitable[T]], *, may_lag: bool = False) -> T:
        """``work`` on a read connection of the caller's project, charged QUERY_COST values first;
        ``may_lag`` as in ``Database.read`` (lists and aggregates only)."""
        self.budget.spend_query()
        return await self.state.db.read(self.principal.project_id, work, may_lag=may_lag)


class CostLimiter(SchemaExtension):
    """Stops a document once it has produced ``Context.budget`` values, however it nests
    (aliases, fragments, a trace inside its own spans): execution then ends quickly, since every
    later field fails at once."""

    def resolve(
        self, _next: Callable[..., Any], root: Any, info: GraphQLResolveInfo, *args: Any, **kwargs: Any
    ) -> AwaitableOrValue[object]:
        budget: Budget = info.context.budget
        if budget.spent > budget.max_objects:
            raise TooCostly(budget.max_objects)
        result = _next(root, info, *args, **kwargs)
        if isawaitable(result):
            return self._spend_later(result, budget)
        budget.spend(result)
        return result

    @staticmethod
    async def _spend_later(result: Awaitable[object], budget: Budget) -> object:
        value = await result
        budget.spend(value)
        return value


class NoTraceInsideTrace(ValidationRule):
    """Refuses the spans of a ``trace`` selected below another ``trace``
    (``trace{spans{trace{spans...}}}``): the same spans again for every span, at every level.
    Scalar fields of the inner trace (``children{trace{traceId}}``) stay allowed."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.open_traces = 0

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        name = node.name.value
        if name == "trace":
            self.open_traces += 1
        elif name in _TRACE_SPAN_LISTS and self.open_traces > 1:
            self.report_error(
                GraphQLError(
                    f"`{name}` of a `trace` selected inside another `trace` repeats the whole trace for every "
                    "span: select the spans once, at the outer level",
                    node,
                )
            )

    def leave_field(self, node: FieldNode, *_: Any) -> None:
        if node.name.value == "trace":
            self.open_traces -= 1


_TRACE_SPAN_LISTS = frozenset({"spans", "roots"})


def bad_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


def _guarded(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Expected failures become GraphQL errors with a code; the rest are masked."""
    import psycopg
    from psycopg_pool import PoolTimeout

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except queries.QueryError as exc:
            raise bad_input(str(exc)) from None
        except psycopg.errors.QueryCanceled:
            raise bad_input("the query took longer than the API allows: narrow its time range") from None
        except psycopg.DataError as exc:
            raise bad_input(f"a value in the request is not usable: {str(exc).splitlines()[0]}") from None
        except ApiError as exc:  # a project's read slots all taken (project_busy)
            raise GraphQLError(exc.message, extensions={"code": "UNAVAILABLE"}) from None
        except (psycopg.OperationalError, PoolTimeout):
            raise GraphQLError(
                "the database is not reachable right now; retry shortly", extensions={"code": "UNAVAILABLE"}
            ) from None

    return wrapper


class _TraceSpans:
    """The spans of one trace, loaded once per request and shared by every Span of it."""

    def __init__(self, rows: list[dict[str, Any]], truncated: bool) -> None:
        self.rows = rows
        self.truncated = truncated
        self.spans = [Span.from_row(r, self) for r in rows]
        self.by_id = {s.span_id: s for s in reversed(self.spans)}
        self.children: dict[str, list[Span]] = {}
        for s in self.spans:
            if s.parent_span_id:
                self.children.setdefault(s.parent_span_id, []).append(s)

    def trace(self) -> Trace:
        t = build_trace(self.rows, truncated=self.truncated)
        return Trace(
            trace_id=t["trace_id"],
            start_time=t["start_time"],
            end_time=t["end_time"],
            duration_ms=t["duration_ms"],
            span_count=t["span_count"],
            error_count=t["error_count"],
            input_tokens=t["input_tokens"],
            output_tokens=t["output_tokens"],
            total_tokens=t["total_tokens"],
            cost_usd=t["cost_usd"],
            services=t["services"],
            models=t["models"],
            truncated=t["truncated"],
            _spans=self,
        )


async def _load_trace(ctx: Context, trace_id: str) -> _TraceSpans | None:
    project_id = ctx.principal.project_id
    rows = await ctx.read(lambda conn: read_trace_spans(conn, project_id, trace_id))
    if not rows:
        return None
    truncated = len(rows) > queries.MAX_TRACE_SPANS
    return _TraceSpans(rows[: queries.MAX_TRACE_SPANS], truncated)


@strawberry.type
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    service_name: str
    environment: str | None
    scope_name: str | None
    kind: str
    start_time: datetime
    end_time: datetime
    duration_ms: float
    status_code: str
    status_message: str | None
    provider: str | None
    request_model: str | None
    response_model: str | None
    operation: str | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cached_input_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    cost_source: str | None
    session_id: str | None
    user_id: str | None
    finish_reasons: list[str] | None
    attributes: JSON
    events: JSON
    links: JSON = strawberry.field(description="Linked spans: trace_id, span_id, attributes, trace_state when set.")
    resource: JSON
    input_messages: JSON = strawberry.field(
        description="Messages sent to the model: [{role, parts, finish_reason, truncated?}]; empty when none."
    )
    output_messages: JSON = strawberry.field(description="Messages the model answered; empty when none.")
    time_to_first_token_ms: float | None
    ingested_at: datetime
    _spans: strawberry.Private[_TraceSpans]

    @classmethod
    def from_row(cls, row: dict[str, Any], spans: _TraceSpans) -> Span:
        return cls(**{f: row[f] for f in _SPAN_GQL_FIELDS}, _spans=spans)

    @strawberry.field(description="Spans whose parent is this span, in start order.")
    def children(self) -> list[Span]:
        return self._spans.children.get(self.span_id, [])

    @strawberry.field(description="The parent span, when it is in the trace.")
    def parent(self) -> Span | None:
        return self._spans.by_id.get(self.parent_span_id) if self.parent_span_id else None

    @strawberry.field(description="The trace this span belongs to.")
    def trace(self) -> Trace:
        return self._spans.trace()


_SPAN_GQL_FIELDS = tuple(f for f in Span.__annotations__ if not f.startswith("_"))


@strawberry.type
class Score:
    id: int
    trace_id: str
    span_id: str | None
    name: str
    value: float | None
    label: str | None
    comment: str
    source: str
    key_id: str | None
    created_at: datetime


@strawberry.type
class Trace:
    trace_id: str
    start_time: datetime
    end_time: datetime
    duration_ms: float
    span_count: int
    error_count: int
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None
    services: list[str]
    models: list[str]
    truncated: bool
    _spans: strawberry.Private[_TraceSpans]

    @strawberry.field(description="All spans, in start order.")
    def spans(self) -> list[Span]:
        return self._spans.spans

    @strawberry.field(description="Spans without a parent in the trace.")
    def roots(self) -> list[Span]:
        return [s for s in self._spans.spans if not s.parent_span_id or s.parent_span_id not in self._spans.by_id]

    @strawberry.field(description="Scores and feedback on the trace, oldest first.")
    @_guarded
    async def scores(self, info: strawberry.Info) -> list[Score]:
        ctx: Context = info.context
        project_id, trace_id = ctx.principal.project_id, self.trace_id
        rows = await ctx.state.db.read(project_id, lambda conn: score_store.trace_scores(conn, project_id, trace_id))
        return [Score(**row) for row in rows]


@strawberry.type
class TraceSummary:
    trace_id: str
    root_span_id: str
    root_name: str
    service_name: str
    start_time: datetime
    end_time: datetime
    duration_ms: float
    root_status_code: str
    span_count: int
    error_count: int
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None
    models: list[str]
    services: list[str]

    @strawberry.field(description="The whole trace (one more lookup).")
    @_guarded
    async def trace(self, info: strawberry.Info) -> Trace | None:
        spans = await _load_trace(info.context, self.trace_id)
        return spans.trace() if spans else None


@strawberry.type
class TracePage:
    traces: list[TraceSummary]
    next_cursor: str | None


@strawberry.input
class TraceFilterInput:
    from_: datetime | None = strawberry.field(default=None, name="from")
    to: datetime | None = None
    service: str | None = None
    model: str | None = None
    provider: str | None = None
    status: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    name: str | None = None
    min_duration_ms: float | None = None
    min_cost_usd: float | None = None
    q: str | None = strawberry.field(default=None, description="Full-text search over the spans' messages.")
    score_name: str | None = None
    score_label: str | None = None
    min_score: float | None = None
    max_score: float | None = None


@strawberry.enum
class TraceSortField(Enum):
    START_TIME = "start_time"
    DURATION_MS = "duration_ms"
    COST_USD = "cost_usd"


@strawberry.enum
class MetricsGroupBy(Enum):
    NONE = "none"
    MODEL = "model"
    PROVIDER = "provider"
    SERVICE = "service"


@strawberry.type
class MetricPoint:
    time: datetime
    requests: int
    errors: int
    error_rate: float | None
    input_tokens: float
    output_tokens: float
    total_tokens: float
    cost_usd: float
    latency_avg_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    time_to_first_token_avg_ms: float | None
    time_to_first_token_p50_ms: float | None
    time_to_first_token_p95_ms: float | None


@strawberry.type
class MetricSeries:
    group: str | None
    points: list[MetricPoint]


def _hex(value: str, length: int, what: str) -> str:
    text = value.lower()
    if len(text) != length or any(c not in "0123456789abcdef" for c in text):
        raise bad_input(f"{what} must be {length} hex characters")
    return text


_STR_LIMIT = 200


@strawberry.type
class Query:
    @strawberry.field(description="One trace of the caller's project.")
    @_guarded
    async def trace(self, info: strawberry.Info, trace_id: str) -> Trace | None:
        spans = await _load_trace(info.context, _hex(trace_id, 32, "trace_id"))
        return spans.trace() if spans else None

    @strawberry.field(description="One span of the caller's project.")
    @_guarded
    async def span(self, info: strawberry.Info, span_id: str) -> Span | None:
        ctx: Context = info.context
        project_id, wanted = ctx.principal.project_id, _hex(span_id, 16, "span_id")
        row = await ctx.read(lambda conn: queries.get_span(conn, project_id, wanted))
        if row is None:
            return None
        spans = await _load_trace(ctx, row["trace_id"])
        return spans.by_id.get(row["span_id"]) if spans else None

    @strawberry.field(description="Traces listed by their root span; same filters as GET /api/v1/traces.")
    @_guarded
    async def traces(
        self,
        info: strawberry.Info,
        filter: TraceFilterInput | None = None,
        sort: TraceSortField = TraceSortField.START_TIME,
        descending: bool = True,
        first: int = 50,
        after: str | None = None,
    ) -> TracePage:
        ctx: Context = info.context
        if not 1 <= first <= MAX_PAGE:
            raise bad_input(f"first must be between 1 and {MAX_PAGE}")
        f = filter or TraceFilterInput()
        for name in ("service", "model", "provider", "user_id", "session_id", "name", "q", "score_name", "score_label"):
            value = getattr(f, name)
            if value is not None and (len(value) > _STR_LIMIT or "\x00" in value):
                raise bad_input(f"filter {name} must be at most {_STR_LIMIT} characters, without NUL")
        if f.status not in (None, "ok", "error"):
            raise bad_input("filter status must be ok or error")
        start, end = time_range(f.from_, f.to)
        tf = queries.TraceFilter(
            start,
            end,
            service=f.service,
            model=f.model,
            provider=f.provider,
            status=f.status,  # type: ignore[arg-type]  # checked against the literals above
            user_id=f.user_id,
            session_id=f.session_id,
            name=f.name,
            min_duration_ms=f.min_duration_ms,
            min_cost_usd=f.min_cost_usd,
            q=f.q,
            score_name=f.score_name,
            score_label=f.score_label,
            min_score=f.min_score,
            max_score=f.max_score,
        )
        cursor = queries.TraceCursor.decode(after, sort.value, descending) if after else None
        project_id = ctx.principal.project_id
        page = await ctx.read(
            lambda conn: queries.list_traces(
                conn, project_id, tf, sort=sort.value, descending=descending, limit=first, cursor=cursor
            ),
            may_lag=True,
        )
        return TracePage(traces=[TraceSummary(**t) for t in page.traces], next_cursor=page.next_cursor)

    @strawberry.field(description="Time series from the rollups; same as GET /api/v1/metrics.")
    @_guarded
    async def metrics(
        self,
        info: strawberry.Info,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
        interval: str = "auto",
        group_by: MetricsGroupBy = MetricsGroupBy.NONE,
        service: str | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> list[MetricSeries]:
        ctx: Context = info.context
        start, end = time_range(from_, to)
        req = queries.MetricsRequest(
            start,
            end,
            interval=interval,
            group_by=group_by.value,
            service=service,
            model=model,
            provider=provider,
        )
        project_id = ctx.principal.project_id
        _, _, series = await ctx.read(lambda conn: queries.metric_series(conn, project_id, req), may_lag=True)
        return [MetricSeries(group=s["group"], points=[MetricPoint(**p) for p in s["points"]]) for s in series]


def _mask(error: GraphQLError) -> bool:
    return error.original_error is not None and not isinstance(error.original_error, GraphQLError)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Score a trace (writer keys): a numeric value, a label, or both.")
    @_guarded
    async def add_score(
        self,
        info: strawberry.Info,
        trace_id: str,
        name: str,
        value: float | None = None,
        label: str | None = None,
        comment: str = "",
        source: str = "api",
        span_id: str | None = None,
    ) -> Score:
        ctx: Context = info.context
        fields = {"name": name, "value": value, "label": label, "comment": comment, "source": source}
        try:
            body = ScoreIn.model_validate(fields | {"span_id": span_id})
        except ValidationError as exc:
            raise bad_input("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None
        try:
            row = await record_score(ctx.state, ctx.principal, _hex(trace_id, 32, "trace_id"), body)
        except ApiError as exc:
            code = {403: "FORBIDDEN", 404: "NOT_FOUND"}.get(exc.status, "BAD_USER_INPUT")
            raise GraphQLError(exc.message, extensions={"code": code}) from None
        return Score(**row)


class _Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        """Log only unexpected errors (with their traceback): a bad document or argument is the
        client's business, answered with 400 and not worth a log line each."""
        for error in errors:
            if _mask(error):
                log.error("graphql resolver failed: %s", error.message, exc_info=error.original_error)


schema = _Schema(
    query=Query,
    mutation=Mutation,
    extensions=[
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: AddValidationRules([NoTraceInsideTrace]),
        CostLimiter,
        lambda: MaskErrors(should_mask_error=_mask, error_message="internal error"),
    ],
)


class GraphQLRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    variables: dict[str, Any] | None = None
    operationName: str | None = Field(None, max_length=200)
    extensions: dict[str, Any] | None = None


class GraphQLResult(BaseModel):
    data: dict[str, Any] | None = None
    errors: list[dict[str, Any]] | None = None


router = APIRouter(tags=["graphql"], dependencies=[Depends(strict_query)], route_class=StrictJsonRoute)


@router.post(
    "/graphql",
    response_model=GraphQLResult,
    summary="GraphQL: traces, spans and metrics",
    responses={
        400: {"model": ErrorResponse, "description": "Document does not parse or validate, or bad arguments"},
        **error_responses(401, 403, 422, 429, 503),
    },
)
async def graphql(body: GraphQLRequest, request: Request, principal: Reader, state: State) -> Response:
    settings = state.settings
    budget = Budget(settings.get_int("API_GRAPHQL_MAX_OBJECTS"))
    try:
        # One time budget for the whole request, however many queries its fields run.
        async with asyncio.timeout(state.db.statement_timeout_ms / 1000):
            result = await schema.execute(
                body.query,
                variable_values=body.variables,
                operation_name=body.operationName,
                context_value=Context(state, principal, budget),
            )
    except TimeoutError:
        raise ApiError(
            422, "query_timeout", "the request took longer than the API allows (API_QUERY_TIMEOUT_MS): ask for less"
        ) from None
    errors = [e.formatted for e in result.errors or []]
    codes = {(e.get("extensions") or {}).get("code") for e in errors}
    if "COST_LIMIT" in codes:
        message = next(e["message"] for e in errors if (e.get("extensions") or {}).get("code") == "COST_LIMIT")
        raise ApiError(400, "query_too_costly", message)
    if errors and (result.data is None or "BAD_USER_INPUT" in codes or "UNAVAILABLE" in codes):
        status = 503 if "UNAVAILABLE" in codes else 400
        code = "database_unavailable" if status == 503 else "invalid_graphql"
        failure = error_body(request, code, "; ".join(e["message"] for e in errors[:3]))
        headers = {"Retry-After": "5"} if status == 503 else None
        return json_response(failure | {"errors": errors, "data": result.data}, status=status, headers=headers)
    payload: dict[str, Any] = {"data": result.data}
    if errors:
        payload["errors"] = errors
    data = to_json(payload)
    limit = settings.get_int("API_GRAPHQL_MAX_RESPONSE_BYTES")
    if len(data) > limit:
        raise ApiError(
            400,
            "response_too_large",
            f"the response would be {len(data)} bytes, over {limit} (API_GRAPHQL_MAX_RESPONSE_BYTES): ask for less",
        )
    return json_response(body=data)
