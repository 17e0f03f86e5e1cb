"""The one list of a span's fields, and where each surface deliberately leaves one out.

Surfaces: ``table`` (the columns of ``spans``), ``row`` (:class:`llmobs.store.spans.SpanRow`, the
COPY order the collector writes), ``rest`` (the API's ``Span`` model) and ``graphql`` (the
GraphQL ``Span`` type, camelCase). ``tests/store/test_span_fields.py`` checks every surface against
this list: a field a surface lacks without a reason in :attr:`SpanField.omit` fails it.

Adding a span field: add it here, add the column in a migration, then the field of ``SpanRow``
(and :func:`llmobs.store.spans.encode_row`), the REST model and the GraphQL type; the parity test
says what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Surface = Literal["table", "row", "rest", "graphql"]
SURFACES: tuple[Surface, ...] = ("table", "row", "rest", "graphql")


@dataclass(frozen=True)
class SpanField:
    """One field of a span: its name (snake_case everywhere but GraphQL) and the surfaces that
    leave it out, each with the reason."""

    name: str
    omit: dict[Surface, str] = field(default_factory=dict)

    def on(self, surface: Surface) -> bool:
        return surface not in self.omit


_PROJECT = "the caller's project, implied by its API key"
_DB_DEFAULT = "set by the database (DEFAULT now()) when the row is written"

SPAN_FIELDS: tuple[SpanField, ...] = (
    SpanField("project_id", {"rest": _PROJECT, "graphql": _PROJECT}),
    SpanField("trace_id"),
    SpanField("span_id"),
    SpanField("parent_span_id"),
    SpanField("service_name"),
    SpanField("environment"),
    SpanField("scope_name"),
    SpanField("name"),
    SpanField("kind"),
    SpanField("start_time"),
    SpanField("end_time"),
    SpanField("duration_ms"),
    SpanField("status_code"),
    SpanField("status_message"),
    SpanField("provider"),
    SpanField("request_model"),
    SpanField("response_model"),
    SpanField("operation"),
    SpanField("input_tokens"),
    SpanField("output_tokens"),
    SpanField("total_tokens"),
    SpanField("cached_input_tokens"),
    SpanField("reasoning_tokens"),
    SpanField("cost_usd"),
    SpanField("cost_source"),
    SpanField("session_id"),
    SpanField("user_id"),
    SpanField("finish_reasons"),
    SpanField("attributes"),
    SpanField("events"),
    SpanField("resource"),
    SpanField("links"),
    SpanField("input_messages"),
    SpanField("output_messages"),
    SpanField("time_to_first_token_ms"),
    SpanField("ingested_at", {"row": _DB_DEFAULT}),
    SpanField(
        "message_words",
        {
            "row": "filled after the write by `llmobs db maintain` (the search index of q=), not by the writer",
            "rest": "the search index's words; the messages themselves are served",
            "graphql": "the search index's words; the messages themselves are served",
        },
    ),
)


def field_names(surface: Surface) -> tuple[str, ...]:
    """The fields ``surface`` carries, in the order of :data:`SPAN_FIELDS`."""
    return tuple(f.name for f in SPAN_FIELDS if f.on(surface))
