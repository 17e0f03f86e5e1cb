"""A redis-server on this host, configured from a private file (the password never appears in
its arguments), with the ``default`` user disabled and one named ACL user."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from llmobs.config import open_private_log, private_dir, write_private_file
from llmobs.errors import LlmobsError
from llmobs.proc import identified_pid, run, wait_for_exit

log = logging.getLogger(__name__)

#: seconds within which a starting redis-server writes its pid file (its mtime dates the start)
PID_FILE_DELAY = 5.0


@dataclass
class RedisServer:
    conf_path: Path
    data_dir: Path
    pid_file: Path
    log_file: Path

    @staticmethod
    def binary() -> str:
        path = shutil.which("redis-server")
        if path is None:
            raise LlmobsError("redis-server not found", hint="install it (Debian: `apt-get install redis-server`)")
        return path

    def write_config(self, *, bind: str, port: int, user: str, passwords: list[str]) -> None:
        """``passwords``: every password the ACL user accepts (two while a rotation is under way)."""
        # The AOF and RDB files hold every project's cached query results: owner only.
        private_dir(self.data_dir)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        acl = " ".join(f">{p}" for p in passwords)
        write_private_file(
            self.conf_path,
            "\n".join(
                [
                    "# Written by llmobs on every start; edit the project's .env instead.",
                    f"bind {bind}",
                    f"port {port}",
                    "protected-mode yes",
                    "daemonize yes",
                    f"pidfile {self.pid_file}",
                    f"logfile {self.log_file}",
                    f"dir {self.data_dir}",
                    "appendonly yes",
                    "appendfsync everysec",
                    "save 900 1 300 10 60 10000",
                    "user default off",
                    f"user {user} on {acl} ~* &* +@all",
                    "",
                ]
            ),
        )

    def running_pid(self) -> int | None:
        """The server's pid, when the process its pid file names is this redis-server: started
        when the file was written (Redis writes it as it starts), runs the redis-server binary and
        works in this data directory (Redis changes into ``dir``). A stale pid file naming any
        other process is not trusted (see ``identified_pid``)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            written_at = self.pid_file.stat().st_mtime
        except (OSError, ValueError):
            return None
        exe = shutil.which("redis-server")
        return identified_pid(
            pid,
            started_at=written_at,
            exe=Path(exe) if exe else None,
            cwd=self.data_dir,
            start_tolerance=PID_FILE_DELAY,
        )

    def start(self, *, timeout: float = 20) -> None:
        if self.running_pid():
            return
        self.pid_file.unlink(missing_ok=True)
        open_private_log(self.log_file).close()
        # umask 077: the AOF, RDB and log files redis creates (and rewrites) are 0600.
        run([self.binary(), self.conf_path], timeout=timeout, hint=f"see {self.log_file}", umask=0o077)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running_pid():
                return
            time.sleep(0.05)
        raise LlmobsError(f"redis-server did not start within {timeout:g} s", hint=f"see {self.log_file}")

    def stop(self, *, timeout: float = 30) -> bool:
        """SIGTERM (redis saves and exits cleanly); False when it was not running."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        log.info("stopping redis-server (pid %d)", pid)
        os.kill(pid, signal.SIGTERM)
        if not wait_for_exit(pid, timeout):
            log.warning("redis-server (pid %d) ignored SIGTERM for %g s; killing it", pid, timeout)
            os.kill(pid, signal.SIGKILL)
            wait_for_exit(pid, 5)
        self.pid_file.unlink(missing_ok=True)
        return True
