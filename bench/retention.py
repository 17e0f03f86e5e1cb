"""Retention per project, against a plain DROP of the same partitions, on spans over 30 daily
partitions: time, WAL written (pg_current_wal_lsn difference) and the ingest rate while it runs.

    .venv/bin/python bench/retention.py [--spans 10000000]

Two projects share the 30 days of spans evenly: one keeps 10 days, the other 20, and both
cut-offs fall in the middle of a day's partition; RETENTION_DAYS is 20. Enforcement (``llmobs.store.retention``) drops
the 9-10 partitions past 20 days and deletes the short project's rows of days 10 to 20 in batches
of RETENTION_BATCH_ROWS. The baseline is what the global setting did before: DROP TABLE of every
partition past 10 days (losing the long project's data, which per-project retention keeps).

Each side runs on a fresh copy of the same database (CREATE DATABASE ... TEMPLATE ... STRATEGY
FILE_COPY, dropped after its run), twice: once quiet (time, WAL), once with a writer COPYing spans
of a third project through the store's writer (spans/s during the run, against its rate before
the run). The spans are made by the server (generate_series, 200 k per INSERT), oldest first as
spans arrive, with WAL archiving off while filling and copying (on while measuring). Creates a
throwaway local-runtime project on free ports under /tmp and removes it afterwards; 10 M spans
take about 6 GB per database (two at a time) and 5 to 20 minutes on the shared 2-core machine.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from benchlib import local_stack

from llmobs.config import Settings
from llmobs.store.apikeys import ensure_project
from llmobs.store.db import connect
from llmobs.store.retention import enforce_retention, partitions
from llmobs.store.spans import SpanRow, copy_spans

DAYS = 30
FILL_SQL = """
INSERT INTO spans (project_id, trace_id, span_id, service_name, name, kind, start_time, end_time, duration_ms,
                   status_code, provider, request_model, response_model, input_tokens, output_tokens, cost_usd,
                   user_id, attributes)
SELECT CASE WHEN g %% 2 = 0 THEN %(short)s ELSE %(long)s END, md5(g::text), left(md5((g * 7)::text), 16), 'bench',
       'chat gpt-4o', 'client', ts, ts + interval '800 ms', 800, 'ok', 'openai', 'gpt-4o', 'gpt-4o', g %% 1000,
       g %% 300, (g %% 1300) * 0.00001, 'user-' || (g %% 5000),
       jsonb_build_object('gen_ai.prompt', repeat(md5(g::text) || ' ', 4))
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g,
     LATERAL (SELECT %(now)s::timestamptz - interval '30 days'
                     + (g::double precision / %(total)s) * interval '30 days' AS ts) t"""


def admin_settings(base: Settings, db: str) -> Settings:
    return Settings({**base._raw, "DB_NAME": db}, None)


def fill(settings: Settings, total: int, now: datetime) -> tuple[int, int]:
    """``total`` spans over the last 30 days, half in a project keeping 10 days, half in one keeping
    20, inserted oldest first (as spans arrive: a partition's rows lie in time order on disk)."""
    with connect(settings, "admin", autocommit=True) as conn:
        short, _ = ensure_project(conn, "short")
        long_, _ = ensure_project(conn, "long")
        conn.execute("UPDATE projects SET retention_days = 10 WHERE id = %s", (short,))
        conn.execute("UPDATE projects SET retention_days = 20 WHERE id = %s", (long_,))
        conn.execute("UPDATE projects SET retention_days = 20 WHERE name = 'default'")
        for back in range(-1, DAYS + 2):
            conn.execute("SELECT llmobs_ensure_span_partition(%s)", ((now - timedelta(days=back)).date(),))
        step = 200_000
        for first in range(1, total + 1, step):
            conn.execute(
                FILL_SQL,
                {
                    "short": short,
                    "long": long_,
                    "first": first,
                    "last": min(first + step - 1, total),
                    "now": now,
                    "total": total,
                },
            )
            if min(first + step - 1, total) % 2_000_000 == 0:
                print(f"  {min(first + step - 1, total):,} spans", flush=True)
        conn.execute("VACUUM ANALYZE spans")
    return short, long_


class Writer(threading.Thread):
    """COPYs batches of 200 spans of project ``project_id`` through the store's writer (as the
    app login role, as the collector does), counting spans acknowledged per second."""

    def __init__(self, settings: Settings, project_id: int) -> None:
        super().__init__(daemon=True)
        self.settings, self.project_id = settings, project_id
        self.stop = threading.Event()
        self.times: list[float] = []

    def run(self) -> None:
        import secrets

        with connect(self.settings, "app", autocommit=True) as conn:
            while not self.stop.is_set():
                now = datetime.now(UTC)
                rows = [
                    SpanRow(
                        project_id=self.project_id,
                        trace_id=secrets.token_hex(16),
                        span_id=secrets.token_hex(8),
                        parent_span_id=None,
                        service_name="live",
                        environment=None,
                        scope_name=None,
                        name="chat",
                        kind="client",
                        start_time=now,
                        end_time=now,
                        duration_ms=1.0,
                        status_code="ok",
                        status_message=None,
                        provider="openai",
                        request_model="gpt-4o",
                        response_model="gpt-4o",
                        operation="chat",
                        input_tokens=10,
                        output_tokens=5,
                        total_tokens=15,
                        cached_input_tokens=None,
                        reasoning_tokens=None,
                        cost_usd=0.0001,
                        cost_source="computed",
                        session_id=None,
                        user_id="u",
                        finish_reasons=None,
                        attributes="{}",
                        events="[]",
                        resource="{}",
                    )
                    for _ in range(200)
                ]
                with conn.transaction():
                    copy_spans(conn, rows)
                self.times.append(time.monotonic())

    def rate(self, start: float, end: float) -> float:
        return 200 * sum(1 for t in self.times if start <= t < end) / max(end - start, 1e-9)


def measure(settings: Settings, work: Callable[[Settings], object], writer_project: int | None) -> dict[str, float]:
    with connect(settings, "admin", autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    writer = None
    if writer_project is not None:
        writer = Writer(settings, writer_project)
        writer.start()
        time.sleep(5)
    started = time.monotonic()
    work(settings)
    elapsed = time.monotonic() - started
    figures = {"seconds": elapsed}
    if writer is not None:
        time.sleep(0.5)
        writer.stop.set()
        writer.join()
        figures["ingest_before"] = writer.rate(started - 4.5, started)
        figures["ingest_during"] = writer.rate(started, started + elapsed)
    with connect(settings, "admin", autocommit=True) as conn:
        figures["wal_mb"] = (
            float(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,)).fetchone()[0]) / 2**20
        )
    return figures


def per_project(now: datetime) -> Callable[[Settings], object]:
    def work(settings: Settings) -> object:
        with connect(settings, "admin", autocommit=True) as conn:
            result = enforce_retention(conn, settings, now=now)
        print(
            f"  {len(result.partitions_dropped)} partitions dropped, {result.rows_deleted} rows deleted"
            f" in {result.batches} batches",
            flush=True,
        )
        return result

    return work


def plain_drop(now: datetime) -> Callable[[Settings], object]:
    """The old global retention: DROP TABLE of every partition past the shortest retention."""

    def work(settings: Settings) -> object:
        cutoff = now - timedelta(days=10)
        with connect(settings, "admin", autocommit=True) as conn:
            for part in partitions(conn, "spans"):
                if part.end <= cutoff:
                    conn.execute(f'DROP TABLE "{part.name}"')
        return None

    return work


def copy_db(settings: Settings, template: str, name: str) -> Settings:
    """A copy of database ``template`` by file copy (STRATEGY FILE_COPY: a checkpoint and the
    files, not gigabytes of WAL as the default WAL_LOG strategy writes)."""
    with connect(settings, "admin", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    return admin_settings(settings, name)


def drop_db(settings: Settings, name: str) -> None:
    with connect(settings, "admin", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def archive_wal(settings: Settings, on: bool) -> None:
    """WAL archiving of the throwaway server on or off (off while filling and copying: gigabytes
    of WAL nobody restores; on while measuring, as in a real stack)."""
    with connect(settings, "admin", dbname="postgres", autocommit=True) as conn:
        conn.execute("ALTER SYSTEM RESET archive_command" if on else "ALTER SYSTEM SET archive_command = 'true'")
        conn.execute("SELECT pg_reload_conf()")
        if not on:
            conn.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=10_000_000)
    args = parser.parse_args()
    # RETENTION_DAYS: the longest project retention, so older partitions can go whole.
    with local_stack("llmobs-bench-retention-", "timescaledb", env_lines=("RETENTION_DAYS=20\n",)) as project:
        settings = Settings.load(project)
        now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
        template = settings.get_str("DB_NAME")
        print(f"filling {args.spans:,} spans over {DAYS} daily partitions ...", flush=True)
        started = time.monotonic()
        archive_wal(settings, False)
        fill(settings, args.spans, now)
        with connect(settings, "admin", autocommit=True) as conn:
            writer_project, _ = ensure_project(conn, "live")
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        print(f"filled in {time.monotonic() - started:.0f} s; database {size}", flush=True)
        results: dict[str, dict[str, float]] = {}
        for label, work in (("per-project retention", per_project(now)), ("plain DROP", plain_drop(now))):
            runs = []
            for name, writer in (("bench_quiet", None), ("bench_loaded", writer_project)):
                archive_wal(settings, False)
                copy = copy_db(settings, template, name)
                archive_wal(settings, True)
                runs.append(measure(copy, work, writer))
                print(f"{label}, {'ingest on' if writer else 'quiet'}: {runs[-1]}", flush=True)
                drop_db(settings, name)
            quiet, loaded = runs
            results[label] = {
                **quiet,
                "ingest_before": loaded["ingest_before"],
                "ingest_during": loaded["ingest_during"],
                "seconds_under_ingest": loaded["seconds"],
            }
        print(f"\n{'':24}{'time s':>9}{'WAL MB':>9}{'time s (ingest on)':>20}{'ingest/s before':>17}{'during':>9}")
        for label, r in results.items():
            print(
                f"{label:24}{r['seconds']:9.1f}{r['wal_mb']:9.1f}{r['seconds_under_ingest']:20.1f}"
                f"{r['ingest_before']:17.0f}{r['ingest_during']:9.0f}"
            )


if __name__ == "__main__":
    main()
