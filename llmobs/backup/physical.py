"""Physical backups: pg_basebackup in tar format with the WAL that makes it consistent, and the
server's own backup_manifest (which pg_verifybackup checks)."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.backup.manifest import MANIFEST_NAME, FileEntry, Manifest, describe_files
from llmobs.backup.pgclient import admin_connection, binaries_for, client_env, server_facts
from llmobs.backup.wal import switch_and_wait
from llmobs.errors import LlmobsError
from llmobs.proc import run

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings
    from llmobs.progress import Progress

BASE_TAR = "base.tar"
WAL_TAR = "pg_wal.tar"
SERVER_MANIFEST = "backup_manifest"


def archive_names(compression: str) -> tuple[str, str]:
    suffix = ".gz" if compression.startswith("gzip") else ""
    return BASE_TAR + suffix, WAL_TAR + suffix


def create_physical(
    settings: Settings, work: Path, backup_id: str, progress: Progress, *, from_replica: bool = False
) -> Manifest:
    """Take a base backup into ``work`` (an empty directory) and return its manifest.

    ``from_replica`` (profile `ha`): pg_basebackup reads from a replica through the read port
    (``DB_READ_PORT``), as PostgreSQL allows on a standby; the leader, reached through
    ``DB_PORT``, still closes the WAL segment afterwards so its archiver holds the backup's WAL.
    LlmobsError when the read port reaches no replica."""
    level = settings.get_int("BACKUP_COMPRESSION_LEVEL")
    compression = f"gzip:{level}" if level else "none"
    with admin_connection(settings) as conn:
        facts = server_facts(conn)
        binaries = binaries_for(settings, facts.major)
        port = _replica_after_a_fresh_checkpoint(conn, settings) if from_replica else None
        started = datetime.now(UTC)
        progress.step(f"pg_basebackup of PostgreSQL {facts.version}" + (" from a replica" if port else ""))
        with client_env(settings, dbname="postgres", port=port) as env:
            run(
                [
                    binaries("pg_basebackup"),
                    "-D",
                    work,
                    "--format=tar",
                    "--wal-method=stream",
                    "--checkpoint=fast",
                    f"--label=llmobs {backup_id}",
                    "--no-password",
                    *([f"--compress=client-gzip:{level}"] if level else []),
                ],
                env=env,
                hint="the server must accept replication connections from this host",
            )
        finished = datetime.now(UTC)
        ranges = json.loads((work / SERVER_MANIFEST).read_text())["WAL-Ranges"]
        described = describe_while_switching(conn, work, progress)
    if not ranges:
        raise LlmobsError("pg_basebackup wrote a backup_manifest without a WAL range")
    return Manifest(
        id=backup_id,
        type="physical",
        started_at=started,
        finished_at=finished,
        files=described,
        pg_version=facts.version,
        pg_major=facts.major,
        schema_version=facts.schema_version,
        system_identifier=facts.system_identifier,
        timeline=ranges[0]["Timeline"],
        start_lsn=ranges[0]["Start-LSN"],
        end_lsn=ranges[-1]["End-LSN"],
        end_timeline=ranges[-1]["Timeline"],
        wal_segment_size=facts.wal_segment_size,
        compression=compression,
        database=settings.get_str("DB_NAME"),
    )


#: how long a backup from a replica waits for it to replay the leader's fresh checkpoint
REPLAY_WAIT_S = 60


def _replica_after_a_fresh_checkpoint(leader: psycopg.Connection, settings: Settings) -> int:
    """DB_READ_PORT, once a connection through it reaches a server in recovery (a replica) and
    that replica has replayed a checkpoint the leader has just taken.

    A backup from a standby starts at the standby's restartpoint, which can only be a checkpoint
    it replayed. Without a fresh one that may be minutes old, and after a switchover or failover
    it lies on the previous timeline, in the segment the timeline switch split: that segment
    never reaches the archive whole under the old timeline's name, so the backup's WAL check
    would fail. LlmobsError when the read port reaches no replica, or the replica does not get
    there within REPLAY_WAIT_S."""
    import psycopg

    from llmobs.store.db import connect_kwargs, first_line

    kwargs = connect_kwargs(settings, "admin", dbname="postgres", connect_timeout=10)
    kwargs["port"] = port = settings.get_int("DB_READ_PORT")
    hint = (
        "the read port routes to replicas of the `ha` profile (`llmobs status`); "
        "BACKUP_FROM=leader reads from the leader"
    )
    try:
        replica = psycopg.connect(autocommit=True, **kwargs)
    except psycopg.OperationalError as exc:
        raise LlmobsError(
            f"a backup from a replica needs a replica behind {kwargs['host']}:{port}: {first_line(exc)}", hint=hint
        ) from None
    with replica:
        row = replica.execute("SELECT pg_is_in_recovery()").fetchone()
        if not row or not row[0]:
            raise LlmobsError(f"{kwargs['host']}:{port} reaches the leader, not a replica", hint=hint)
        leader.execute("CHECKPOINT")
        lsn = leader.execute("SELECT pg_current_wal_lsn()").fetchone()
        assert lsn is not None
        target = lsn[0]
        deadline = time.monotonic() + REPLAY_WAIT_S
        while True:
            done = replica.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
            if done and done[0]:
                return port
            if time.monotonic() > deadline:
                raise LlmobsError(
                    f"the replica did not replay the leader's checkpoint ({target}) within {REPLAY_WAIT_S} s",
                    hint="see `llmobs status` (replication lag); BACKUP_FROM=leader reads from the leader",
                )
            time.sleep(0.2)


def describe_while_switching(conn: psycopg.Connection, work: Path, progress: Progress) -> list[FileEntry]:
    """Close the WAL segment and wait for the archiver (so the archive holds everything up to the
    backup) while hashing the backup's files."""
    progress.step("Switching to a new WAL segment and waiting for the archiver")
    with ThreadPoolExecutor(1) as pool:
        files = pool.submit(describe_files, work)
        if not switch_and_wait(conn):
            progress.warn(
                "the WAL archive does not hold the WAL up to this backup yet: point-in-time "
                "recovery needs archiving to work (see `llmobs status`)"
            )
        return files.result()


def finish_backup_dir(work: Path, final: Path, manifest: Manifest) -> None:
    """Write the manifest into the finished directory, then give it its final name (atomic)."""
    (work / MANIFEST_NAME).write_text(manifest.to_json())
    os.rename(work, final)
