"""A PostgreSQL cluster on this host: initdb, configuration, start and stop with pg_ctl.

Used by the local runtime, by restores, and by the test suite, so there is one way to run
PostgreSQL here. When we run as root, every server binary runs as an unprivileged OS user and
the data directory belongs to that user (PostgreSQL refuses root).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llmobs.config import open_private_log
from llmobs.errors import CommandError, LlmobsError
from llmobs.proc import OsUser, identified_pid, run, wait_for_exit

log = logging.getLogger(__name__)

CONF_INCLUDE = "llmobs.conf"
_FATAL_RE = re.compile(r"(?:FATAL|PANIC):\s+(.*)")
#: FATAL messages about one client's connection (e.g. a probe while the server starts), not the server
_CLIENT_FATAL_RE = re.compile(
    r"the database system is |terminating connection |password authentication failed|no pg_hba.conf entry|"
    r"database \S+ does not exist|role \S+ does not exist"
)


@dataclass(frozen=True)
class PgBinaries:
    bin_dir: Path
    major: int

    def __call__(self, name: str) -> Path:
        return self.bin_dir / name

    @classmethod
    def find(cls, configured: str = "", want_major: int | None = None) -> PgBinaries:
        """The server binaries: ``configured`` if set, else the newest (or ``want_major``) install."""
        if configured:
            candidates = [Path(configured)]
        else:
            candidates = sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")), key=_dir_major, reverse=True)
            pg_config = shutil.which("pg_config")
            if pg_config:
                out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
                if out:
                    candidates.append(Path(out))
            on_path = shutil.which("postgres")
            if on_path:
                candidates.append(Path(on_path).resolve().parent)
        found = [c for c in candidates if (c / "postgres").is_file() and (c / "initdb").is_file()]
        if not found:
            raise LlmobsError(
                "PostgreSQL server binaries (postgres, initdb, pg_ctl) not found",
                hint="install them (Debian: `apt-get install postgresql`) or set PG_BIN_DIR",
            )
        binaries = [cls(c, _binary_major(c)) for c in found]
        if want_major is None:
            return binaries[0]
        for b in binaries:
            if b.major == want_major:
                return b
        raise LlmobsError(
            f"the data directory was created by PostgreSQL {want_major}, but the binaries found are "
            f"PostgreSQL {', '.join(str(b.major) for b in binaries)}",
            hint=f"install PostgreSQL {want_major} (or set PG_BIN_DIR to its bin directory), or upgrade "
            "the data directory with pg_upgrade. Nothing was changed.",
        )


def _dir_major(path: Path) -> int:
    try:
        return int(path.parent.name)
    except ValueError:
        return 0


def _binary_major(bin_dir: Path) -> int:
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True).stdout
    # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    try:
        return int(out.split(")")[1].strip().split(".")[0])
    except (IndexError, ValueError):
        raise LlmobsError(f"cannot tell the version of {bin_dir / 'postgres'}: {out.strip()!r}") from None


@dataclass
class PgConfig:
    """What goes into ``llmobs.conf``, rewritten on every start so settings changes apply."""

    listen_addresses: str
    port: int
    socket_dir: Path
    wal_archive_dir: Path | None = None
    archive_timeout: int = 60
    extra: dict[str, str] | None = None

    def render(self) -> str:
        lines = [
            "# Written by llmobs on every start; edit the project's .env instead.",
            f"listen_addresses = '{self.listen_addresses}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            "wal_level = replica",
            "max_wal_senders = 5",
            "password_encryption = 'scram-sha-256'",
            "logging_collector = off",
            "log_line_prefix = '%m [%p] %q%u@%d '",
            "log_min_duration_statement = -1",
        ]
        if self.wal_archive_dir is not None:
            lines += [
                "archive_mode = on",
                f"archive_command = '{archive_command(self.wal_archive_dir)}'",
                f"archive_timeout = {self.archive_timeout}",
            ]
        for key, value in (self.extra or {}).items():
            lines.append(f"{key} = {value}")
        return "\n".join(lines) + "\n"


def archive_command(archive_dir: Path) -> str:
    """Copy a WAL segment into the archive: never overwrite an existing segment, fail on any error,
    and make the copy durable before renaming it into place."""
    d = str(archive_dir).replace("'", "")
    return f'test ! -f "{d}/%f" && cp "%p" "{d}/%f.tmp" && sync "{d}/%f.tmp" && mv "{d}/%f.tmp" "{d}/%f"'


class PgCluster:
    """One data directory and the server that runs on it."""

    def __init__(
        self,
        data_dir: Path,
        *,
        log_file: Path,
        os_user: OsUser | None,
        binaries: PgBinaries | None = None,
        configured_bin_dir: str = "",
    ) -> None:
        self.data_dir = data_dir
        self.log_file = log_file
        self.os_user = os_user
        self._configured_bin_dir = configured_bin_dir
        self._binaries = binaries

    # -- facts ----------------------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def data_major(self) -> int | None:
        try:
            return int((self.data_dir / "PG_VERSION").read_text().strip().split(".")[0])
        except (OSError, ValueError):
            return None

    @property
    def binaries(self) -> PgBinaries:
        if self._binaries is None:
            self._binaries = PgBinaries.find(self._configured_bin_dir, self.data_major())
        return self._binaries

    def running_pid(self) -> int | None:
        """The postmaster's pid, when the process ``postmaster.pid`` names is this cluster's server.

        Like Patroni, never trust the pid file alone: after a crash its pid may belong to another
        process. The process must have started when the file says (its third line), run this
        cluster's ``postgres`` binary and work in this data directory (the postmaster changes
        into it), as the file's second line says too.
        """
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, data_dir, started_at = int(lines[0]), lines[1], float(lines[2])
        except (OSError, ValueError, IndexError):
            return None
        if Path(data_dir).resolve() != self.data_dir.resolve():
            return None
        try:
            exe = self.binaries("postgres")
        except LlmobsError:
            exe = None
        return identified_pid(pid, started_at=started_at, exe=exe, cwd=self.data_dir)

    # -- lifecycle ------------------------------------------------------------------------------

    def prepare_dirs(self, *extra_dirs: Path) -> None:
        """Create the data directory (and e.g. the socket and WAL archive dirs) owned by the OS user."""
        for path in (self.data_dir, *extra_dirs):
            path.mkdir(parents=True, exist_ok=True)
            if self.os_user:
                self.os_user.chown(path)
        self.data_dir.chmod(0o700)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        open_private_log(self.log_file).close()
        if self.os_user:
            self.os_user.chown(self.log_file)
            probe = run(["test", "-w", self.data_dir, "-a", "-w", self.log_file], user=self.os_user, check=False)
            if probe.returncode != 0:
                raise LlmobsError(
                    f"the OS user {self.os_user.name} cannot write to {self.data_dir}",
                    hint="make every parent directory traversable for it (chmod o+x), or put the project "
                    "directory somewhere it can reach (e.g. /srv)",
                )

    def init(self, superuser_password: str, *, superuser: str = "postgres") -> None:
        """initdb with the superuser's password read from a private file (never an argument)."""
        if self.initialized:
            raise LlmobsError(f"{self.data_dir} already holds a PostgreSQL cluster")
        if any(self.data_dir.iterdir()):
            raise LlmobsError(
                f"{self.data_dir} is not empty and holds no PostgreSQL cluster",
                hint="move its contents away; nothing was deleted",
            )
        with tempfile.NamedTemporaryFile("w", prefix="llmobs-pw-", delete=False) as fh:
            os.chmod(fh.name, 0o600)
            fh.write(superuser_password + "\n")
        pwfile = Path(fh.name)
        try:
            if self.os_user:
                self.os_user.chown(pwfile)
            run(
                [
                    self.binaries("initdb"),
                    "-D",
                    self.data_dir,
                    "--username",
                    superuser,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--data-checksums",
                ],
                user=self.os_user,
                timeout=300,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as conf_file:
            conf_file.write(f"\ninclude_if_exists = '{CONF_INCLUDE}'\n")
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# Written by llmobs: password (SCRAM) authentication for every connection.\n"
            "local   all          all                scram-sha-256\n"
            "host    all          all    0.0.0.0/0   scram-sha-256\n"
            "host    all          all    ::/0        scram-sha-256\n"
            "local   replication  all                scram-sha-256\n"
            "host    replication  all    0.0.0.0/0   scram-sha-256\n"
            "host    replication  all    ::/0        scram-sha-256\n"
        )
        if self.os_user:
            self.os_user.chown(hba)

    def write_config(self, config: PgConfig) -> None:
        path = self.data_dir / CONF_INCLUDE
        path.write_text(config.render())
        if self.os_user:
            self.os_user.chown(path)

    def start(self, *, timeout: int = 60) -> None:
        if self.running_pid():
            return
        self._check_version()
        self._remove_stale_pidfile()
        run(
            [self.binaries("pg_ctl"), "start", "-D", self.data_dir, "-l", self.log_file, "-w", "-t", str(timeout)],
            user=self.os_user,
            timeout=timeout + 10,
            hint=f"see {self.log_file}",
        )

    def stop(self, *, mode: str = "fast", timeout: int = 60) -> bool:
        """Stop the server and wait for the postmaster's real exit; False when it was not running.

        A server may be exiting by itself (a failed recovery shuts it down): pg_ctl then finds no
        pid file and fails, yet the server is stopped, which is all that was asked. Raises only
        when the postmaster still runs."""
        pid = self.running_pid()
        if not pid:
            self._remove_stale_pidfile()
            return False
        proc = run(
            [self.binaries("pg_ctl"), "stop", "-D", self.data_dir, "-m", mode, "-w", "-t", str(timeout)],
            user=self.os_user,
            timeout=timeout + 10,
            check=False,
        )
        # pg_ctl -w returns once the pid file is gone; the postmaster removes it just before it exits
        if not wait_for_exit(pid, 10):
            raise CommandError(
                [str(self.binaries("pg_ctl")), "stop"],
                proc.returncode,
                proc.stdout.decode(errors="replace"),
                hint=f"PostgreSQL (pid {pid}) still runs; see {self.log_file}",
            )
        return True

    def log_size(self) -> int:
        """Where the server log ends now: a mark for ``fatal_error_since``."""
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def fatal_error_since(self, mark: int) -> str | None:
        """The last FATAL or PANIC message the server logged about itself after ``mark`` (e.g. why
        a recovery ended; a client's refused connection is not one), without its log prefix; None
        when there is none."""
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(mark)
                text = fh.read().decode(errors="replace")
        except OSError:
            return None
        found = [m[1].strip() for m in _FATAL_RE.finditer(text) if not _CLIENT_FATAL_RE.match(m[1])]
        return found[-1] if found else None

    def reload(self) -> None:
        run([self.binaries("pg_ctl"), "reload", "-D", self.data_dir], user=self.os_user, timeout=30)

    def _check_version(self) -> None:
        major = self.data_major()
        if major is not None and major != self.binaries.major:
            raise LlmobsError(
                f"{self.data_dir} was created by PostgreSQL {major}, but {self.binaries.bin_dir} is "
                f"PostgreSQL {self.binaries.major}",
                hint="set PG_BIN_DIR to matching binaries or upgrade with pg_upgrade; nothing was changed",
            )

    def _remove_stale_pidfile(self) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        if pidfile.exists() and self.running_pid() is None:
            # pg_ctl refuses to start while a pid file names a live process, whatever it is; ours
            # was checked above to not be a postmaster of this directory.
            log.info("removing stale %s", pidfile)
            self._remove_stale_socket_lock(pidfile)
            pidfile.unlink(missing_ok=True)

    @staticmethod
    def _remove_stale_socket_lock(pidfile: Path) -> None:
        """The unix socket's lock file of the same dead postmaster. PostgreSQL takes a pid that
        still exists as a live postmaster, and a postmaster killed with -9 stays a zombie until
        its new parent reaps it (never, under an init that does not reap): start would fail on
        "lock file ... already exists" although nothing runs."""
        try:
            lines = pidfile.read_text().splitlines()
            pid, port, socket_dir = lines[0].strip(), lines[3].strip(), lines[4].strip()
        except (OSError, IndexError):
            return
        lock = Path(socket_dir) / f".s.PGSQL.{port}.lock"
        try:
            if lock.read_text().splitlines()[0].strip() == pid:
                log.info("removing stale %s", lock)
                lock.unlink(missing_ok=True)
        except (OSError, IndexError):
            return
