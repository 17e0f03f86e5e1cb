"""Several collector processes sharing the OTLP ports, under one supervisor.

Parsing and normalizing spans is Python work bound to one core per process (the GIL). With
COLLECTOR_WORKERS = N, the supervisor (the `llmobs serve collector` process) starts N worker
processes that each bind the OTLP ports with SO_REUSEPORT, so the kernel spreads client
connections over them; each worker batches and writes on its own. The supervisor serves
``/metrics`` (prometheus_client multiprocess mode sums the workers) and ``/health`` on the
metrics port, restarts a worker that dies, and on SIGTERM lets every worker drain.

Workers are fresh interpreters (``python -m llmobs.collector.workers``) that load the same
settings as the supervisor: the project directory and the environment, never secrets in argv.
Each reports through its own pipe when it listens; once all do, the supervisor reports ready to
whoever started it (:func:`llmobs.serving.notify_ready`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llmobs.collector.server import Collector, health_body, listen_socket, metrics_text, start_http_server
from llmobs.config import Settings
from llmobs.errors import LlmobsError
from llmobs.serving import READY_FD_ENV, notify_ready, serve_replica_metrics, setup_logging

log = logging.getLogger("llmobs.collector.supervisor")

#: a worker that exits sooner than this after its start failed to start: stop instead of looping
STARTUP_GRACE = 5.0
RESTART_DELAY = 1.0
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def supervise(settings: Settings, host: str, workers: int) -> None:
    metrics_dir = Path(tempfile.mkdtemp(prefix="llmobs-collector-metrics-"))
    os.environ[METRICS_DIR_ENV] = str(metrics_dir)  # before prometheus_client is imported anywhere
    try:
        asyncio.run(Supervisor(settings, host, workers, metrics_dir).run())
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


class Supervisor:
    def __init__(self, settings: Settings, host: str, workers: int, metrics_dir: Path) -> None:
        self.settings = settings
        self.host = host
        self.count = workers
        self.metrics_dir = metrics_dir
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.ready: set[int] = set()
        self._stop = asyncio.Event()
        self._failed: str | None = None

    def _worker_env(self, ready_fd: int) -> dict[str, str]:
        env = dict(os.environ)
        env[READY_FD_ENV] = str(ready_fd)  # each worker tells us, not our own supervisor
        if self.settings.project_dir is not None:
            env["LLMOBS_PROJECT_DIR"] = str(self.settings.project_dir)
        return env

    async def _spawn(self, slot: int) -> asyncio.subprocess.Process:
        """Start worker ``slot`` and wait until it listens (or exits)."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "llmobs.collector.workers",
                "--host",
                self.host,
                env=self._worker_env(write_fd),
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)
        self.procs[slot] = proc
        try:
            ready = await asyncio.get_running_loop().run_in_executor(None, os.read, read_fd, 64)
        finally:
            os.close(read_fd)
        if ready:
            self.ready.add(slot)
            if len(self.ready) == self.count:
                notify_ready()  # every worker listens: tell the local runtime's supervisor, if any
        return proc

    async def _keep_worker(self, slot: int) -> None:
        """Run worker ``slot``; restart it when it dies (unless it failed to start)."""
        from prometheus_client import multiprocess

        while not self._stop.is_set():
            started = time.monotonic()
            proc = await self._spawn(slot)
            code = await proc.wait()
            self.ready.discard(slot)
            multiprocess.mark_process_dead(proc.pid, str(self.metrics_dir))
            if self._stop.is_set():
                return
            if time.monotonic() - started < STARTUP_GRACE:
                self._failed = f"collector worker {slot} exited with code {code} while starting (see its log above)"
                self._stop.set()
                return
            log.error("collector worker %d (pid %d) exited with code %s; restarting it", slot, proc.pid, code)
            await asyncio.sleep(RESTART_DELAY)

    def _health(self) -> tuple[bool, dict[str, Any]]:
        """Up when every worker listens and each one's database is up. A worker counts once it
        has reported ready: it creates its metrics before that, so a worker just spawned cannot be
        missing from the minimum of ``database_up`` and let a health check pass early."""
        up = None
        queue = 0
        for family in self._registry().collect():
            if family.name == "llmobs_collector_database_up":
                values = [s.value for s in family.samples]
                up = bool(values) and min(values) >= 1
            elif family.name == "llmobs_collector_queue_spans":
                queue = int(sum(s.value for s in family.samples))
        alive = sum(1 for slot, p in self.procs.items() if p.returncode is None and slot in self.ready)
        return health_body(bool(up) and alive == self.count, queue_spans=queue, workers=alive)

    def _registry(self) -> Any:
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.metrics_dir))
        return registry

    async def run(self) -> None:
        # Not at module top: it imports prometheus_client, which must come after supervise()
        # has set PROMETHEUS_MULTIPROC_DIR.
        from llmobs.collector.http_receiver import HealthApp

        sock = listen_socket(self.host, self.settings.get_int("COLLECTOR_METRICS_PORT"))
        serve_replica_metrics(self.host, self._registry())
        server = await start_http_server(
            HealthApp(self._health, lambda: metrics_text(self._registry())), sock, self.settings, graceful_seconds=1
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        tasks = [asyncio.create_task(self._keep_worker(i)) for i in range(self.count)]
        log.info(
            "supervising %d collector workers; metrics and health on %s:%d",
            self.count,
            self.host,
            self.settings.get_int("COLLECTOR_METRICS_PORT"),
        )
        await self._stop.wait()

        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        limit = self.settings.get_int("COLLECTOR_DRAIN_SECONDS") + 15
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in self.procs.values())), limit)
        except TimeoutError:
            log.error("workers did not stop within %d s; killing them", limit)
            for proc in self.procs.values():
                if proc.returncode is None:
                    proc.kill()
        await asyncio.gather(*tasks, return_exceptions=True)
        server.should_exit = True
        await server.shutdown(sockets=[sock])
        if self._failed:
            raise LlmobsError(self._failed)


def worker_main() -> None:
    parser = argparse.ArgumentParser(description="one collector worker (started by `llmobs serve collector`)")
    parser.add_argument("--host", required=True)
    args = parser.parse_args()
    project_dir = os.environ.get("LLMOBS_PROJECT_DIR")
    try:
        settings = Settings.load(Path(project_dir) if project_dir else None)
        setup_logging(settings, role="collector-worker")
        asyncio.run(Collector(settings, args.host, serve_metrics=False).run())
    except (LlmobsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    worker_main()
