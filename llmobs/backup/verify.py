"""Verifying backups: sha256 of every file against the manifest, then what the type allows
(pg_verifybackup on an unpacked copy of a physical backup and WAL continuity from it to the
newest archived segment, pg_restore --list of a dump, a readable RDB or Grafana archive)."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmobs.backup.extract import extract_physical, verify_extracted
from llmobs.backup.grafana_backup import ARCHIVE, check_archive
from llmobs.backup.logical import DUMP_FILE, check_dump
from llmobs.backup.manifest import Manifest, sha256_file
from llmobs.backup.redis_backup import RDB_FILE
from llmobs.backup.repository import BackupEntry, DamagedBackup, Repository
from llmobs.backup.wal import chain_steps, follow_chain, parse_lsn, parse_segment, segment_name
from llmobs.errors import LlmobsError
from llmobs.proc import run
from llmobs.stack.postgres import PgBinaries


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class VerifyResult:
    backup_id: str
    backup_type: str
    location: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.backup_id,
            "type": self.backup_type,
            "location": self.location,
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def check_checksums(directory: Path, manifest: Manifest) -> Check:
    problems = []
    for f in manifest.files:
        path = directory / f.name
        if not path.is_file():
            problems.append(f"{f.name} is missing")
        elif path.stat().st_size != f.size:
            problems.append(f"{f.name} has {path.stat().st_size} bytes, the manifest says {f.size}")
        elif sha256_file(path) != f.sha256:
            problems.append(f"{f.name} does not match its sha256")
    detail = "; ".join(problems) or f"{len(manifest.files)} file(s) match"
    return Check("checksums", not problems, detail)


def backup_own_segments(manifest: Manifest) -> list[str]:
    """The WAL segments a physical backup carries in its pg_wal archive."""
    assert manifest.start_lsn and manifest.end_lsn and manifest.timeline and manifest.wal_segment_size
    size = manifest.wal_segment_size
    first, last = parse_lsn(manifest.start_lsn) // size, parse_lsn(manifest.end_lsn) // size
    return [segment_name(manifest.end_timeline or manifest.timeline, s, size) for s in range(first, last + 1)]


def check_wal_chain(
    manifest: Manifest, wal_files: dict[str, list[str]], histories: dict[int, list[tuple[int, int]]], timeline: int
) -> tuple[Check, list[str]]:
    """Continuity of the WAL from the backup to the newest archived segment, and the segments of
    that chain (none when it has a gap or does not apply)."""
    assert manifest.start_lsn and manifest.timeline and manifest.wal_segment_size
    steps = chain_steps(
        manifest.timeline,
        parse_lsn(manifest.start_lsn),
        timeline,
        histories.get(timeline, []),
        manifest.wal_segment_size,
    )
    if steps is None:
        return Check(
            "wal continuity",
            True,
            f"not in the history of the current timeline {timeline} "
            "(taken on a branch left by a restore): restorable by id only",
        ), []
    chain = follow_chain(steps, set(wal_files), manifest.wal_segment_size, provided=backup_own_segments(manifest))
    if chain.gap:
        return Check(
            "wal continuity",
            False,
            f"segment {chain.gap} is missing from the archive: recovery from this backup stops at {chain.last_segment}",
        ), []
    return Check(
        "wal continuity",
        True,
        f"{len(chain.segments)} segment(s) from {chain.segments[0]} to {chain.last_segment} without a gap",
    ), chain.segments


def damaged_result(damaged: DamagedBackup) -> VerifyResult:
    """The verdict on a backup whose manifest is missing or unreadable: failed, saying why."""
    return VerifyResult(damaged.id, damaged.type, damaged.location, [Check("manifest", False, damaged.problem)])


_LSN_IN_ERROR = re.compile(r" at ([0-9A-F]+/[0-9A-F]+)")
_SEGMENT_IN_ERROR = re.compile(r"\b([0-9A-F]{24})\b")


def check_wal_content(segments: list[str], archive: Path, binaries: PgBinaries, segment_size: int) -> Check:
    """Read every record of the archived segments a chain vouches for with pg_waldump (each record's
    CRC, each page header), one run per timeline: a damaged segment fails, by name. Segments not in
    the local archive (only in S3, or carried by the backup itself) are not read here."""
    runs: list[list[str]] = []  # contiguous local segments of one timeline
    previous_local = False
    for name in segments:
        local = (archive / name).is_file()
        if local and previous_local and runs[-1][-1][:8] == name[:8]:
            runs[-1].append(name)
        elif local:
            runs.append([name])
        previous_local = local
    local_count = sum(len(names) for names in runs)
    for names in runs:
        problem = _waldump_problem(names[0], names[-1], archive, binaries, segment_size)
        if problem:
            return Check("wal content", False, problem)
    return Check("wal content", True, f"{local_count} archived segment(s) read, every record's checksum matches")


def _waldump_problem(first: str, last: str, archive: Path, binaries: PgBinaries, segment_size: int) -> str | None:
    """None when pg_waldump reads ``first``..``last`` to the end (a record running on into the
    segment after ``last``, not archived yet, is the end of the archive, not damage)."""
    proc = run([binaries("pg_waldump"), "--quiet", "--path", archive, first, last], check=False)
    output = proc.stdout.decode(errors="replace").strip()
    if proc.returncode == 0:
        return None
    parsed = parse_segment(last, segment_size)
    assert parsed is not None
    following = segment_name(parsed[0], parsed[1] + 1, segment_size)
    if following in output and "could not find file" in output:
        return None
    message = output.splitlines()[-1].removeprefix("pg_waldump: error: ") if output else f"exit {proc.returncode}"
    named = _SEGMENT_IN_ERROR.search(message)
    # "error in WAL record at A: incorrect ... checksum in record at B": B is the damaged record
    lsns = _LSN_IN_ERROR.findall(message)
    if named:
        damaged: str | None = named[1]
    elif lsns:
        damaged = segment_name(parsed[0], parse_lsn(lsns[-1]) // segment_size, segment_size)
    else:
        damaged = None
    return f"segment {damaged} is damaged: {message}" if damaged else f"the archived WAL is unreadable: {message}"


def verify_backup(
    repo: Repository,
    entry: BackupEntry,
    binaries: PgBinaries | None,
    *,
    wal_files: dict[str, list[str]] | None = None,
    timeline: int | None = None,
) -> VerifyResult:
    """Verify one backup (its local copy, else a download of the S3 copy) and record the result
    in its manifest wherever it is stored."""
    m = entry.manifest
    location = "local" if "local" in entry.locations else entry.locations[0]
    result = VerifyResult(m.id, m.type, location)
    directory = repo.fetch(entry)
    try:
        result.checks.append(check_checksums(directory, m))
        if result.ok:
            _type_checks(repo, m, directory, binaries, result, wal_files, timeline)
    except LlmobsError as exc:
        result.checks.append(Check(f"{m.type} check", False, exc.message))
    finally:
        if location != "local":
            shutil.rmtree(directory, ignore_errors=True)
    m.verification = {
        "at": datetime.now(UTC).isoformat(),
        "ok": result.ok,
        "location": location,
        "problems": [f"{c.name}: {c.detail}" for c in result.checks if not c.ok],
    }
    repo.save_manifest(m, entry.locations)
    return result


def _type_checks(
    repo: Repository,
    m: Manifest,
    directory: Path,
    binaries: PgBinaries | None,
    result: VerifyResult,
    wal_files: dict[str, list[str]] | None,
    timeline: int | None,
) -> None:
    if m.type == "physical":
        assert binaries is not None
        scratch = repo.paths.work_dir / f"verify-{m.id}"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            extract_physical(directory, m, scratch)
            verify_extracted(directory, scratch, binaries)
            result.checks.append(Check("pg_verifybackup", True, "files and WAL match the server's backup_manifest"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if wal_files is not None and timeline is not None:
            continuity, segments = check_wal_chain(m, wal_files, repo.histories(wal_files), timeline)
            result.checks.append(continuity)
            if segments:
                assert m.wal_segment_size
                result.checks.append(check_wal_content(segments, repo.paths.wal_archive, binaries, m.wal_segment_size))
    elif m.type == "logical":
        assert binaries is not None
        entries = check_dump(directory / DUMP_FILE, binaries)
        result.checks.append(Check("pg_restore --list", True, f"{entries} entries in the table of contents"))
    elif m.type == "redis":
        with (directory / RDB_FILE).open("rb") as fh:
            magic = fh.read(9)
        ok = magic.startswith(b"REDIS")
        result.checks.append(Check("rdb header", ok, magic.decode(errors="replace") if ok else "not an RDB file"))
    elif m.type == "grafana":
        result.checks.append(Check("archive", True, f"{check_archive(directory / ARCHIVE)} entries"))
