"""One list of span fields (llmobs/store/span_fields.py) held against every surface: the spans
table, the COPY row, the REST model and the GraphQL type. A field a surface lacks fails here
unless the list declares why it is left out."""

from __future__ import annotations

import re

import pytest

from llmobs.api.graphql import schema
from llmobs.api.models import Span as RestSpan
from llmobs.store.span_fields import SPAN_FIELDS, SURFACES, Surface, field_names
from llmobs.store.spans import SpanRow


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def _graphql_fields() -> set[str]:
    span_type = schema._schema.get_type("Span")  # the GraphQL schema as clients see it (camelCase)
    assert span_type is not None
    relations = {"children", "parent", "trace"}  # links to other objects, not span fields
    return set(span_type.fields) - relations


def surface_fields(surface: Surface, admin_conn=None) -> set[str]:
    if surface == "table":
        rows = admin_conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'spans'"
        ).fetchall()
        return {r[0] for r in rows}
    if surface == "row":
        return set(SpanRow._fields)
    if surface == "rest":
        return set(RestSpan.model_fields)
    return _graphql_fields()


@pytest.mark.parametrize("surface", [s for s in SURFACES if s != "table"])
def test_each_surface_has_every_field_not_declared_omitted(surface: Surface) -> None:
    expected = {f.name for f in SPAN_FIELDS if f.on(surface)}
    if surface == "graphql":
        expected = {_camel(n) for n in expected}
    actual = surface_fields(surface)
    assert actual == expected, (
        f"{surface}: missing {sorted(expected - actual)}, not in span_fields.py {sorted(actual - expected)}; "
        "add the field to the surface or declare the omission with its reason"
    )
    for f in SPAN_FIELDS:
        for omitted, reason in f.omit.items():
            assert omitted in SURFACES and reason.strip(), f"{f.name}: omission from {omitted} needs a reason"


def test_row_order_is_the_lists_order() -> None:
    assert SpanRow._fields == field_names("row")


def test_table_has_every_column(admin_conn) -> None:
    assert surface_fields("table", admin_conn) == {f.name for f in SPAN_FIELDS if f.on("table")}
