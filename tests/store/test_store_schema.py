"""Schema, migrations and maintenance against a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from llmobs.config import Settings
from llmobs.store import migrations
from llmobs.store.db import connect
from llmobs.store.maintain import maintain
from llmobs.store.retention import partitions

from helpers.common import run_cli, settings_env

SPAN_SQL = """INSERT INTO spans (project_id, trace_id, span_id, name, start_time, end_time, duration_ms,
                                 status_code, provider, response_model, input_tokens, output_tokens, cost_usd,
                                 service_name)
              VALUES (1, %s, %s, 'chat', %s, %s, %s, %s, 'openai', 'gpt-4o', 10, 5, 0.01, 'svc')"""


def test_migrate_applies_once_and_records_each_migration(admin_conn):
    st = migrations.status(admin_conn)
    assert not st.pending
    assert [m.version for m in st.applied] == [m.version for m in migrations.discover()]
    assert migrations.migrate(admin_conn) == []


def test_failing_migration_leaves_schema_as_it_was(admin_conn, tmp_path: Path):
    good = tmp_path / "9001_good.sql"
    good.write_text("CREATE TABLE mig_good (id int);")
    bad = tmp_path / "9002_bad.sql"
    bad.write_text("CREATE TABLE mig_half (id int);\nSELECT no_such_function();")
    found = migrations.discover(tmp_path)
    with pytest.raises(migrations.MigrationError, match=r"9002_bad\.sql failed and was rolled back"):
        migrations.migrate(admin_conn, found)
    exists = admin_conn.execute("SELECT to_regclass('mig_good') IS NOT NULL, to_regclass('mig_half') IS NOT NULL")
    assert exists.fetchone() == (True, False)
    versions = {m.version for m in migrations.applied(admin_conn)}
    assert 9001 in versions and 9002 not in versions


def test_db_status_lists_applied_and_pending(pg_server, template_db, workdir):
    from llmobs.store.bootstrap import bootstrap

    db = f"status_{workdir.name.replace('-', '_')}"
    env = settings_env(pg_server, None, db, LLMOBS_RUNTIME="local")
    with psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user="postgres",
        password=pg_server.password,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    (workdir / ".env").write_text("LLMOBS_RUNTIME=local\n")
    try:
        proc = run_cli("db", "status", "--json", project_dir=workdir, env=env)
        assert proc.returncode == 1, proc.stderr  # everything pending
        assert '"pending": [{"version": 1' in proc.stdout
        bootstrap(Settings(env, None))
        proc = run_cli("db", "status", project_dir=workdir, env=env)
        assert proc.returncode == 0 and "applied" in proc.stdout and "core" in proc.stdout
    finally:
        with psycopg.connect(
            host=pg_server.host,
            port=pg_server.port,
            user="postgres",
            password=pg_server.password,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')


def test_roles_app_can_write_spans_readonly_cannot(settings):
    now = datetime.now(UTC)
    with connect(settings, "admin", autocommit=True) as conn:
        maintain(conn, settings)
    with connect(settings, "app") as conn:
        conn.execute(SPAN_SQL, ("a" * 32, "b" * 16, now, now, 1.0, "ok"))
        conn.commit()
    with connect(settings, "readonly") as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] >= 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(SPAN_SQL, ("c" * 32, "d" * 16, now, now, 1.0, "ok"))


def test_maintain_creates_partitions_ahead_and_drops_expired_ones(admin_conn, settings):
    today = datetime.now(UTC).date()
    old_day = today - timedelta(days=settings.get_int("RETENTION_DAYS") + 2)
    admin_conn.execute("SELECT llmobs_ensure_span_partition(%s)", (old_day,))
    old_ts = datetime.combine(old_day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=3)
    admin_conn.execute(SPAN_SQL, ("e" * 32, "f" * 16, old_ts, old_ts, 1.0, "ok"))
    # OTLP log records are kept as long as spans
    for day in (old_day, today):
        admin_conn.execute("SELECT llmobs_ensure_signal_partition('log_records', %s)", (day,))
    admin_conn.execute(
        "INSERT INTO log_records (project_id, time, span_id) VALUES (1, %s, %s), (1, now(), %s)",
        (old_ts, "f" * 16, "f" * 16),
    )
    result = maintain(admin_conn, settings)
    ahead = settings.get_int("PARTITION_PREMAKE_DAYS")
    for table in ("spans", "log_records", "metric_points"):
        days = {p.day for p in partitions(admin_conn, table)}
        assert {today + timedelta(days=i) for i in range(ahead + 1)} <= days, table
        assert old_day not in days
    assert {f"spans_p{old_day:%Y%m%d}", f"log_records_p{old_day:%Y%m%d}"} <= set(result.partitions_dropped)
    assert admin_conn.execute("SELECT count(*) FROM spans WHERE span_id = %s", ("f" * 16,)).fetchone()[0] == 0
    assert admin_conn.execute("SELECT count(*) FROM log_records WHERE span_id = %s", ("f" * 16,)).fetchone()[0] == 1


def test_rollups_count_tokens_cost_errors_and_latency_percentiles(admin_conn, settings):
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    maintain(admin_conn, settings)
    # 100 spans in one minute with durations 1..100 ms, every tenth an error
    for i in range(1, 101):
        admin_conn.execute(
            SPAN_SQL,
            (
                f"{i:032x}",
                f"{i:016x}",
                base + timedelta(seconds=i % 50),
                base,
                float(i),
                "error" if i % 10 == 0 else "ok",
            ),
        )
    maintain(admin_conn, settings)
    row = admin_conn.execute(
        """SELECT requests, errors, input_tokens, output_tokens, round(cost_usd::numeric, 6),
                  llmobs_hist_quantile(latency_hist, 0.5), llmobs_hist_quantile(latency_hist, 0.99)
           FROM spans_rollup_1m WHERE bucket = %s""",
        (base,),
    ).fetchone()
    requests, errors, tin, tout, cost, p50, p99 = row
    assert (requests, errors, tin, tout, float(cost)) == (100, 10, 1000, 500, 1.0)
    assert 50 / 1.3 <= p50 <= 50 * 1.3
    assert 99 / 1.3 <= p99 <= 99 * 1.3
    hour = admin_conn.execute(
        "SELECT sum(requests), llmobs_hist_quantile(llmobs_hist_sum(latency_hist), 0.5) FROM spans_rollup_1h "
        "WHERE bucket = date_trunc('hour', %s::timestamptz)",
        (base,),
    ).fetchone()
    assert hour[0] == 100 and 50 / 1.3 <= hour[1] <= 50 * 1.3
    # a span arriving late (inside the look-back window) is folded in by the next pass
    admin_conn.execute(SPAN_SQL, ("9" * 32, "9" * 16, base, base, 5.0, "ok"))
    maintain(admin_conn, settings)
    assert admin_conn.execute("SELECT requests FROM spans_rollup_1m WHERE bucket = %s", (base,)).fetchone()[0] == 101


def test_partition_for_any_day_can_be_created_on_demand(admin_conn):
    day = date(2020, 2, 29)
    assert admin_conn.execute("SELECT llmobs_ensure_span_partition(%s)", (day,)).fetchone()[0] is True
    assert admin_conn.execute("SELECT llmobs_ensure_span_partition(%s)", (day,)).fetchone()[0] is False
    ts = datetime(2020, 2, 29, 23, 59, 59, tzinfo=UTC)
    admin_conn.execute(SPAN_SQL, ("1" * 32, "2" * 16, ts, ts, 1.0, "ok"))
