"""Running external commands and checking processes, with every command logged.

Commands never carry secrets in their arguments (they would show in ``ps``): secrets travel in
files of mode 0600 or in the environment of the child.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmobs.errors import CommandError, LlmobsError

log = logging.getLogger("llmobs.proc")


@dataclass(frozen=True)
class OsUser:
    """An unprivileged OS user to run a command as (PostgreSQL refuses to run as root)."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def lookup(cls, name: str) -> OsUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise LlmobsError(
                f"OS user {name!r} does not exist", hint="create it (`useradd --system postgres`) or set PG_OS_USER"
            ) from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def chown(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    user: OsUser | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
    hint: str | None = None,
    stdout_path: Path | None = None,
    umask: int = -1,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion, logging it; raise CommandError when it fails and ``check``.

    ``user`` runs it as that OS user (we must be root). ``stdout_path`` sends stdout to a file
    instead of capturing it (large outputs such as dumps). ``umask`` (when not -1) is the
    command's umask: 0o077 makes every file it creates private to its owner.
    """
    args = [os.fspath(a) for a in argv]
    child_env = dict(os.environ if env is None else env)
    kwargs: dict = {"umask": umask}
    if user is not None:
        kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
        child_env["HOME"] = user.home
        child_env.pop("PGPASSFILE", None)
    log.info("run%s: %s", f" as {user.name}" if user else "", shlex.join(args))
    started = time.monotonic()
    try:
        if stdout_path is not None:
            with open(stdout_path, "wb") as out:
                proc = subprocess.run(
                    args,
                    env=child_env,
                    cwd=cwd,
                    input=input,
                    timeout=timeout,
                    stdout=out,
                    stderr=subprocess.PIPE,
                    **kwargs,
                )
        else:
            proc = subprocess.run(
                args,
                env=child_env,
                cwd=cwd,
                input=input,
                timeout=timeout,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                **kwargs,
            )
    except FileNotFoundError:
        raise LlmobsError(f"{args[0]} not found", hint=hint or "run `llmobs doctor`") from None
    except subprocess.TimeoutExpired as exc:
        raise LlmobsError(f"{Path(args[0]).name} did not finish within {timeout:g} s", hint=hint) from exc
    output = (proc.stdout or b"") if stdout_path is None else (proc.stderr or b"")
    log.info("exit %d after %.2fs: %s", proc.returncode, time.monotonic() - started, Path(args[0]).name)
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, output.decode(errors="replace"), hint=hint)
    return proc


# ---------------------------------------------------------------------------------------------
# pid files


@dataclass(frozen=True)
class PidRecord:
    """What we wrote when we started a process: enough to recognise it later.

    A pid alone can be reused by an unrelated process after a crash; the process start time and
    a marker expected in its command line make the check safe before we signal it.
    """

    pid: int
    create_time: float
    marker: str

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "create_time": self.create_time, "marker": self.marker})


def write_pid_record(path: Path, pid: int, marker: str) -> PidRecord:
    import psutil

    record = PidRecord(pid, psutil.Process(pid).create_time(), marker)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(record.to_json())
    os.replace(tmp, path)
    return record


def read_pid_record(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text())
        return PidRecord(int(data["pid"]), float(data["create_time"]), str(data["marker"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def live_pid(record: PidRecord | None) -> int | None:
    """The pid if that very process (same start time, marker in its command line) is alive."""
    if record is None:
        return None
    return pid_if_running(record.pid, record.marker, create_time=record.create_time)


def pid_if_running(pid: int, marker: str, *, create_time: float | None = None) -> int | None:
    """``pid`` if it is alive, not a zombie, has ``marker`` in its command line and, when given,
    started at ``create_time``."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE or marker not in " ".join(proc.cmdline()):
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return pid


def identified_pid(
    pid: int,
    *,
    started_at: float | None,
    exe: Path | None = None,
    cwd: Path | None = None,
    start_tolerance: float = 3.0,
) -> int | None:
    """``pid`` when that process is the server a pid file describes, else None.

    A pid file outlives a crashed server, and its pid may then name any process: as Patroni does
    before it signals a postmaster, trust it only when the process is alive (not a zombie),
    started within ``start_tolerance`` seconds of ``started_at`` (the start time the server wrote,
    or its pid file's mtime), runs the executable ``exe`` and works in ``cwd`` (PostgreSQL and
    Redis change into their data directory), and is neither us, our parent nor our child. A
    process we may not inspect is not trusted."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or pid in (os.getpid(), os.getppid()) or proc.ppid() == os.getpid():
            return None
        if started_at is None or abs(proc.create_time() - started_at) > start_tolerance:
            log.info("pid %d is not the server of its pid file: it started at another time", pid)
            return None
        if exe is not None and not _same_file(proc.exe().removesuffix(" (deleted)"), exe):
            log.info("pid %d is not the server of its pid file: it runs %s, not %s", pid, proc.exe(), exe)
            return None
        if cwd is not None and not _same_file(proc.cwd(), cwd):
            log.info("pid %d is not the server of its pid file: it works in %s, not %s", pid, proc.cwd(), cwd)
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return None
    return pid


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


#: How often wait_for_exit looks whether the process became a zombie (psutil's own wait polls a
#: process that is not our child every 40 ms at most, but sees a zombie as alive).
_EXIT_POLL_S = 0.05


def wait_for_exit(pid: int, timeout: float) -> bool:
    """True once process ``pid`` has exited, False when it still runs after ``timeout`` seconds.

    An exited process that its parent has not reaped yet (a zombie) has exited: it holds no port,
    file or lock any more, as ``pid_if_running`` and ``identified_pid`` also hold. A server started
    by an earlier command (PostgreSQL, Redis, the supervisor) is a child of init, which reaps when
    it gets to it: up to seconds later on some hosts. Our own child is reaped here."""
    import psutil

    deadline = time.monotonic() + timeout
    try:
        process = psutil.Process(pid)
        while True:
            try:
                process.wait(max(0.0, min(_EXIT_POLL_S, deadline - time.monotonic())))
                return True
            except psutil.TimeoutExpired:
                if process.status() == psutil.STATUS_ZOMBIE:
                    return True
                if time.monotonic() >= deadline:
                    return False
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
