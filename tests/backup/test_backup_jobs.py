"""What the compose runtime's backup and restore jobs rely on, without Docker: the request
channel between a job and the llmobs that started it (over real pipes to a real process), the
client tools of the server's major version, and the lock a restore job can only read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmobs.backup.control import serve
from llmobs.backup.lock import backup_lock
from llmobs.backup.pgclient import binaries_for
from llmobs.config import Settings
from llmobs.errors import AlreadyRunning, LlmobsError

from helpers.common import make_workdir

JOB = textwrap.dedent("""
    import sys
    from llmobs.backup.control import HostChannel
    from llmobs.errors import LlmobsError

    host = HostChannel()
    print("before the request")
    print("states:", host.request("states"))
    try:
        host.request("stop", services=["nope"])
    except LlmobsError as exc:
        print("refused:", exc.message)
    print("after", flush=True)
    if sys.argv[1] == "wait-for-eof":
        try:
            host.request("states")
        except LlmobsError as exc:
            print("gone:", exc.message, file=sys.stderr)
            sys.exit(7)
""")


def _job(mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", JOB, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_a_job_asks_the_host_and_its_own_output_passes_through(tmp_path: Path) -> None:
    asked = []

    def handle(op: str, args: dict) -> object:
        asked.append((op, args))
        if op == "stop":
            raise LlmobsError("no such service")
        return {"timescaledb": "running"}

    out = (tmp_path / "out").open("w+b")
    proc = _job("plain")
    assert serve(proc, handle, out=out) == 0
    out.seek(0)
    assert out.read().decode().splitlines() == [
        "before the request",
        "states: {'timescaledb': 'running'}",
        "refused: stop failed on the host: no such service",
        "after",
    ]
    assert asked == [("states", {}), ("stop", {"services": ["nope"]})]


def test_a_job_whose_host_went_away_fails_its_next_request() -> None:
    proc = _job("wait-for-eof")
    assert proc.stdin is not None and proc.stdout is not None
    # Answer the first two requests, then go away (stdin ends) as a killed llmobs would.
    for answer in (b'{"ok": true, "result": {}}\n', b'{"ok": true, "result": null}\n'):
        while not proc.stdout.readline().startswith(b"@@llmobs-control@@"):
            pass
        proc.stdin.write(answer)
        proc.stdin.flush()
    proc.stdin.close()
    assert proc.wait(timeout=30) == 7
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert b"went away" in err


def test_client_tools_must_be_of_the_servers_major_version() -> None:
    settings = Settings({}, None)
    try:
        found = binaries_for(settings, None)
    except LlmobsError:
        pytest.skip("no PostgreSQL client tools here")
    assert (found.bin_dir / "pg_dump").is_file()
    assert binaries_for(settings, found.major) == found
    with pytest.raises(LlmobsError) as refused:
        binaries_for(settings, found.major + 50)
    assert f"PostgreSQL {found.major + 50}" in refused.value.message
    assert f"PostgreSQL {found.major}" in refused.value.message


def _as_nobody(locked: Path) -> int:
    """Try the lock as another user (a forked child that drops to uid 65534, as root; this
    process, when it is not root and the file is not writable for it): 0 locked, 3 refused."""

    def attempt() -> int:
        try:
            with backup_lock(locked, "restore"):
                return 0
        except AlreadyRunning:
            return 3

    if os.geteuid() != 0:
        return attempt()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            os.setgid(65534)
            os.setuid(65534)
            code = attempt()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_lock_file_this_user_may_only_read_still_locks() -> None:
    """A restore job (PostgreSQL's uid) opens read-only the lock a backup job (uid 1001) created."""
    root = make_workdir("llmobs-lock-")
    try:
        lock = root / ".lock"
        lock.write_text("")
        lock.chmod(0o644 if os.geteuid() == 0 else 0o444)
        with backup_lock(lock, "backup physical"):
            assert _as_nobody(lock) == 3
        assert _as_nobody(lock) == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)
