"""Unpacking a physical backup into a data directory, and handing it to PostgreSQL's OS user."""

from __future__ import annotations

import os
from pathlib import Path

from llmobs.backup.manifest import Manifest
from llmobs.backup.physical import SERVER_MANIFEST, archive_names
from llmobs.proc import run
from llmobs.stack.postgres import PgBinaries


def extract_physical(source: Path, manifest: Manifest, dest: Path) -> None:
    """Unpack base and WAL archives into ``dest`` (created empty, mode 0700)."""
    base, wal = archive_names(manifest.compression)
    dest.mkdir(mode=0o700, parents=False)
    gz = ["-z"] if base.endswith(".gz") else []
    run(["tar", "--no-same-owner", *gz, "-x", "-f", source / base, "-C", dest])
    (dest / "pg_wal").mkdir(mode=0o700, exist_ok=True)
    run(["tar", "--no-same-owner", *gz, "-x", "-f", source / wal, "-C", dest / "pg_wal"])


def verify_extracted(source: Path, dest: Path, binaries: PgBinaries) -> None:
    """pg_verifybackup: every file against the server's backup_manifest, and the WAL it needs."""
    run(
        [binaries("pg_verifybackup"), "--manifest-path", source / SERVER_MANIFEST, dest],
        env={"PATH": f"{binaries.bin_dir}:/usr/bin:/bin", "TZ": "UTC"},
        hint="the backup is damaged; choose another one",
    )


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
