"""The local runtime's supervisor: keeps the api and collector processes running.

`llmobs up --runtime local` starts one supervisor per project (``python -m llmobs.stack.supervisor
PROJECT_DIR``), detached from the terminal. It

* runs ``replicas`` processes of each enabled service (``llmobs serve api|collector``; replicas
  share their ports with SO_REUSEPORT), restarting any that exits, with a growing back-off when
  one keeps crashing at start;
* runs `llmobs db maintain` every MAINTAIN_INTERVAL_SECONDS (partitions, retention, rollups);
* re-reads its desired state (``run/supervisor.json``, written by `llmobs up/scale/down`) on
  SIGHUP, and records what runs in ``run/children.json`` (read by `llmobs status`);
* on SIGTERM stops every child with SIGTERM (the collector drains its queue), waits, and exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmobs.config import Settings
from llmobs.proc import write_pid_record
from llmobs.stack.layout import LocalLayout

log = logging.getLogger("llmobs.supervisor")

SUPERVISED = ("collector", "api")
STOP_TIMEOUT = 30.0
#: A child that exits sooner than this after starting counts as crashing at start.
MIN_UPTIME = 10.0
MAX_BACKOFF = 30.0
PID_MARKER = "llmobs.stack.supervisor"


def desired_path(layout: LocalLayout) -> Path:
    return layout.run / "supervisor.json"


def children_path(layout: LocalLayout) -> Path:
    return layout.run / "children.json"


def pid_path(layout: LocalLayout) -> Path:
    return layout.run / "supervisor.pid"


def child_marker(service: str) -> str:
    return f"serve {service}"


def child_argv(layout: LocalLayout, service: str) -> list[str]:
    return [sys.executable, "-m", "llmobs", "--project-dir", str(layout.root), "serve", service]


@dataclass
class DesiredState:
    replicas: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SUPERVISED, 1))
    enabled: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(SUPERVISED, False))

    def count(self, service: str) -> int:
        return self.replicas.get(service, 1) if self.enabled.get(service) else 0

    @classmethod
    def read(cls, layout: LocalLayout) -> DesiredState:
        try:
            data = json.loads(desired_path(layout).read_text())
        except (OSError, ValueError):
            return cls()
        state = cls()
        state.replicas.update({k: int(v) for k, v in data.get("replicas", {}).items() if k in SUPERVISED})
        state.enabled.update({k: bool(v) for k, v in data.get("enabled", {}).items() if k in SUPERVISED})
        return state

    def write(self, layout: LocalLayout) -> None:
        path = desired_path(layout)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"replicas": self.replicas, "enabled": self.enabled}))
        os.replace(tmp, path)


@dataclass
class Child:
    service: str
    replica: int
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None


class Supervisor:
    def __init__(self, project_dir: Path) -> None:
        self.layout = LocalLayout(project_dir)
        self.settings = Settings.load(project_dir)
        self.children: dict[tuple[str, int], Child] = {}
        self.desired = DesiredState.read(self.layout)
        self._reload = threading.Event()
        self._stop = threading.Event()
        self._maintain_thread: threading.Thread | None = None

    # -- main loop ------------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        write_pid_record(pid_path(self.layout), os.getpid(), PID_MARKER)
        log.info("supervisor started (pid %d) for %s", os.getpid(), self.layout.root)
        self._maintain_thread = threading.Thread(target=self._maintain_loop, name="maintain", daemon=True)
        self._maintain_thread.start()
        try:
            while not self._stop.is_set():
                if self._reload.is_set():
                    self._reload.clear()
                    self.desired = DesiredState.read(self.layout)
                    log.info("desired state reloaded: %s", {s: self.desired.count(s) for s in SUPERVISED})
                self._reap()
                self._reconcile()
                self._write_children()
                self._stop.wait(0.2)
        finally:
            self._stop_all()
            children_path(self.layout).unlink(missing_ok=True)
            pid_path(self.layout).unlink(missing_ok=True)
            log.info("supervisor stopped")
        return 0

    def _reap(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.process is None or child.process.poll() is None:
                continue
            code = child.process.returncode
            uptime = now - child.started_at
            child.process, child.last_exit = None, code
            if uptime < MIN_UPTIME:
                child.backoff = min(MAX_BACKOFF, max(1.0, child.backoff * 2))
            else:
                child.backoff = 0.0
            child.next_start = now + child.backoff
            log.warning("%s replica %d exited with code %s after %.1fs; restarting in %.0fs",
                        child.service, child.replica, code, uptime, child.backoff)

    def _reconcile(self) -> None:
        now = time.monotonic()
        for service in SUPERVISED:
            want = self.desired.count(service)
            for replica in range(1, want + 1):
                child = self.children.setdefault((service, replica), Child(service, replica))
                if child.process is None and now >= child.next_start:
                    self._spawn(child)
            for (name, replica), child in list(self.children.items()):
                if name == service and replica > want:
                    self._terminate([child])
                    del self.children[(name, replica)]

    def _spawn(self, child: Child) -> None:
        log_file = self.layout.log_file(child.service)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, LLMOBS_PROJECT_DIR=str(self.layout.root), LLMOBS_REPLICA=str(child.replica))
        with open(log_file, "ab", buffering=0) as out:
            child.process = subprocess.Popen(
                child_argv(self.layout, child.service), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=env, cwd=self.layout.root, start_new_session=True)
        if child.started_at:
            child.restarts += 1
        child.started_at = time.monotonic()
        log.info("started %s replica %d (pid %d)", child.service, child.replica, child.process.pid)

    def _terminate(self, children: list[Child], timeout: float = STOP_TIMEOUT) -> None:
        running = [c for c in children if c.process is not None and c.process.poll() is None]
        for c in running:
            log.info("stopping %s replica %d (pid %d)", c.service, c.replica, c.process.pid)
            c.process.terminate()
        deadline = time.monotonic() + timeout
        for c in running:
            try:
                c.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s replica %d ignored SIGTERM for %.0fs; killing it", c.service, c.replica, timeout)
                c.process.kill()
                c.process.wait()
            c.process = None

    def _stop_all(self) -> None:
        self._terminate(list(self.children.values()))

    def _write_children(self) -> None:
        import psutil

        records = {}
        for (service, replica), c in sorted(self.children.items()):
            entry = {"replica": replica, "restarts": c.restarts, "last_exit": c.last_exit, "pid": None,
                     "create_time": None}
            if c.process is not None and c.process.poll() is None:
                try:
                    entry["pid"] = c.process.pid
                    entry["create_time"] = psutil.Process(c.process.pid).create_time()
                except psutil.NoSuchProcess:
                    entry["pid"] = None
            records.setdefault(service, []).append(entry)
        text = json.dumps({"supervisor_pid": os.getpid(), "services": records}, sort_keys=True)
        path = children_path(self.layout)
        try:
            if path.read_text() == text:
                return
        except OSError:
            pass
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    # -- maintenance ----------------------------------------------------------------------------

    def _maintain_loop(self) -> None:
        from llmobs.store.db import connect, first_line
        from llmobs.store.maintain import maintain

        delay = 5.0  # soon after start, then every interval
        while not self._stop.wait(delay):
            delay = float(self.settings.get_int("MAINTAIN_INTERVAL_SECONDS"))
            try:
                with connect(self.settings, "admin", autocommit=True) as conn:
                    result = maintain(conn, self.settings)
                if result.partitions_created or result.partitions_dropped:
                    log.info("maintain: partitions created %s, dropped %s", result.partitions_created,
                             result.partitions_dropped)
            except Exception as exc:  # the database may be restarting: try again next round
                log.warning("maintain failed: %s", first_line(exc))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m llmobs.stack.supervisor PROJECT_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s [supervisor] %(levelname)s %(message)s")
    return Supervisor(Path(args[0]).resolve()).run()


if __name__ == "__main__":
    sys.exit(main())
