"""Tenant isolation and write protection, proven twice: through the API (whatever the request
says, a key sees only its project) and in PostgreSQL itself (row-level security on the span
tables for the app role, read-only transactions for reads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import psycopg
import pytest

from llmobs.config import Settings
from llmobs.store.db import connect

from helpers.api import api_client, llm_trace, store_spans
from helpers.common import free_port


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_a_key_never_sees_another_projects_spans(settings: Settings, seeded):
    a, b = seeded.a, seeded.b
    since = iso(seeded.now - timedelta(days=7))
    with api_client(settings) as c:
        for role in ("reader", "writer", "admin"):
            # B's traces and spans do not exist for A's keys: 404, not 403 (nothing leaks).
            r = c.get(f"/api/v1/traces/{b.traces[0]}", headers=a.auth(role))
            assert r.status_code == 404, r.text
            b_trace = c.get(f"/api/v1/traces/{b.traces[0]}", headers=b.auth()).json()
            b_span = b_trace["roots"][0]["children"][0]["span_id"]
            assert c.get(f"/api/v1/spans/{b_span}", headers=a.auth(role)).status_code == 404
        listed = c.get("/api/v1/traces", headers=a.auth(), params={"from": since, "limit": 1000}).json()["traces"]
        assert {t["trace_id"] for t in listed} == set(a.traces)
        assert "secret-svc" not in {t["service_name"] for t in listed}
        assert (
            c.get("/api/v1/traces", headers=a.auth(), params={"service": "secret-svc", "from": since}).json()["traces"]
            == []
        )
        # Structured queries cannot reach B, not even by filtering on project fields.
        q = {
            "from": since,
            "group_by": ["service_name", "provider"],
            "aggregates": [{"fn": "count"}],
            "filters": [{"field": "resource.service.name", "op": "eq", "value": "secret-svc"}],
        }
        assert c.post("/api/v1/query", headers=a.auth(), json=q).json()["rows"] == []
        q = {"from": since, "group_by": ["service_name"], "aggregates": [{"fn": "count"}]}
        rows = c.post("/api/v1/query", headers=a.auth(), json=q).json()["rows"]
        assert {row[0] for row in rows} == {"chatbot", "rag"}
        metrics = c.get(
            "/api/v1/metrics", headers=a.auth(), params={"from": since, "group_by": "provider", "interval": "1d"}
        ).json()
        assert {s["group"] for s in metrics["series"]} == {"openai"}
        query = f'{{ trace(traceId: "{b.traces[0]}") {{ traceId }} }}'
        gql = c.post("/graphql", headers=a.auth(), json={"query": query})
        assert gql.status_code == 200 and gql.json()["data"]["trace"] is None
        # The same requests with B's key do see B.
        assert c.get(f"/api/v1/traces/{b.traces[0]}", headers=b.auth()).status_code == 200


def test_reader_keys_cannot_write(settings: Settings, seeded):
    span = {"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "x", "start_time": iso(datetime.now(UTC))}
    with api_client(settings) as c:
        r = c.post("/api/v1/spans", headers=seeded.a.auth("reader"), json=span)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        token = c.post("/api/v1/auth/token", headers=seeded.a.auth("reader")).json()["access_token"]
        assert c.post("/api/v1/spans", headers={"Authorization": f"Bearer {token}"}, json=span).status_code == 403
        assert c.post("/api/v1/spans", headers=seeded.a.auth("writer"), json=span).status_code == 201
    with connect(settings, "admin") as conn:
        assert conn.execute("SELECT count(*) FROM spans WHERE span_id = %s", ("cd" * 8,)).fetchone()[0] == 1


def test_api_read_transactions_are_read_only(settings: Settings, seeded):
    """Even a bug in a read path could not write: reads run in READ ONLY transactions."""
    import asyncio

    from llmobs.api.db import Database

    async def attempt() -> None:
        db = Database(settings)
        await db.open()
        try:
            await db.read(seeded.a.id, lambda conn: conn.execute("DELETE FROM spans"))
        finally:
            await db.close()

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        asyncio.run(attempt())


def test_a_pooled_connection_serves_one_project_then_another(settings: Settings, seeded):
    """Reads set the project on the session, and only when it changes: one connection, used by
    A, then B, then A again (also after a failed read), sees each time only that project."""
    import asyncio

    from llmobs.api.db import Database

    async def projects_seen(db: Database, project_id: int) -> set[int]:
        async def distinct(conn: psycopg.AsyncConnection) -> set[int]:
            cur = await conn.execute("SELECT DISTINCT project_id FROM spans")
            return {r[0] for r in await cur.fetchall()}

        return await db.read(project_id, distinct)

    async def scenario() -> list[set[int]]:
        db = Database(settings.with_overrides(DB_POOL_SIZE="1"))
        await db.open()
        try:
            seen = [await projects_seen(db, seeded.a.id), await projects_seen(db, seeded.b.id)]
            with pytest.raises(psycopg.errors.UndefinedTable):
                await db.read(seeded.b.id, lambda conn: conn.execute("SELECT * FROM no_such_table"))
            seen += [await projects_seen(db, seeded.a.id), await projects_seen(db, seeded.a.id)]
            async with db.control() as conn:  # writes still work on the read-only-by-default session
                await conn.execute("UPDATE api_keys SET name = name WHERE false")
            seen.append(await projects_seen(db, seeded.b.id))
            return seen
        finally:
            await db.close()

    a, b = seeded.a.id, seeded.b.id
    assert asyncio.run(scenario()) == [{a}, {b}, {a}, {a}, {b}]


def test_reads_that_may_lag_use_the_read_port_and_fall_back_to_the_leader(settings: Settings, seeded):
    """API_READ_FROM_REPLICA: the trace list runs on DB_READ_PORT's server (here the same
    PostgreSQL, whose sessions then carry the replica pool's name), a span by id on the leader's
    pool; with nothing listening on DB_READ_PORT the leader serves the list, with the same answer."""
    traces = "/api/v1/traces?" + urlencode({"from": (seeded.now - timedelta(hours=9)).isoformat(), "limit": 100})
    with api_client(settings) as c:
        expected = c.get(traces, headers=seeded.a.auth()).json()
    assert len(expected["traces"]) == 12
    replica = settings.with_overrides(API_READ_FROM_REPLICA="true", DB_READ_PORT=str(settings.get_int("DB_PORT")))
    with api_client(replica) as c:
        assert c.get(traces, headers=seeded.a.auth()).json() == expected
        with connect(settings, "admin", autocommit=True) as conn:
            queries = conn.execute(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'llmobs-api-replica'"
            ).fetchall()
        assert any("spans" in q for (q,) in queries), queries
    nothing_there = settings.with_overrides(API_READ_FROM_REPLICA="true", DB_READ_PORT=str(free_port()))
    with api_client(nothing_there) as c:
        for _ in range(3):  # the first waits for the replica pool, the next go to the leader at once
            assert c.get(traces, headers=seeded.a.auth()).json() == expected
        assert c.get(f"/api/v1/traces/{seeded.a.traces[0]}", headers=seeded.a.auth()).status_code == 200


def test_connections_ended_by_the_server_are_replaced_before_a_request_gets_them(settings: Settings, seeded):
    """A PostgreSQL restart or a password rotation ends the API's sessions: the next requests
    are answered from fresh connections, not with errors."""
    with api_client(settings) as c:
        for _ in range(3):
            assert c.get(f"/api/v1/traces/{seeded.a.traces[0]}", headers=seeded.a.auth()).status_code == 200
        with connect(settings, "admin", autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'llmobs-api'"
            ).fetchone()[0]
        assert ended >= 1
        for _ in range(5):
            r = c.get(f"/api/v1/traces/{seeded.a.traces[0]}", headers=seeded.a.auth())
            assert r.status_code == 200, r.text


def _as_api(settings: Settings, project_id: int | None):
    """A connection like the API's: app login, then the llmobs_app group role, project scoped."""
    conn = connect(settings, "app")
    conn.execute("SET ROLE llmobs_app")
    if project_id is not None:
        conn.execute("SELECT set_config('llmobs.project_id', %s, false)", (str(project_id),))
    return conn


def test_row_level_security_in_postgres(settings: Settings, seeded):
    a, b = seeded.a, seeded.b
    with _as_api(settings, a.id) as conn:
        # The query asks for B by name; PostgreSQL still returns nothing.
        assert conn.execute("SELECT count(*) FROM spans WHERE project_id = %s", (b.id,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] > 0
        assert {r[0] for r in conn.execute("SELECT DISTINCT project_id FROM spans")} == {a.id}
        assert conn.execute("SELECT count(*) FROM spans_rollup_1m WHERE project_id = %s", (b.id,)).fetchone()[0] == 0
        assert conn.execute("UPDATE spans SET name = 'pwned' WHERE project_id = %s", (b.id,)).rowcount == 0
        assert conn.execute("DELETE FROM spans WHERE project_id = %s", (b.id,)).rowcount == 0
        # Moving A's rows into B is refused as well.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE spans SET project_id = %s WHERE project_id = %s", (b.id, a.id))
        conn.rollback()
    with _as_api(settings, None) as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 0  # no project set: nothing
    with _as_api(settings, "not-a-number") as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 0
    with connect(settings, "admin") as conn:
        names = {r[0] for r in conn.execute("SELECT DISTINCT name FROM spans WHERE project_id = %s", (b.id,))}
        assert (
            "pwned" not in names
            and conn.execute("SELECT count(*) FROM spans WHERE project_id = %s", (b.id,)).fetchone()[0] == 18
        )


def test_inserts_stay_open_to_every_project(settings: Settings, seeded):
    """The collector writes several projects in one transaction: INSERT for any project works as
    the group role, and COPY (which row-level security forbids to the roles it applies to) as the
    login role, in one transaction for two projects."""
    from llmobs.collector.pipeline import SpanPipeline
    from llmobs.store.spans import copy_spans

    now = datetime.now(UTC)
    with _as_api(settings, seeded.a.id) as conn:
        conn.execute(
            """INSERT INTO spans (project_id, trace_id, span_id, name, start_time, end_time, duration_ms)
                        VALUES (%s, %s, %s, 'x', now(), now(), 0)""",
            (seeded.b.id, "ef" * 16, "01" * 8),
        )
        conn.commit()
    pipeline = SpanPipeline()
    rows = (
        pipeline.process(llm_trace(now), project_id=seeded.a.id).rows
        + pipeline.process(llm_trace(now), project_id=seeded.b.id).rows
    )
    with connect(settings, "app") as conn:
        copy_spans(conn, rows)
        conn.commit()
    with connect(settings, "admin") as conn:
        assert conn.execute("SELECT count(*) FROM spans WHERE span_id = %s", ("01" * 8,)).fetchone()[0] == 1
        assert conn.execute(
            "SELECT count(*) FROM spans WHERE trace_id = ANY(%s)", ([r.trace_id for r in rows],)
        ).fetchone()[0] == len(rows)
    store_spans(settings, seeded.b.id, llm_trace(now))  # the test helper's path: same COPY as the collector


def test_readonly_role_reads_all_and_writes_nothing(settings: Settings, seeded):
    with connect(settings, "readonly") as conn:
        assert {r[0] for r in conn.execute("SELECT DISTINCT project_id FROM spans")} == {seeded.a.id, seeded.b.id}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM spans")
