"""/graphql: the same data, auth and scoping as REST, with limits on what a document may ask."""

from __future__ import annotations

from datetime import timedelta

import pytest


def gql(client, headers, query, variables=None):
    return client.post("/graphql", headers=headers, json={"query": query, "variables": variables})


def test_trace_with_nested_spans(client, seeded):
    q = """query($id: String!) { trace(traceId: $id) {
             traceId spanCount costUsd models
             roots { name children { spanId name responseModel inputTokens links parent { spanId }
                                     trace { traceId } } } } }"""
    r = gql(client, seeded.a.auth(), q, {"id": seeded.a.traces[5]})
    assert r.status_code == 200, r.text
    t = r.json()["data"]["trace"]
    assert t["traceId"] == seeded.a.traces[5] and t["spanCount"] == 4 and t["models"] == ["gpt-4o"]
    (root,) = t["roots"]
    assert len(root["children"]) == 3
    assert {c["trace"]["traceId"] for c in root["children"]} == {seeded.a.traces[5]}
    assert root["children"][0]["inputTokens"] == 1000
    first, second, _ = root["children"]
    assert first["links"] == [] and second["links"] == [
        {"trace_id": seeded.a.traces[5], "span_id": first["spanId"], "attributes": {"link.kind": "follows_from"}}
    ]


def test_traces_page_and_metrics(client, seeded):
    since = (seeded.now - timedelta(days=1)).isoformat()
    q = """query($f: TraceFilterInput, $after: String) {
             traces(filter: $f, first: 5, after: $after) { traces { traceId rootName costUsd } nextCursor } }"""
    first = gql(client, seeded.a.auth(), q, {"f": {"from": since}}).json()["data"]["traces"]
    second = gql(client, seeded.a.auth(), q, {"f": {"from": since}, "after": first["nextCursor"]}).json()
    ids = [t["traceId"] for t in first["traces"] + second["data"]["traces"]["traces"]]
    assert ids == seeded.a.traces[:10]
    errors = gql(client, seeded.a.auth(), q, {"f": {"from": since, "status": "error"}}).json()["data"]["traces"]
    assert [t["traceId"] for t in errors["traces"]] == [seeded.a.traces[4]]
    m = gql(
        client,
        seeded.a.auth(),
        """{ metrics(groupBy: PROVIDER, interval: "1h") {
             group points { time requests latencyP95Ms costUsd } } }""",
    ).json()["data"]["metrics"]
    assert [s["group"] for s in m] == ["openai"]
    assert sum(p["requests"] for p in m[0]["points"]) == sum(1 + i % 3 for i in range(12))


def test_span_lookup_is_scoped(client, seeded):
    r = client.get(f"/api/v1/traces/{seeded.b.traces[0]}", headers=seeded.b.auth()).json()
    b_span = r["roots"][0]["span_id"]
    q = f'{{ span(spanId: "{b_span}") {{ name serviceName }} }}'
    assert gql(client, seeded.b.auth(), q).json()["data"]["span"]["serviceName"] == "secret-svc"
    assert gql(client, seeded.a.auth(), q).json()["data"]["span"] is None


def test_query_nested_50_levels_is_refused(client, seeded):
    depth = 50
    nested = "spans { trace { " * depth + "traceId" + " } }" * depth
    q = f'{{ trace(traceId: "{seeded.a.traces[0]}") {{ {nested} }} }}'
    r = gql(client, seeded.a.auth(), q)
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["code"] == "invalid_graphql"
    assert "exceeds maximum operation depth" in body["error"]["message"]
    assert body["error"]["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("{ traces(first: 100000) { nextCursor } }", "first must be between 1 and 200"),
        ('{ trace(traceId: "xyz") { traceId } }', "trace_id must be 32 hex"),
        ('{ metrics(interval: "7w") { group } }', "unknown interval"),
        ('{ traces(filter: {status: "maybe"}) { nextCursor } }', "status must be ok or error"),
        ('{ traces(after: "garbage") { nextCursor } }', "cursor is not valid"),
        ("{ traces { nope } }", "Cannot query field 'nope'"),
        ("{ traces(", "Syntax Error"),
        ("mutation { x }", "mutation"),
        ("{ " + " ".join(f"a{i}: traces {{ nextCursor }}" for i in range(40)) + " }", "aliases"),
    ],
)
def test_bad_documents_and_arguments_are_4xx(client, seeded, query, fragment):
    r = gql(client, seeded.a.auth(), query)
    assert r.status_code == 400, r.text
    assert fragment.lower() in r.json()["error"]["message"].lower()


def test_graphql_needs_credentials_and_valid_body(client):
    assert client.post("/graphql", json={"query": "{ traces { nextCursor } }"}).status_code == 401
    r = client.post("/graphql", headers={"Authorization": "Bearer x"}, json={"nope": 1})
    assert r.status_code in (401, 422)
