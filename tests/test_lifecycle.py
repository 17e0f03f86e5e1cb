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
from api_support import api_client, llm_trace, make_project, store_spans

from llmobs.config import Settings, render_env_file
from llmobs.store.db import connect
from llmobs.store.maintain import maintain, span_partitions

# Bulk spans of one project: one every 10 minutes over the last 12 days, relative to %(now)s.
BULK_SQL = """INSERT INTO spans (project_id, trace_id, span_id, name, start_time, end_time, duration_ms,
                                 service_name, user_id)
              SELECT %(project)s, md5(%(project)s::text || '-' || g),
                     substr(md5('s' || %(project)s || '-' || g), 1, 16), 'chat', ts, ts, 1.0, 'bulk', 'bulk-user'
              FROM generate_series(1, 12 * 144) g,
                   LATERAL (SELECT %(now)s::timestamptz - g * interval '10 minutes' AS ts) t"""


@pytest.fixture
def project_dir(settings: Settings, pg_server, redis_server, db_name, tmp_path: Path) -> Path:
    from conftest import settings_env

    env = settings_env(pg_server, redis_server, db_name, RETENTION_BATCH_ROWS="100")
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
    settings = Settings({**settings._raw, "RETENTION_BATCH_ROWS": "100"}, None)
    now = datetime.now(UTC)
    short, long_ = make_project(settings, "short"), make_project(settings, "long")
    with connect(settings, "admin", autocommit=True) as conn:
        for days_back in range(14):
            conn.execute("SELECT llmobs_ensure_span_partition(%s)", ((now - timedelta(days=days_back)).date(),))
        default_id = conn.execute("SELECT id FROM projects WHERE name = 'default'").fetchone()[0]
        for project_id in (default_id, short.id, long_.id):
            conn.execute(BULK_SQL, {"project": project_id, "now": now})
        maintain(conn, settings, now=now)  # rollups of all 12 days, nothing expired yet (30 d)

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

    # Whole partitions went where every project's rows had expired (older than 8 days), no others.
    cut = now - timedelta(days=8)
    dropped = {f"spans_p{(now - timedelta(days=d)).date():%Y%m%d}" for d in range(14)} & set(result.partitions_dropped)
    assert dropped and all(datetime.strptime(n[7:], "%Y%m%d").date() + timedelta(days=1) <= cut.date() for n in dropped)
    with connect(settings, "admin", autocommit=True) as conn:
        remaining = {d for _, d in span_partitions(conn)}
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

    listed = {p["name"]: p for p in json.loads(ok(llmobs(project_dir, "projects", "list", "--json")).stdout)}
    assert datetime.fromisoformat(listed["short"]["oldest_span"]) >= now - timedelta(days=2)
    assert datetime.fromisoformat(listed["long"]["oldest_span"]) >= now - timedelta(days=8)
    table = ok(llmobs(project_dir, "projects", "show", "short")).stdout
    assert "2 d" in table and "4 d" in table and "oldest span" in table
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

    # The API: admin keys only, scoped to the key's project.
    keep = llm_trace(now, user="carol")
    store_spans(settings, gdpr.id, keep)
    store_spans(settings, other.id, llm_trace(now, user="carol"))
    with api_client(settings) as c:
        admin = {"Authorization": f"Bearer {gdpr.keys['admin']}"}
        writer = {"Authorization": f"Bearer {gdpr.keys['writer']}"}
        assert c.delete("/api/v1/users/carol", headers=writer).status_code == 403
        counted = c.delete("/api/v1/users/carol?dry_run=true", headers=admin).json()
        assert counted["dry_run"] and counted["traces"] == 1
        gone = c.delete(f"/api/v1/traces/{keep[0].trace_id.upper()}", headers=admin).json()
        assert gone["traces"] == 1 and gone["rows"]["spans"] == len(keep)
        assert c.delete(f"/api/v1/traces/{keep[0].trace_id}", headers=admin).json()["traces"] == 0
        assert c.get(f"/api/v1/traces/{keep[0].trace_id}", headers=admin).status_code == 404
        assert c.delete("/api/v1/sessions/live-session", headers=admin).json()["traces"] >= 1
        assert c.delete("/api/v1/traces/nothex", headers=admin).status_code == 422
    with connect(settings, "admin", autocommit=True) as conn:
        carol_elsewhere = conn.execute(
            "SELECT count(*) FROM spans WHERE project_id = %s AND user_id = 'carol'", (other.id,)
        ).fetchone()[0]
    assert carol_elsewhere > 0
