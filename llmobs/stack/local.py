"""The local runtime: the stack as processes on this host, data under the project directory.

PostgreSQL runs under pg_ctl (as PG_OS_USER when we are root), redis-server daemonizes itself,
and the api and collector run under the project's supervisor (see ``supervisor.py``), with
Prometheus, Alertmanager and the exporters when the `monitoring` profile is enabled (Debian's
binaries, see ``monitoring.py``). Grafana and pgAdmin are not available here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from llmobs.config import Settings, open_private_log, private_dir
from llmobs.errors import LlmobsError, UsageError
from llmobs.proc import OsUser, PidRecord, live_pid, read_pid_record, run, wait_for_exit
from llmobs.progress import Progress, SilentProgress
from llmobs.stack import monitoring
from llmobs.stack import supervisor as sv
from llmobs.stack.base import Mount, RuntimeState, Stack, State
from llmobs.stack.layout import LocalLayout
from llmobs.stack.logs import read_logs
from llmobs.stack.ports import ensure_ports_free
from llmobs.stack.postgres import PgCluster, PgConfig
from llmobs.stack.redis_server import RedisServer
from llmobs.stack.restore_journal import finish_interrupted_restore
from llmobs.stack.services import SERVICES, SERVICES_BY_NAME

LOCAL_SERVICES = tuple(s.name for s in SERVICES if s.local)


#: Reads every password the Redis ACL user must accept (passed in by a higher layer).
RedisPasswords = Callable[[Settings], Sequence[str]]


class LocalStack(Stack):
    runtime = "local"

    def __init__(
        self, settings: Settings, profiles: Sequence[str] = (), *, redis_passwords: RedisPasswords | None = None
    ) -> None:
        """``profiles``: the optional services enabled (``monitoring``). ``redis_passwords``: what
        the Redis ACL user accepts when Redis starts (the secrets layer's rotation knows more than
        REDIS_PASSWORD); by default REDIS_PASSWORD alone."""
        super().__init__(settings)
        self.profiles = tuple(profiles)
        self.redis_passwords = redis_passwords
        if settings.project_dir is None:
            raise LlmobsError("the local runtime needs a project directory", hint="run `llmobs init` first")
        self.layout = LocalLayout(settings.project_dir)
        self.os_user = OsUser.lookup(settings.get_str("PG_OS_USER")) if os.geteuid() == 0 else None
        self.cluster = PgCluster(
            self.layout.pgdata,
            log_file=self.layout.log_file("postgres"),
            os_user=self.os_user,
            configured_bin_dir=settings.get_str("PG_BIN_DIR"),
        )
        self.redis = RedisServer(
            self.layout.run / "redis.conf",
            self.layout.redis_data,
            self.layout.run / "redis.pid",
            self.layout.log_file("redis"),
        )

    def available_services(self) -> tuple[str, ...]:
        """The local services whose profile (if any) is enabled."""
        return tuple(s for s in LOCAL_SERVICES if self._profile_enabled(s))

    def _profile_enabled(self, service: str) -> bool:
        profile = SERVICES_BY_NAME[service].profile
        return profile is None or profile in self.profiles

    def data_paths(self) -> dict[str, Path]:
        return {"postgres": self.layout.pgdata, "redis": self.layout.redis_data, "wal-archive": self.layout.wal_archive}

    # -- start / stop ---------------------------------------------------------------------------

    def start(self, services: Sequence[str], progress: Progress) -> None:
        self._check_known(services)
        self.layout.run.mkdir(parents=True, exist_ok=True)
        private_dir(self.layout.logs, traversable=self.os_user is not None)
        if "timescaledb" in services:
            self._start_postgres(progress)
        if "redis" in services:
            self._start_redis(progress)
        apps = [s for s in services if s in sv.SUPERVISED]
        if any(s in monitoring.MONITORING_SERVICES for s in apps):
            monitoring.require_binaries()
        if apps:
            self._start_supervised(apps, progress)

    def _start_postgres(self, progress: Progress) -> None:
        rolled_back = finish_interrupted_restore(self.cluster)  # a restore killed midway: old data back
        if rolled_back:
            progress.warn(rolled_back)
        if self.cluster.running_pid():
            progress.done("PostgreSQL already running")
            return
        ensure_ports_free(self.settings, ["DB_PORT"])
        self.cluster.prepare_dirs(self.layout.wal_archive, self.layout.pg_socket_dir)
        if not self.cluster.initialized:
            progress.step("Initialising the PostgreSQL data directory")
            self.cluster.init(self.settings.secret("DB_PASSWORD"))
        self.cluster.write_config(self.pg_config())
        progress.step("Starting PostgreSQL")
        self.cluster.start()
        progress.done(f"PostgreSQL {self.cluster.binaries.major} started")

    def pg_config(self) -> PgConfig:
        bind = self.settings.get_str("BIND_ADDRESS")
        return PgConfig(
            listen_addresses="*" if bind in ("0.0.0.0", "::", "*") else bind,
            port=self.settings.get_int("DB_PORT"),
            socket_dir=self.layout.pg_socket_dir,
            wal_archive_dir=self.layout.wal_archive,
        )

    def _start_redis(self, progress: Progress) -> None:
        if self.redis.running_pid():
            progress.done("Redis already running")
            return
        ensure_ports_free(self.settings, ["REDIS_PORT"])
        self.write_redis_config()
        progress.step("Starting Redis")
        self.redis.start()
        progress.done("Redis started")

    def write_redis_config(self, passwords: Sequence[str] | None = None) -> None:
        """``passwords``: every password the ACL user accepts; by default those of the
        ``redis_passwords`` source this stack was given, else REDIS_PASSWORD alone."""
        if passwords is None:
            if self.redis_passwords is not None:
                passwords = self.redis_passwords(self.settings)
            else:
                passwords = [self.settings.secret("REDIS_PASSWORD")]
        self.redis.write_config(
            bind=self.settings.get_str("BIND_ADDRESS"),
            port=self.settings.get_int("REDIS_PORT"),
            user=self.settings.get_str("REDIS_USER"),
            passwords=list(passwords),
        )

    def _start_supervised(self, services: Sequence[str], progress: Progress) -> None:
        desired = sv.DesiredState.read(self.layout)
        newly = [s for s in services if not self._running_children().get(s)]
        port_keys = [k for s in newly for k in SERVICES_BY_NAME[s].port_keys]
        if port_keys:
            ensure_ports_free(self.settings, port_keys)
        for s in services:
            desired.enabled[s] = True
        desired.write(self.layout)
        if self.supervisor_pid():
            self._signal_supervisor(signal.SIGHUP)
        else:
            self._stop_orphans(progress)
            progress.step("Starting the supervisor of api and collector")
            self._spawn_supervisor()
        progress.done(f"{', '.join(services)} started under the supervisor")

    def _spawn_supervisor(self) -> None:
        log_file = self.layout.log_file("supervisor")
        with open_private_log(log_file) as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", sv.PID_MARKER, str(self.layout.root)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.layout.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.supervisor_pid():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise LlmobsError("the supervisor did not start", hint=f"see {log_file}")

    def stop(self, services: Sequence[str] | None = None, progress: Progress | None = None) -> None:
        progress = progress or SilentProgress()
        targets = list(services) if services is not None else list(LOCAL_SERVICES)
        self._check_known(targets)
        apps = [s for s in targets if s in sv.SUPERVISED]
        if apps:
            self._stop_supervised(apps, all_apps=services is None, progress=progress)
        if "redis" in targets:
            progress.step("Stopping Redis")
            if self.redis.stop():
                progress.done("Redis stopped")
        if "timescaledb" in targets:
            progress.step("Stopping PostgreSQL")
            if self.cluster.stop(mode="fast"):
                progress.done("PostgreSQL stopped")

    def _stop_supervised(self, services: Sequence[str], *, all_apps: bool, progress: Progress) -> None:
        desired = sv.DesiredState.read(self.layout)
        for s in services:
            desired.enabled[s] = False
        desired.write(self.layout)
        pid = self.supervisor_pid()
        if pid is None:
            self._stop_orphans(progress)
            return
        if all_apps or not any(desired.enabled.values()):
            progress.step("Stopping api and collector")
            os.kill(pid, signal.SIGTERM)
            if not wait_for_exit(pid, sv.STOP_TIMEOUT + 10):
                os.kill(pid, signal.SIGKILL)
                wait_for_exit(pid, 5)
            self._kill_orphans()
            sv.pid_path(self.layout).unlink(missing_ok=True)
            progress.done("api and collector stopped")
            return
        progress.step(f"Stopping {', '.join(services)}")
        self._signal_supervisor(signal.SIGHUP)
        deadline = time.monotonic() + sv.STOP_TIMEOUT + 10
        while time.monotonic() < deadline and any(self._running_children().get(s) for s in services):
            time.sleep(0.1)
        progress.done(f"{', '.join(services)} stopped")

    def _stop_orphans(self, progress: Progress) -> None:
        """With no supervisor running: stop what its records say still runs (children of one
        that died, where they did not die with it), so none keeps serving unseen beside the
        next supervisor's."""
        orphans = sorted(pid for pids in self._running_children().values() for pid in pids)
        if orphans:
            progress.warn(f"the supervisor is gone but its children run (pids {orphans}); stopping them")
        self._kill_orphans()

    def _kill_orphans(self) -> None:
        """Children of a supervisor that died without stopping them (kill -9): end them by pid,
        after checking each is still the process we started (pid and start time recorded)."""
        for pids in self._running_children().values():
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
            for pid in pids:
                if not wait_for_exit(pid, sv.STOP_TIMEOUT):
                    os.kill(pid, signal.SIGKILL)
                    wait_for_exit(pid, 5)
        sv.children_path(self.layout).unlink(missing_ok=True)

    def restart(self, services: Sequence[str], progress: Progress) -> None:
        """Rolling restart by the supervisor (surge: new replica ready before the old one stops).
        PostgreSQL and Redis are not restarted here: their credentials change online."""
        import json
        import uuid

        apps = [s for s in services if s in sv.SUPERVISED]
        if not apps:
            return
        if not self.supervisor_pid():
            raise LlmobsError("api and collector are not running", hint="run `llmobs up` first")
        request_id = uuid.uuid4().hex
        path = sv.restart_request_path(self.layout)
        path.write_text(json.dumps({"id": request_id, "services": apps}))
        progress.step(f"Rolling restart of {', '.join(apps)}")
        self._signal_supervisor(signal.SIGUSR1)
        deadline = time.monotonic() + sv.READY_TIMEOUT * 4 + 60
        while time.monotonic() < deadline:
            try:
                done = json.loads(sv.restart_done_path(self.layout).read_text())
            except (OSError, ValueError):
                done = {}
            if done.get("id") == request_id:
                if not done.get("ok"):
                    raise LlmobsError(
                        f"rolling restart failed: {done.get('error')}", hint="see `llmobs logs` of the service"
                    )
                progress.done(f"{', '.join(apps)} restarted, one replica at a time")
                return
            if not self.supervisor_pid():
                raise LlmobsError("the supervisor exited during the rolling restart")
            time.sleep(0.1)
        raise LlmobsError("rolling restart did not finish in time", hint="see logs/supervisor.log")

    def remove_data(self) -> list[str]:
        import shutil

        if self.cluster.running_pid() or self.redis.running_pid() or self.supervisor_pid():
            raise LlmobsError("the stack is still running", hint="run `llmobs down` first")
        removed = []
        for path in (self.layout.data, self.layout.run):
            if path.exists():
                shutil.rmtree(path)
                removed.append(str(path))
        return removed

    # -- state ----------------------------------------------------------------------------------

    def supervisor_pid(self) -> int | None:
        return live_pid(read_pid_record(sv.pid_path(self.layout)))

    def _signal_supervisor(self, sig: signal.Signals) -> None:
        pid = self.supervisor_pid()
        if pid:
            os.kill(pid, sig)

    def _running_children(self, *, ready_only: bool = False) -> dict[str, list[int]]:
        """Live pids per supervised service, each checked against its recorded start time;
        ``ready_only``: only replicas that reported they serve."""
        import json

        try:
            data = json.loads(sv.children_path(self.layout).read_text())
        except (OSError, ValueError):
            return {}
        running: dict[str, list[int]] = {}
        for service, entries in data.get("services", {}).items():
            for e in entries:
                if ready_only and not e.get("ready"):
                    continue
                if e.get("pid") and live_pid(PidRecord(e["pid"], e["create_time"], sv.child_marker(service))):
                    running.setdefault(service, []).append(e["pid"])
        return running

    def states(self) -> dict[str, RuntimeState]:
        states: dict[str, RuntimeState] = {}
        pg = self.cluster.running_pid()
        states["timescaledb"] = RuntimeState("running" if pg else "stopped", int(bool(pg)), 1, pids=[pg] if pg else [])
        rd = self.redis.running_pid()
        states["redis"] = RuntimeState("running" if rd else "stopped", int(bool(rd)), 1, pids=[rd] if rd else [])
        supervisor = self.supervisor_pid()
        desired = sv.DesiredState.read(self.layout)
        # From the records even without a supervisor: its orphans show (and `down` stops them).
        children = self._running_children()
        ready = self._running_children(ready_only=True)
        for service in sv.SUPERVISED:
            pids = children.get(service, [])
            want = desired.count(service)
            if not pids and not want and not self._profile_enabled(service):
                profile = SERVICES_BY_NAME[service].profile
                states[service] = RuntimeState("not available", detail=f"profile {profile} not enabled")
                continue
            state: State = "running" if pids else ("starting" if supervisor and want else "stopped")
            states[service] = RuntimeState(
                state,
                len(ready.get(service, [])),
                want,
                pids=pids,
                detail="" if supervisor or not (want or pids) else "supervisor not running",
            )
        # The supervisor runs `db maintain` itself, every MAINTAIN_INTERVAL_SECONDS.
        states["maintenance"] = RuntimeState(
            "running" if supervisor else "stopped",
            int(bool(supervisor)),
            1,
            pids=[supervisor] if supervisor else [],
            detail="in the supervisor",
        )
        for s in SERVICES:
            if s.name not in states:
                states[s.name] = RuntimeState("not available", detail="not run by the local runtime")
        return states

    # -- jobs -----------------------------------------------------------------------------------

    def service_env(self, service: str) -> dict[str, str]:
        """Environment that points client tools at a service (secrets in env, never argv)."""
        env = dict(os.environ)
        if service == "timescaledb":
            env.update(
                PGHOST=str(self.layout.pg_socket_dir),
                PGPORT=str(self.settings.get_int("DB_PORT")),
                PGUSER="postgres",
                PGDATABASE=self.settings.get_str("DB_NAME"),
                PGPASSWORD=self.settings.secret("DB_PASSWORD"),
            )
        elif service == "redis":
            env.update(REDISCLI_AUTH=self.settings.secret("REDIS_PASSWORD"))
        return env

    def exec(
        self,
        service: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        self._check_known([service])
        child_env = self.service_env(service)
        child_env.update(env or {})
        return run(list(argv), env=child_env, input=input, check=check, cwd=self.layout.root)

    def run_job(
        self,
        argv: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        # Local jobs see the project's directories directly: mounts only matter to containers.
        child_env = dict(os.environ, **(env or {}))
        return run(
            [sys.executable, "-m", "llmobs", "--project-dir", str(self.layout.root), *argv],
            env=child_env,
            check=check,
            cwd=self.layout.root,
        )

    def scale(self, replicas: Mapping[str, int], progress: Progress) -> None:
        desired = sv.DesiredState.read(self.layout)
        for service, count in replicas.items():
            if service not in sv.SCALABLE:
                raise UsageError(f"{service} cannot be scaled; scalable services: {', '.join(sv.SCALABLE)}")
            if count < 0:
                raise UsageError(f"{service}: replica count must be 0 or more")
            desired.replicas[service] = count
            desired.enabled[service] = count > 0 or desired.enabled[service]
        desired.write(self.layout)
        if not self.supervisor_pid():
            raise LlmobsError("api and collector are not running", hint="run `llmobs up` first")
        self._signal_supervisor(signal.SIGHUP)
        progress.step("Waiting for the replicas")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, live = self._running_children(ready_only=True), self._running_children()
            if all(len(ready.get(s, [])) == len(live.get(s, [])) == desired.count(s) for s in replicas):
                progress.done(", ".join(f"{s}={desired.count(s)}" for s in replicas))
                return
            time.sleep(0.1)
        raise LlmobsError(
            "replicas did not reach the requested count within 60 s", hint="see `llmobs logs` for crashing replicas"
        )

    def logs(self, service: str | None, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        names = [service] if service else [*self.available_services(), "supervisor"]
        if service:
            self._check_known([service], extra=("supervisor",))
        files = {name: self.layout.log_file("postgres" if name == "timescaledb" else name) for name in names}
        return read_logs(files, follow=follow, tail=tail, prefix=service is None)

    def _check_known(self, services: Sequence[str], extra: Sequence[str] = ()) -> None:
        for s in services:
            if s in extra:
                continue
            if s not in SERVICES_BY_NAME:
                raise UsageError(f"unknown service {s!r}; services are: {', '.join(SERVICES_BY_NAME)}")
            if s not in LOCAL_SERVICES:
                raise UsageError(
                    f"{s} is not available in the local runtime",
                    hint="use the compose runtime (`llmobs up --runtime compose`)",
                )
