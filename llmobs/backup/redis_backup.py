"""Redis backups: an RDB snapshot fetched over the network, and its restore into a data directory.

The snapshot is taken the way a replica gets one (``SYNC``), so it needs only the ACL user's
password and a connection, not access to Redis's files: the same code works on the host and in
a container. A restore installs the RDB as the base of a fresh append-only file as well, so
Redis loads it whether or not `appendonly` is on.
"""

from __future__ import annotations

import os
import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.backup.kept_aside import replacing
from llmobs.backup.manifest import Manifest, describe_files
from llmobs.errors import LlmobsError

if TYPE_CHECKING:
    from llmobs.config import Settings
    from llmobs.progress import Progress

RDB_FILE = "dump.rdb"
AOF_DIR = "appendonlydir"
AOF_BASE = "appendonly.aof.1.base.rdb"
AOF_MANIFEST = "appendonly.aof.manifest"
_CHUNK = 1 << 16


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        data = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def fetch_rdb(host: str, port: int, user: str, password: str, dest: Path, *, timeout: float = 600) -> int:
    """Write a point-in-time RDB snapshot of the server to ``dest``; returns its size."""
    try:
        sock = socket.create_connection((host, port), timeout=30)
    except OSError as exc:
        raise LlmobsError(
            f"cannot connect to Redis at {host}:{port}: {exc.strerror or exc}",
            hint="is the stack up? (`llmobs status`)",
        ) from None
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        sock.settimeout(timeout)
        reader = sock.makefile("rb")
        sock.sendall(_command("AUTH", user, password))
        answer = reader.readline()
        if not answer.startswith(b"+OK"):
            raise LlmobsError(f"Redis refused the login of {user!r}: {answer.decode(errors='replace').strip()}")
        sock.sendall(_command("SYNC"))
        header = reader.readline()
        while header in (b"\n", b"\r\n"):  # keep-alives while the server prepares the snapshot
            header = reader.readline()
        if not header.startswith(b"$"):
            raise LlmobsError(f"Redis did not send a snapshot: {header.decode(errors='replace').strip()}")
        with tmp.open("wb") as out:
            if header.startswith(b"$EOF:"):
                size = _copy_until_mark(reader, out, header[5:].rstrip(b"\r\n"))
            else:
                size = int(header[1:])
                _copy_exactly(reader, out, size)
            out.flush()
            os.fsync(out.fileno())
        with tmp.open("rb") as fh:
            if fh.read(5) != b"REDIS":
                raise LlmobsError("the snapshot Redis sent is not an RDB file")
        os.replace(tmp, dest)
        return size
    except OSError as exc:
        raise LlmobsError(f"reading the snapshot from Redis failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
        sock.close()


def _copy_exactly(reader, out, size: int) -> None:  # type: ignore[no-untyped-def]
    remaining = size
    while remaining:
        chunk = reader.read(min(_CHUNK, remaining))
        if not chunk:
            raise LlmobsError("Redis closed the connection in the middle of the snapshot")
        out.write(chunk)
        remaining -= len(chunk)


def _copy_until_mark(reader, out, mark: bytes) -> int:  # type: ignore[no-untyped-def]
    """Diskless transfer: the payload ends with the 40-byte mark announced in the header."""
    held = b""
    size = 0
    while True:
        chunk = reader.read1(_CHUNK)
        if not chunk:
            raise LlmobsError("Redis closed the connection in the middle of the snapshot")
        held += chunk
        end = held.find(mark)
        if end >= 0:
            out.write(held[:end])
            return size + end
        keep = len(mark)
        out.write(held[:-keep])
        size += len(held) - keep
        held = held[-keep:]


def create_redis(settings: Settings, work: Path, backup_id: str, progress: Progress) -> Manifest:
    progress.step("Fetching an RDB snapshot from Redis")
    started = datetime.now(UTC)
    fetch_rdb(
        settings.redis_host,
        settings.get_int("REDIS_PORT"),
        settings.get_str("REDIS_USER"),
        settings.secret("REDIS_PASSWORD"),
        work / RDB_FILE,
    )
    return Manifest(
        id=backup_id, type="redis", started_at=started, finished_at=datetime.now(UTC), files=describe_files(work)
    )


def install_rdb(rdb: Path, data_dir: Path, kept_aside: Path) -> None:
    """Put the snapshot in place of Redis's data (Redis must be stopped). What was there moves to
    ``kept_aside`` (and back if this fails). Files get the owner of the data directory."""
    data_dir.mkdir(parents=True, exist_ok=True)
    owner = data_dir.stat()
    with replacing(data_dir, kept_aside, (RDB_FILE, AOF_DIR)):
        shutil.copyfile(rdb, data_dir / RDB_FILE)
        aof = data_dir / AOF_DIR
        aof.mkdir()
        shutil.copyfile(rdb, aof / AOF_BASE)
        (aof / AOF_MANIFEST).write_text(f"file {AOF_BASE} seq 1 type b\n")
        for path in (data_dir / RDB_FILE, aof, aof / AOF_BASE, aof / AOF_MANIFEST):
            os.chown(path, owner.st_uid, owner.st_gid)
