"""Data lifecycle on a real PostgreSQL: retention per project, erasure, export and import, driven
through the CLI (subprocess), the API (in-process) and `db maintain` while spans keep arriving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmobs.config import Settings, render_env_file
from llmobs.store.db import connect
from llmobs.store.maintain import maintain
from llmobs.store.retention import partitions

from helpers.api import api_client, llm_trace, make_project, store_spans

# Bulk spans of one project: one every 10 minutes over the last 12 days, relative to %(now)s.
BULK_SQL = """INSERT INTO spans (project_id, trace_id, span_id, name, start_time, end_time, duration_ms,
                                 service_name, user_id)
              SELECT %(project)s, md5(%(project)s::text || '-' || g),
                     substr(md5('s' || %(project)s || '-' || g), 1, 16), 'chat', ts, ts, 1.0, 'bulk', 'bulk-user'
              FROM generate_series(1, 12 * 144) g,
                   LATERAL (SELECT %(now)s::timestamptz - g * interval '10 minutes' AS ts) t"""


@pytest.fixture
def project_dir(settings: Settings, pg_server, redis_server, db_name, tmp_path: Path) -> Path:
    from helpers.common import settings_env

    env = settings_env(pg_server, redis_server, db_name, RETENTION_BATCH_ROWS="100", RETENTION_DAYS="8")
    (tmp_path / ".env").write_text(render_env_file(env))
    (tmp_path / ".env").chmod(0o600)
    return tmp_path


def llmobs(project_dir: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "REDIS_", "LLMOBS_", "SECRET_"))}
    return subprocess.run(
        [sys.executable, "-m", "llmobs", "--project-dir", str(project_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        input=input,
    )


# `llmobs` with BATCH_SPANS spans per export batch from $EXPORT_BATCH_SPANS, killed (SIGKILL: no
# cleanup) right after the batch number $KILL_AT_FLUSH reached the disk and before its checkpoint,
# or in the middle of writing the parquet stage's batch number $KILL_IN_WRITE (half of its bytes
# on disk).
KILLABLE_LLMOBS = """
import os, signal
from llmobs.backup import export
from llmobs.cli.main import run

export.BATCH_SPANS = int(os.environ["EXPORT_BATCH_SPANS"])
kill_at, flushes, real_flush = int(os.environ.get("KILL_AT_FLUSH", "0")), [], export._Writer.flush
kill_in, messages, real_message = int(os.environ.get("KILL_IN_WRITE", "0")), [], export._ArrowStageWriter._message


def message(self, record_batch):
    data = real_message(self, record_batch)
    messages.append(len(data))
    if len(messages) == kill_in:
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        os.fsync(self.file.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return data


def flush(self):
    length = real_flush(self)
    flushes.append(length)
    if len(flushes) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return length


export._Writer.flush = flush
export._ArrowStageWriter._message = message
run()
"""


def killable_llmobs(
    project_dir: Path, *args: str, batch_spans: int, kill_at_flush: int = 0, kill_in_write: int = 0
) -> subprocess.CompletedProcess[str]:
    """`llmobs ARGS` exporting ``batch_spans`` per batch, killed at flush ``kill_at_flush`` or in
    the middle of the parquet stage's write ``kill_in_write`` (0: never)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "REDIS_", "LLMOBS_", "SECRET_"))}
    env |= {
        "EXPORT_BATCH_SPANS": str(batch_spans),
        "KILL_AT_FLUSH": str(kill_at_flush),
        "KILL_IN_WRITE": str(kill_in_write),
    }
    return subprocess.run(
        [sys.executable, "-c", KILLABLE_LLMOBS, "--project-dir", str(project_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr
    return proc


def usage_error(proc: subprocess.CompletedProcess[str], text: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert text in proc.stderr and "Traceback" not in proc.stderr


class Ingest(threading.Thread):
    """Sends traces of ``project_id`` now, through the collector's pipeline and COPY, until stopped;
    ``acked`` holds the trace ids whose commit returned."""

    def __init__(self, settings: Settings, project_id: int, user: str = "live-user") -> None:
        super().__init__(daemon=True)
        self.settings, self.project_id, self.user = settings, project_id, user
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                trace = llm_trace(datetime.now(UTC), user=self.user, calls=1)
                store_spans(self.settings, self.project_id, trace)
                self.acked.append(trace[0].trace_id)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def finish(self) -> list[str]:
        self.stop.set()
        self.join(30)
        assert self.error is None, self.error
        return list(self.acked)


def traces_present(settings: Settings, project_id: int, trace_ids: list[str]) -> set[str]:
    with connect(settings, "admin", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT DISTINCT trace_id FROM spans WHERE project_id = %s AND trace_id = ANY(%s)", (project_id, trace_ids)
        ).fetchall()
    return {r[0] for r in rows}


def test_retention_per_project_drops_whole_partitions_and_deletes_the_rest_in_batches(
    settings: Settings, project_dir: Path
):
    first = settings  # RETENTION_DAYS 30: nothing expires at the first pass
    # RETENTION_DAYS at the longest project retention: older partitions can go whole.
    settings = Settings({**settings._raw, "RETENTION_BATCH_ROWS": "100", "RETENTION_DAYS": "8"}, None)
    now = datetime.now(UTC)
    short, long_ = make_project(settings, "short"), make_project(settings, "long")
    with connect(settings, "admin", autocommit=True) as conn:
        for days_back in range(14):
            conn.execute("SELECT llmobs_ensure_span_partition(%s)", ((now - timedelta(days=days_back)).date(),))
        default_id = conn.execute("SELECT id FROM projects WHERE name = 'default'").fetchone()[0]
        for project_id in (default_id, short.id, long_.id):
            conn.execute(BULK_SQL, {"project": project_id, "now": now})
        maintain(conn, first, now=now)  # rollups of all 12 days, nothing expired yet (30 d)

    ok(llmobs(project_dir, "projects", "set", "default", "--retention-days", "5"))
    ok(llmobs(project_dir, "projects", "set", "short", "--retention-days", "2", "--rollup-retention-days", "4"))
    shown = json.loads(ok(llmobs(project_dir, "projects", "set", "long", "--retention-days", "8", "--json")).stdout)
    assert shown["retention_days"] == 8 and shown["retention_days_source"] == "project"
    assert shown["rollup_retention_days"] is None  # ROLLUP_RETENTION_DAYS=0: forever
    usage_error(llmobs(project_dir, "projects", "show", "nosuch"), "no project named 'nosuch'")
    usage_error(llmobs(project_dir, "projects", "set", "short", "--rollup-retention-days", "1"), "shorter than span")
    usage_error(llmobs(project_dir, "projects", "set", "short"), "nothing to set")
    usage_error(llmobs(project_dir, "projects", "set", "short", "--retention-days", "0"), "between 1 and 36500")

    ingest = Ingest(settings, short.id)
    ingest.start()
    with connect(settings, "admin", autocommit=True) as conn:
        result = maintain(conn, settings, now=now)
    acked = ingest.finish()
    assert not result.timescale  # no extension here: the native-partition path ran

    # Whole partitions went where every project's rows had expired (older than 8 days), no others.
    cut = now - timedelta(days=8)
    dropped = {f"spans_p{(now - timedelta(days=d)).date():%Y%m%d}" for d in range(14)} & set(result.partitions_dropped)
    assert dropped and all(datetime.strptime(n[7:], "%Y%m%d").date() + timedelta(days=1) <= cut.date() for n in dropped)
    with connect(settings, "admin", autocommit=True) as conn:
        remaining = {p.day for p in partitions(conn, "spans")}
        assert (cut - timedelta(days=1)).date() not in remaining and cut.date() in remaining
        assert result.retention is not None and result.retention.batches > 3  # bounded batches
        for project_id, days in ((default_id, 5), (short.id, 2), (long_.id, 8)):
            cutoff = now - timedelta(days=days)
            old, kept = conn.execute(
                "SELECT count(*) FILTER (WHERE start_time < %s), count(*) FILTER (WHERE start_time >= %s) "
                "FROM spans WHERE project_id = %s AND service_name = 'bulk'",
                (cutoff, cutoff, project_id),
            ).fetchone()
            expected = sum(1 for g in range(1, 12 * 144 + 1) if now - timedelta(minutes=10 * g) >= cutoff)
            assert (old, kept) == (0, expected), (project_id, days)
        # Rollups outlive spans: "short" keeps 4 days of them, the default project all 12.
        oldest_rollup = dict(conn.execute("SELECT project_id, min(bucket) FROM spans_rollup_1h GROUP BY 1").fetchall())
        assert now - timedelta(days=4, hours=1) <= oldest_rollup[short.id] < now - timedelta(days=2)
        assert oldest_rollup[default_id] < now - timedelta(days=11)
    # No acknowledged span of the live project was lost while retention ran.
    assert acked and traces_present(settings, short.id, acked) == set(acked)

    again = json.loads(ok(llmobs(project_dir, "db", "maintain", "--json")).stdout)
    assert again["partitions_dropped"] == [] and all(isinstance(n, int) for n in again["rows_expired"].values())
    listed = {p["name"]: p for p in json.loads(ok(llmobs(project_dir, "projects", "list", "--json")).stdout)}
    assert datetime.fromisoformat(listed["short"]["oldest_span"]) >= now - timedelta(days=2)
    assert datetime.fromisoformat(listed["long"]["oldest_span"]) >= now - timedelta(days=8)
    table = ok(llmobs(project_dir, "projects", "show", "short")).stdout
    assert "2 d" in table and "4 d" in table and "oldest span" in table
    from llmobs.stack.facts import Facts, database_facts

    facts = Facts()
    database_facts(settings, facts)  # what `llmobs status` shows
    oldest = {p["name"]: p["oldest_span"] for p in facts.values["projects"]}
    assert oldest["short"] >= now - timedelta(days=2) and oldest["long"] < now - timedelta(days=7)
    default = ok(llmobs(project_dir, "projects", "set", "long", "--default", "--json")).stdout
    assert json.loads(default)["retention_days_source"] == "default"

    with api_client(settings) as c:
        auth = {"Authorization": f"Bearer {short.keys['admin']}"}
        got = c.get("/api/v1/project", headers=auth)
        assert got.status_code == 200 and got.json()["retention_days"] == 2 and got.json()["oldest_span"]
        assert c.get("/api/v1/project", headers={"Authorization": f"Bearer {short.keys['writer']}"}).status_code == 403
        changed = c.patch("/api/v1/project", headers=auth, json={"retention_days": 3})
        assert changed.status_code == 200 and changed.json()["rollup_retention_days"] == 4
        bad = c.patch("/api/v1/project", headers=auth, json={"retention_days": 10})
        assert bad.status_code == 422 and "shorter than span" in bad.json()["error"]["message"]
        assert c.patch("/api/v1/project", headers=auth, json={"retention": 3}).status_code == 422
        entries = c.get("/api/v1/audit?action=project.retention", headers=auth).json()["entries"]
        assert entries[0]["details"]["retention_days"] == [2, 3] and entries[0]["actor"].startswith("key:")


# Where the scores and log_records tables do not exist (a branch without them), stand-ins with the
# columns erasure relies on; where they exist, these statements change nothing.
STAND_INS = """
CREATE TABLE IF NOT EXISTS scores (project_id integer NOT NULL, trace_id text NOT NULL, name text NOT NULL,
                                   value double precision, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS log_records (project_id integer NOT NULL, time timestamptz NOT NULL, trace_id text,
                                        body jsonb, ingested_at timestamptz NOT NULL DEFAULT now());
GRANT SELECT, DELETE ON scores, log_records TO llmobs_app;
"""


def attach_scores_and_logs(settings: Settings, project_id: int, trace_ids: list[str]) -> None:
    """A score and a log record on each trace."""
    with connect(settings, "admin", autocommit=True) as conn:
        conn.execute(STAND_INS)
        for trace_id in trace_ids:
            conn.execute(
                "INSERT INTO scores (project_id, trace_id, name, value) VALUES (%s, %s, 'helpful', 1)",
                (project_id, trace_id),
            )
            conn.execute(
                "INSERT INTO log_records (project_id, time, trace_id, body) VALUES (%s, now(), %s, %s)",
                (project_id, trace_id, '"the user said something personal"'),
            )


def attached(settings: Settings, project_id: int) -> set[tuple[str, str]]:
    with connect(settings, "admin", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT 'scores', trace_id FROM scores WHERE project_id = %s "
            "UNION ALL SELECT 'log_records', trace_id FROM log_records WHERE project_id = %s",
            (project_id, project_id),
        ).fetchall()
    return {(r[0], r[1]) for r in rows}


class TimedIngest(Ingest):
    """:class:`Ingest` that also notes when each trace was acknowledged."""

    def __init__(self, settings: Settings, project_id: int, user: str) -> None:
        super().__init__(settings, project_id, user)
        self.acked_at: dict[str, float] = {}

    def run(self) -> None:
        import time

        try:
            while not self.stop.is_set():
                trace = llm_trace(datetime.now(UTC), user=self.user, session="live-session", calls=1)
                store_spans(self.settings, self.project_id, trace)
                self.acked_at[trace[0].trace_id] = time.monotonic()
                self.acked.append(trace[0].trace_id)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_erasure_of_a_user_while_the_users_spans_keep_arriving(settings: Settings, project_dir: Path):
    import time

    gdpr, other = make_project(settings, "gdpr"), make_project(settings, "other")
    now = datetime.now(UTC)
    alice = [llm_trace(now - timedelta(minutes=i), user="alice", session=f"s-{i % 2}") for i in range(20)]
    bob = [llm_trace(now - timedelta(minutes=i), user="bob", session="s-bob") for i in range(5)]
    for trace in alice + bob:
        store_spans(settings, gdpr.id, trace)
    store_spans(settings, other.id, llm_trace(now, user="alice"))  # another project's alice stays
    alice_ids = [t[0].trace_id for t in alice]
    attach_scores_and_logs(settings, gdpr.id, [alice_ids[0], bob[0][0].trace_id])

    dry = json.loads(
        ok(llmobs(project_dir, "erase", "--project", "gdpr", "--user", "alice", "--dry-run", "--json")).stdout
    )
    assert dry["dry_run"] and dry["traces"] == 20 and dry["rows"]["spans"] == sum(len(t) for t in alice)
    assert traces_present(settings, gdpr.id, alice_ids) == set(alice_ids)
    usage_error(llmobs(project_dir, "erase", "--project", "gdpr", "--user", "alice"), "--yes")
    usage_error(
        llmobs(project_dir, "erase", "--project", "gdpr", "--user", "a", "--trace", "ab" * 16, "--yes"), "exactly one"
    )
    usage_error(llmobs(project_dir, "erase", "--project", "gdpr", "--trace", "xyz", "--yes"), "32 lowercase hex")
    usage_error(llmobs(project_dir, "erase", "--project", "nosuch", "--user", "alice", "--yes"), "no project named")

    ingest = TimedIngest(settings, gdpr.id, "alice")
    ingest.start()
    while len(ingest.acked) < 3:
        time.sleep(0.05)
    erased_proc = ok(llmobs(project_dir, "erase", "--project", "gdpr", "--user", "alice", "--yes", "--json"))
    erased_at = time.monotonic()
    while not [t for t, at in ingest.acked_at.items() if at > erased_at + 0.2]:
        time.sleep(0.05)
    ingest.finish()
    erased = json.loads(erased_proc.stdout)
    assert erased["traces"] >= 20 and erased["rows"]["spans"] >= sum(len(t) for t in alice)
    assert "backups taken before now still hold this data" in erased_proc.stderr or erased["backups"]

    assert traces_present(settings, gdpr.id, alice_ids) == set()
    assert erased["rows"]["scores"] == 1 and erased["rows"]["log_records"] == 1
    assert attached(settings, gdpr.id) == {("scores", bob[0][0].trace_id), ("log_records", bob[0][0].trace_id)}
    after = [t for t, at in ingest.acked_at.items() if at > erased_at]
    assert after and traces_present(settings, gdpr.id, after) == set(after)  # acknowledged after: kept
    assert len(traces_present(settings, gdpr.id, [t[0].trace_id for t in bob])) == 5
    with connect(settings, "admin", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM spans WHERE project_id = %s", (other.id,)).fetchone()[0] > 0
        audit = conn.execute(
            "SELECT actor, target, details::text FROM audit_log WHERE action = 'erase' AND project_id = %s", (gdpr.id,)
        ).fetchall()
    assert len(audit) == 1 and audit[0][0].startswith("cli:") and audit[0][1].startswith("user:sha256:")
    assert "alice" not in audit[0][1] + audit[0][2] and '"spans"' in audit[0][2]

    # Idempotent: a session erased twice finds nothing the second time.
    first = json.loads(
        ok(llmobs(project_dir, "erase", "--project", "gdpr", "--session", "s-bob", "--yes", "--json")).stdout
    )
    again = json.loads(
        ok(llmobs(project_dir, "erase", "--project", "gdpr", "--session", "s-bob", "--yes", "--json")).stdout
    )
    assert first["traces"] == 5 and again["traces"] == 0 and again["rows"]["spans"] == 0
    assert first["rows"]["scores"] == 1 and attached(settings, gdpr.id) == set()

    # The API: admin keys only, scoped to the key's project.
    keep = llm_trace(now, user="carol")
    store_spans(settings, gdpr.id, keep)
    attach_scores_and_logs(settings, gdpr.id, [keep[0].trace_id])
    store_spans(settings, other.id, llm_trace(now, user="carol"))
    with api_client(settings) as c:
        admin = {"Authorization": f"Bearer {gdpr.keys['admin']}"}
        writer = {"Authorization": f"Bearer {gdpr.keys['writer']}"}
        assert c.delete("/api/v1/users/carol", headers=writer).status_code == 403
        counted = c.delete("/api/v1/users/carol?dry_run=true", headers=admin).json()
        assert counted["dry_run"] and counted["traces"] == 1
        gone = c.delete(f"/api/v1/traces/{keep[0].trace_id.upper()}", headers=admin).json()
        assert gone["traces"] == 1 and gone["rows"] == {"spans": len(keep), "log_records": 1, "scores": 1}
        assert c.delete(f"/api/v1/traces/{keep[0].trace_id}", headers=admin).json()["traces"] == 0
        assert c.get(f"/api/v1/traces/{keep[0].trace_id}", headers=admin).status_code == 404
        assert c.delete("/api/v1/sessions/live-session", headers=admin).json()["traces"] >= 1
        assert c.delete("/api/v1/traces/nothex", headers=admin).status_code == 422
    with connect(settings, "admin", autocommit=True) as conn:
        carol_elsewhere = conn.execute(
            "SELECT count(*) FROM spans WHERE project_id = %s AND user_id = 'carol'", (other.id,)
        ).fetchone()[0]
    assert carol_elsewhere > 0


@pytest.fixture
def second_settings(pg_server, redis_server, template_db: str):
    """Settings of a second, fresh stack's database (the target of a move)."""
    import secrets as pysecrets

    import psycopg

    from helpers.common import settings_env

    name = f"t2_{pysecrets.token_hex(6)}"
    admin = dict(host=pg_server.host, port=pg_server.port, user="postgres", password=pg_server.password)
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield Settings(settings_env(pg_server, redis_server, name), None)
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def dump(settings: Settings, project: str) -> list[tuple]:
    """Every column but project_id of the project's spans, in a stable order."""
    from llmobs.backup.export import span_columns

    with connect(settings, "admin", autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        cols = ", ".join(f"s.{c.name}" for c in span_columns(conn))
        return conn.execute(
            f"SELECT {cols} FROM spans s JOIN projects p ON p.id = s.project_id WHERE p.name = %s "
            "ORDER BY trace_id, span_id",
            (project,),
        ).fetchall()


def odd_spans(now: datetime) -> list:
    """Spans with what breaks naive encoders: control characters, unicode, nested JSON, events,
    links, an error status, big integers and floats."""
    from llmobs.collector.pipeline import RawSpan, span_link

    trace = llm_trace(now - timedelta(hours=2), user="ünïcödé\tuser", session="s\n1", calls=3)
    trace.append(
        RawSpan(
            trace_id=trace[0].trace_id,
            span_id="00ff" * 4,
            parent_span_id=trace[0].span_id,
            name='tool "search" \\ back',
            kind="internal",
            start_time=now - timedelta(hours=2, seconds=-1),
            end_time=now - timedelta(hours=2, seconds=-2),
            status_code="error",
            status_message="boom\r\nsecond line",
            attributes={"big": 2**53 + 1, "pi": 3.141592653589793, "flag": True, "nested": {"a": [1, "b", None]}},
            events=[{"name": "exception", "time": now - timedelta(hours=2), "attributes": {"msg": "tab\there"}}],
            resource={"service.name": "odd", "host": "é"},
            scope_name="scope/é",
            links=[
                span_link("ab" * 16, "cd" * 8, "vendor=é,x=1", {"link.kind": "follows", "n": 7}),
                span_link("12" * 16, "34" * 8, None, {}),
            ],
        )
    )
    return trace


def test_export_then_import_into_a_fresh_stack_gives_equal_rows(
    settings: Settings, second_settings: Settings, project_dir: Path, tmp_path: Path, monkeypatch
):
    from llmobs.backup import export as transfer
    from llmobs.store.projects import RetentionDefaults, get_project

    move = make_project(settings, "move")
    now = datetime.now(UTC)
    store_spans(settings, move.id, odd_spans(now))
    for i in range(40):
        store_spans(settings, move.id, llm_trace(now - timedelta(hours=i * 7), user=f"u{i % 3}", calls=1 + i % 3))
    source = dump(settings, "move")
    assert len(source) > 100
    with connect(settings, "admin", autocommit=True) as conn:
        columns = transfer.span_columns(conn)

    second_dir = tmp_path / "second"
    second_dir.mkdir()
    from helpers.common import settings_env  # noqa: F401 (the second stack's .env below)

    (second_dir / ".env").write_text(render_env_file(second_settings._raw))
    (second_dir / ".env").chmod(0o600)

    out = {fmt: tmp_path / f"move.{fmt}" for fmt in ("jsonl", "parquet", "otlp")}
    for fmt, path in out.items():
        proc = ok(llmobs(project_dir, "export", "--project", "move", "--format", fmt, "--output", str(path)))
        assert f"exported {len(source)} spans" in proc.stdout.replace(",", "") and "spans" in proc.stderr
    first_line = json.loads(out["jsonl"].read_text().splitlines()[0])
    assert {"trace_id", "span_id", "attributes", "start_time"} <= set(first_line) and "project_id" not in first_line
    assert isinstance(first_line["attributes"], dict)
    otlp_doc = json.loads(out["otlp"].read_text().splitlines()[0])
    assert otlp_doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"]

    imported = json.loads(ok(llmobs(second_dir, "import", str(out["jsonl"]), "--project", "move", "--json")).stdout)
    assert imported["project_created"] and imported["inserted"] == len(source)
    assert dump(second_settings, "move") == source
    again = json.loads(ok(llmobs(second_dir, "import", str(out["jsonl"]), "--project", "move", "--json")).stdout)
    assert again["inserted"] == 0 and again["skipped"] == len(source)  # idempotent on span ids
    ok(llmobs(second_dir, "import", str(out["parquet"]), "--project", "move-parquet"))
    assert dump(second_settings, "move-parquet") == source
    ok(llmobs(second_dir, "import", str(out["otlp"]), "--project", "move-otlp"))
    via_otlp = dump(second_settings, "move-otlp")
    # OTLP carries every column but the import time: export -> import -> export gives the same file.
    ingested_at = [c.name for c in columns].index("ingested_at")
    assert [r[:ingested_at] + r[ingested_at + 1 :] for r in via_otlp] == [
        r[:ingested_at] + r[ingested_at + 1 :] for r in source
    ]
    again = tmp_path / "again.otlp"
    ok(llmobs(second_dir, "export", "--project", "move-otlp", "--format", "otlp", "--output", str(again)))
    assert again.read_bytes() == out["otlp"].read_bytes()

    # Interrupted after two batches, the same export continues and writes the same file.
    monkeypatch.setattr(transfer, "BATCH_SPANS", 30)
    resumed = tmp_path / "resumed.jsonl"
    req = transfer.ExportRequest(
        "move", datetime(1970, 1, 1, tzinfo=UTC), now + timedelta(days=1), "jsonl", str(resumed)
    )
    calls = []

    def interrupt(done: int, total: int | None) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with connect(settings, "admin", autocommit=True) as conn:
        project_id = get_project(conn, "move", RetentionDefaults.from_settings(settings)).id
        with pytest.raises(KeyboardInterrupt):
            transfer.export_spans(conn, settings, project_id, req, staging_dir=tmp_path, progress=interrupt)
        assert transfer.Checkpoint.path_for(resumed).exists()
        result = transfer.export_spans(conn, settings, project_id, req, staging_dir=tmp_path, progress=lambda *_: None)
    assert result.resumed_from == 60 and result.spans == len(source)
    assert resumed.read_bytes() == out["jsonl"].read_bytes()
    assert not transfer.Checkpoint.path_for(resumed).exists()

    # Parquet, killed for real in the middle of the third batch's checkpoint, then the same command
    # again (open-ended: no --to): the file equals an uninterrupted export of the same batch size.
    import pyarrow.parquet as pq

    args = ("export", "--project", "move", "--format", "parquet", "--output")
    killed, whole = tmp_path / "killed.parquet", tmp_path / "whole.parquet"
    ok(killable_llmobs(project_dir, *args, str(whole), batch_spans=30))
    assert killable_llmobs(project_dir, *args, str(killed), batch_spans=30, kill_at_flush=3).returncode == -9
    assert transfer.Checkpoint.path_for(killed).exists() and not killed.exists()
    proc = ok(killable_llmobs(project_dir, *args, str(killed), batch_spans=30))
    assert "resumed after 60" in proc.stdout and f"exported {len(source)} spans" in proc.stdout.replace(",", "")
    assert pq.read_table(killed).to_pylist() == pq.read_table(out["parquet"]).to_pylist()  # row for row
    assert killed.read_bytes() == whole.read_bytes()
    assert sorted(p.name for p in tmp_path.glob("killed*")) == ["killed.parquet"]  # no stage or checkpoint left
    ok(llmobs(second_dir, "import", str(killed), "--project", "move-killed"))
    assert dump(second_settings, "move-killed") == source

    # Bad input: a clear message and exit code 2, nothing imported.
    bad = tmp_path / "bad.jsonl"
    lines = out["jsonl"].read_text().splitlines()
    bad.write_text(lines[0] + "\n{not json\n")
    usage_error(llmobs(second_dir, "import", str(bad), "--project", "bad"), "bad.jsonl line 2: not JSON")
    record = json.loads(lines[0])
    del record["name"]
    bad.write_text(json.dumps(record) + "\n")
    usage_error(llmobs(second_dir, "import", str(bad), "--project", "bad"), "line 1: missing field(s) name")
    record = {**json.loads(lines[0]), "start_time": "yesterday"}
    bad.write_text(json.dumps(record) + "\n")
    usage_error(llmobs(second_dir, "import", str(bad), "--project", "bad"), "start_time is not an ISO 8601 time")
    record = {**json.loads(lines[0]), "colour": "red"}
    bad.write_text(json.dumps(record) + "\n")
    usage_error(llmobs(second_dir, "import", str(bad), "--project", "bad"), "unknown field(s) colour")
    usage_error(llmobs(second_dir, "import", str(tmp_path / "none.jsonl"), "--project", "bad"), "does not exist")
    with connect(second_settings, "admin", autocommit=True) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM spans s JOIN projects p ON p.id = s.project_id WHERE p.name = 'bad'"
            ).fetchone()[0]
            == 0
        )
    export_args = ("export", "--project", "move", "--output")
    usage_error(llmobs(project_dir, *export_args, str(tmp_path / "x"), "--format", "xml"), "unknown format 'xml'")
    usage_error(llmobs(project_dir, *export_args, str(out["jsonl"])), "exists; remove it or pass --overwrite")
    usage_error(llmobs(project_dir, *export_args, str(tmp_path / "y"), "--from", "2025-01-01"), "no time zone")
    usage_error(
        llmobs(
            project_dir, *export_args, str(tmp_path / "y"), "--from", "2025-02-01T00:00Z", "--to", "2025-01-01T00:00Z"
        ),
        "--from must be before --to",
    )
    usage_error(llmobs(project_dir, *export_args, "s3://bucket-only"), "is not s3://BUCKET/KEY")
    usage_error(llmobs(project_dir, "export", "--project", "nosuch", "--output", str(tmp_path / "z")), "no project")
    assert llmobs(project_dir, "export", "--project", "move").returncode == 2  # --output is required


def test_parquet_export_killed_in_the_middle_of_a_batch_resumes_to_the_same_file(
    settings: Settings, project_dir: Path, tmp_path: Path
):
    """Killed while half of a batch was in the (compressed) stage, past its last checkpoint: the
    same command again cuts the stage back to the checkpoint and writes the file an uninterrupted
    export writes, byte for byte."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmobs.backup import export as transfer

    project = make_project(settings, "cut")
    now = datetime.now(UTC)
    for i in range(12):
        store_spans(settings, project.id, llm_trace(now - timedelta(hours=i), user=f"u{i % 2}", calls=3))
    args = ("export", "--project", "cut", "--format", "parquet", "--to", (now + timedelta(days=1)).isoformat())
    whole, cut = tmp_path / "whole.parquet", tmp_path / "cut.parquet"
    ok(killable_llmobs(project_dir, *args, "--output", str(whole), batch_spans=10))
    assert killable_llmobs(project_dir, *args, "--output", str(cut), batch_spans=10, kill_in_write=3).returncode == -9

    stage, checkpoint = tmp_path / "cut.parquet.stage", transfer.Checkpoint.path_for(cut)
    saved = json.loads(checkpoint.read_text())
    assert saved["spans"] == 20 and stage.stat().st_size > saved["offset"]  # half a batch past it
    staged: list = []
    with (
        pa.memory_map(str(stage)) as source,
        pa.ipc.open_stream(source) as reader,
        pytest.raises((OSError, pa.ArrowInvalid)),  # the stream ends inside the third batch
    ):
        staged.extend(reader)
    assert len(staged) == 2 and sum(b.serialize().size for b in staged) > saved["offset"]  # compressed

    proc = ok(killable_llmobs(project_dir, *args, "--output", str(cut), batch_spans=10))
    assert "resumed after 20" in proc.stdout
    assert cut.read_bytes() == whole.read_bytes()
    assert pq.read_table(cut).num_rows == 12 * 4
    assert sorted(p.name for p in tmp_path.glob("cut*")) == ["cut.parquet"]


def test_export_to_s3_and_import_from_it(
    settings: Settings, pg_server, redis_server, db_name, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """To a real S3-compatible server (moto), with the backup settings' endpoint and credentials."""
    from llmobs.backup.storage import S3Store

    from helpers.backup import moto_server
    from helpers.common import settings_env

    with moto_server() as endpoint:
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        S3Store("exports", endpoint_url=endpoint).client.create_bucket(Bucket="exports")
        env = settings_env(pg_server, redis_server, db_name, BACKUP_S3_ENDPOINT_URL=endpoint)
        (tmp_path / ".env").write_text(render_env_file(env))
        project = make_project(settings, "tos3")
        store_spans(settings, project.id, llm_trace(datetime.now(UTC), user="x", calls=3))
        target = "s3://exports/stacks/tos3.jsonl"
        ok(llmobs(tmp_path, "export", "--project", "tos3", "--format", "jsonl", "--output", target))
        assert not list((tmp_path / "exports").glob("*.part"))  # staged locally, uploaded, removed
        imported = json.loads(ok(llmobs(tmp_path, "import", target, "--project", "froms3", "--json")).stdout)
        assert imported["inserted"] == 4
        assert dump(settings, "froms3") == dump(settings, "tos3")
        missing = llmobs(tmp_path, "import", "s3://exports/nothing.jsonl", "--project", "froms3")
        assert missing.returncode in (1, 2) and "Traceback" not in missing.stderr and missing.stderr

        # Parquet to S3, killed after the second span was staged, resumes to the same rows.
        args = ("export", "--project", "tos3", "--format", "parquet", "--output", "s3://exports/tos3.parquet")
        assert killable_llmobs(tmp_path, *args, batch_spans=1, kill_at_flush=3).returncode == -9
        assert list((tmp_path / "exports").glob("*.checkpoint"))
        assert "resumed after 2" in ok(killable_llmobs(tmp_path, *args, batch_spans=1)).stdout
        assert not list((tmp_path / "exports").glob("*.part*"))
        ok(llmobs(tmp_path, "import", "s3://exports/tos3.parquet", "--project", "froms3parquet"))
        assert dump(settings, "froms3parquet") == dump(settings, "tos3")


def test_maintenance_newer_than_its_schema_keeps_the_global_retention(admin_conn, settings: Settings):
    """Before migration 0090 (an upgraded maintenance service, `db migrate` not yet run), retention
    falls back to RETENTION_DAYS by whole partitions instead of failing every pass."""
    admin_conn.execute("ALTER TABLE projects DROP COLUMN retention_days, DROP COLUMN rollup_retention_days")
    now = datetime.now(UTC)
    old_day = (now - timedelta(days=settings.get_int("RETENTION_DAYS") + 3)).date()
    admin_conn.execute("SELECT llmobs_ensure_span_partition(%s)", (old_day,))
    result = maintain(admin_conn, settings, now=now)
    assert f"spans_p{old_day:%Y%m%d}" in result.partitions_dropped and result.rollup_from is not None
