"""The local runtime's supervisor: keeps the api and collector processes running, and the
`monitoring` profile's Prometheus, Alertmanager and exporters when it is enabled.

`llmobs up --runtime local` starts one supervisor per project (``python -m llmobs.stack.supervisor
PROJECT_DIR``), detached from the terminal. It

* runs ``replicas`` processes of each enabled service (``llmobs serve api|collector``; replicas
  share their ports with SO_REUSEPORT), restarting any that exits, with a growing back-off when
  one keeps crashing at start (exits before it has served MIN_UPTIME seconds since it reported
  ready); its children die with it, even by kill -9 (``llmobs.serving.die_with_supervisor``);
* runs one process of each enabled monitoring service (``monitoring.py`` writes its configuration
  and says how to start it; they die with it too: ``llmobs.serving.exec_with_supervisor``) and
  keeps Prometheus's file_sd targets of the api and collector current (``run/monitoring/targets/``);
* runs `llmobs db maintain` every MAINTAIN_INTERVAL_SECONDS (partitions, retention, rollups, and
  the host facts the alert rules read: volume usage);
* re-reads its desired state (``run/supervisor.json``, written by `llmobs up/scale/down`) on
  SIGHUP, and records what runs in ``run/children.json`` (read by `llmobs status`);
* on SIGUSR1 performs the rolling restart asked for in ``run/restart-request.json`` (so services
  pick up new credentials): for each replica in turn, a replacement is started, and the old
  process is stopped only once the replacement reported ready (``llmobs.serving.notify_ready``)
  — the shared port never closes. The outcome goes to ``run/restart-done.json``;
* on SIGTERM stops every child with SIGTERM (the collector drains its queue), waits, and exits.
"""

from __future__ import annotations

import contextlib
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
from typing import Any

from llmobs.config import Settings, open_private_log
from llmobs.errors import LlmobsError
from llmobs.proc import write_pid_record
from llmobs.serving import READY_FD_ENV, REPLICA_METRICS_PORT_ENV, SUPERVISOR_PID_ENV
from llmobs.stack import monitoring
from llmobs.stack.layout import LocalLayout
from llmobs.stack.ports import free_port
from llmobs.store.host_facts import HostFacts
from llmobs.store.maintain import maintain_forever

log = logging.getLogger("llmobs.supervisor")

#: our servers: several replicas each, ready when they say so (``notify_ready``)
SCALABLE = ("collector", "api")
SUPERVISED = (*SCALABLE, *monitoring.MONITORING_SERVICES)
STOP_TIMEOUT = 30.0
#: A child that exits sooner than this after it reported ready counts as crashing at start.
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
    """Text in the command line of a child of ``service`` (checked with its start time)."""
    return monitoring.PROCESS_MARKERS.get(service) or f"serve {service}"


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


def restart_request_path(layout: LocalLayout) -> Path:
    return layout.run / "restart-request.json"


def restart_done_path(layout: LocalLayout) -> Path:
    return layout.run / "restart-done.json"


READY_TIMEOUT = 60.0


@dataclass
class Child:
    service: str
    replica: int
    process: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None
    ready: bool = False
    started_at: float = 0.0
    #: when it reported ready (monotonic), 0 before
    ready_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None
    #: this replica's own /metrics port (api, collector), for Prometheus to scrape each replica
    metrics_port: int | None = None


class Supervisor:
    def __init__(self, project_dir: Path) -> None:
        self.layout = LocalLayout(project_dir)
        self.children: dict[tuple[str, int], Child] = {}
        self.desired = DesiredState.read(self.layout)
        self.settings = Settings.load(project_dir)
        self._reload = threading.Event()
        self._restart = threading.Event()
        self._stop = threading.Event()
        self._maintain_thread: threading.Thread | None = None

    # -- main loop ------------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        signal.signal(signal.SIGUSR1, lambda *_: self._restart.set())
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
                    self.settings = Settings.load(self.layout.root)
                    log.info("desired state reloaded: %s", {s: self.desired.count(s) for s in SUPERVISED})
                if self._restart.is_set():
                    self._restart.clear()
                    self._rolling_restart()
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
            served = self._poll_ready(child) and now - child.ready_at >= MIN_UPTIME
            child.process, child.last_exit = None, code
            self._close_ready_fd(child)
            # Crashing at start (back off more each time) unless it served for a while since it
            # said it was ready: a server killed after minutes of serving comes back at once.
            child.backoff = 0.0 if served else min(MAX_BACKOFF, max(1.0, child.backoff * 2))
            child.next_start = now + child.backoff
            log.warning(
                "%s replica %d exited with code %s after %.1fs; restarting in %.0fs",
                child.service,
                child.replica,
                code,
                uptime,
                child.backoff,
            )

    def _reconcile(self) -> None:
        now = time.monotonic()
        for service in SUPERVISED:
            want = self.desired.count(service)
            for replica in range(1, want + 1):
                child = self.children.setdefault((service, replica), Child(service, replica))
                if child.process is None and now >= child.next_start:
                    self._start(child)
            for (name, replica), child in list(self.children.items()):
                if name == service and replica > want:
                    self._terminate([child])
                    del self.children[(name, replica)]

    def _start(self, child: Child) -> None:
        """Start ``child``: one of our servers, or a monitoring service's Debian binary."""
        if child.service in monitoring.MONITORING_SERVICES:
            self._spawn_monitoring(child)
        else:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        """Start the child's process (stored in ``child.process``)."""
        log_file = self.layout.log_file(child.service)
        log_file.parent.mkdir(parents=True, exist_ok=True)  # made private by `llmobs up`
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        child.metrics_port = free_port(self.settings.get_str("BIND_ADDRESS"))
        env = dict(
            os.environ,
            LLMOBS_PROJECT_DIR=str(self.layout.root),
            LLMOBS_REPLICA=str(child.replica),
            **{
                READY_FD_ENV: str(write_fd),
                SUPERVISOR_PID_ENV: str(os.getpid()),
                REPLICA_METRICS_PORT_ENV: str(child.metrics_port),
            },
        )
        try:
            with open_private_log(log_file) as out:
                process = subprocess.Popen(
                    child_argv(self.layout, child.service),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.layout.root,
                    start_new_session=True,
                    pass_fds=(write_fd,),
                )
        finally:
            os.close(write_fd)
        child.process = process
        self._close_ready_fd(child)
        child.ready_fd, child.ready, child.ready_at = read_fd, False, 0.0
        if child.started_at:
            child.restarts += 1
        child.started_at = time.monotonic()
        log.info("started %s replica %d (pid %d)", child.service, child.replica, process.pid)

    def _spawn_monitoring(self, child: Child) -> None:
        """A Debian binary with the configuration ``monitoring.py`` writes; it counts as ready once
        started (its HTTP probe in `llmobs status` tells whether it serves). A missing binary or
        unreadable settings are logged and retried with the crash back-off."""
        log_file = self.layout.log_file(child.service)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            spec = monitoring.process_spec(child.service, Settings.load(self.layout.root), self.layout)
        except LlmobsError as exc:
            child.backoff = min(MAX_BACKOFF, max(1.0, child.backoff * 2))
            child.next_start = time.monotonic() + child.backoff
            log.error("cannot start %s: %s", child.service, exc.message)
            return
        with open_private_log(log_file) as out:
            child.process = subprocess.Popen(
                # through llmobs.serving, which has the kernel stop it with us, then execs it
                [sys.executable, "-m", "llmobs.serving", *spec.argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**spec.env, SUPERVISOR_PID_ENV: str(os.getpid())},
                cwd=self.layout.root,
                start_new_session=True,
            )
        child.ready = True
        if child.started_at:
            child.restarts += 1
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.service, child.process.pid)

    @staticmethod
    def _close_ready_fd(child: Child) -> None:
        if child.ready_fd is not None:
            os.close(child.ready_fd)
            child.ready_fd = None

    @staticmethod
    def _poll_ready(child: Child) -> bool:
        if not child.ready and child.ready_fd is not None:
            with contextlib.suppress(BlockingIOError):
                child.ready = bool(os.read(child.ready_fd, 64))
                child.ready_at = time.monotonic() if child.ready else 0.0
        return child.ready

    def _rolling_restart(self) -> None:
        """Replace every replica of the requested services, one at a time, surge first."""
        try:
            request = json.loads(restart_request_path(self.layout).read_text())
        except (OSError, ValueError):
            log.warning("SIGUSR1 without a readable restart request; ignored")
            return
        ok, error = True, ""
        for service in request.get("services", []):
            for key in sorted(k for k in self.children if k[0] == service):
                old = self.children[key]
                new = Child(service, key[1], restarts=old.restarts)
                if service in monitoring.MONITORING_SERVICES:
                    # Their ports are not shared: the old process goes first (a short gap).
                    self._terminate([old])
                self._start(new)
                deadline = time.monotonic() + READY_TIMEOUT
                while not self._poll_ready(new):
                    exited = new.process is None or new.process.poll() is not None
                    if exited or time.monotonic() > deadline or self._stop.is_set():
                        break
                    time.sleep(0.05)
                if not new.ready:
                    ok, error = False, f"the new {service} replica {key[1]} did not become ready; old one kept"
                    log.error("%s (exit %s)", error, new.process.poll() if new.process else None)
                    self._terminate([new])
                    break
                self.children[key] = new
                self._terminate([old])
                self._write_children()
                log.info("%s replica %d replaced (pid %s)", service, key[1], new.process.pid if new.process else None)
            if not ok:
                break
        done = {"id": request.get("id"), "ok": ok, "error": error}
        tmp = restart_done_path(self.layout).with_suffix(".tmp")
        tmp.write_text(json.dumps(done))
        os.replace(tmp, restart_done_path(self.layout))

    def _terminate(self, children: list[Child], timeout: float = STOP_TIMEOUT) -> None:
        running = [(c, c.process) for c in children if c.process is not None and c.process.poll() is None]
        for c, process in running:
            log.info("stopping %s replica %d (pid %d)", c.service, c.replica, process.pid)
            process.terminate()
        deadline = time.monotonic() + timeout
        for c, process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s replica %d ignored SIGTERM for %.0fs; killing it", c.service, c.replica, timeout)
                process.kill()
                process.wait()
            c.process = None
            self._close_ready_fd(c)

    def _stop_all(self) -> None:
        self._terminate(list(self.children.values()))

    def _write_children(self) -> None:
        import psutil

        records: dict[str, list[dict[str, Any]]] = {}
        for (service, replica), c in sorted(self.children.items()):
            entry: dict[str, Any] = {
                "replica": replica,
                "restarts": c.restarts,
                "last_exit": c.last_exit,
                "pid": None,
                "create_time": None,
                "ready": self._poll_ready(c),
                "metrics_port": c.metrics_port,
            }
            if c.process is not None and c.process.poll() is None:
                try:
                    entry["pid"] = c.process.pid
                    entry["create_time"] = psutil.Process(c.process.pid).create_time()
                except psutil.NoSuchProcess:
                    entry["pid"] = None
            records.setdefault(service, []).append(entry)
        if self.desired.enabled.get("prometheus"):
            monitoring.write_app_targets(self.layout, self.settings, records)
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

        # Settings re-read at every pass: secrets may have been rotated. Soon after start, then
        # every MAINTAIN_INTERVAL_SECONDS.
        settings = Settings.load(self.layout.root)
        maintain_forever(
            lambda: Settings.load(self.layout.root),
            settings.get_int("MAINTAIN_INTERVAL_SECONDS"),
            stop=self._stop,
            first_delay=5.0,
            host=HostFacts(monitoring.local_volumes(self.layout, settings)),
        )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m llmobs.stack.supervisor PROJECT_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s [supervisor] %(levelname)s %(message)s"
    )
    return Supervisor(Path(args[0]).resolve()).run()


if __name__ == "__main__":
    sys.exit(main())
