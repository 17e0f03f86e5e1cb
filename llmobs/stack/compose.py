"""The compose runtime: the stack as Docker Compose services, driven through python-on-whales.

The compose files ship with llmobs (``llmobs.resources.resource_dir("compose")``); LLMOBS_COMPOSE_FILES
layers overlays on the base file. Every compose command gets the project's settings through a
private env file (mode 0600, under ``run/compose/``) that compose interpolates the files with.
Secrets reach containers as Docker secrets: one file per secret setting in ``run/compose/secrets/``
(a 0700 directory; compose bind-mounts the files, so they must be readable by the containers'
users inside), never in a command line, a container's environment or ``docker inspect``.

The api and collector publish no port themselves: the ``proxy`` service publishes theirs and
balances their replicas, so ``scale`` only changes how many containers run behind it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs.config import SETTINGS, SETTINGS_BY_NAME, ConfigError, Settings, write_private_file
from llmobs.errors import CommandError, LlmobsError, UsageError
from llmobs.progress import Progress, SilentProgress
from llmobs.resources import resource_dir
from llmobs.serving import render_log_line
from llmobs.stack.base import Mount, RuntimeState, Stack, State
from llmobs.stack.ports import ensure_ports_free
from llmobs.stack.services import DATA_SERVICES, SERVICES, SERVICES_BY_NAME

if TYPE_CHECKING:
    from python_on_whales import DockerClient

log = logging.getLogger(__name__)

#: in front of the api and collector; started with either of them
PROXY = "proxy"
#: `resolver ... valid=` of compose/proxy/nginx.conf
PROXY_DNS_TTL_S = 2
PROXIED = ("api", "collector")
#: the service whose definition one-off jobs use (image, credentials, backup volumes)
JOB_SERVICE = "backup"
#: one-off restore jobs: JOB_SERVICE's plus the database volume, run as the data's owner
RESTORE_SERVICE = "restore"
DB_SERVICE = "timescaledb"
#: where restore jobs and the server mount the database volume
DB_MOUNT = "/var/lib/postgresql/data"
#: Docker secret file -> file in LLMOBS_TLS_DIR (prod overlay)
TLS_FILES = {"TLS_CERT": "server.crt", "TLS_KEY": "server.key", "TLS_CA": "ca.crt"}
#: profile `ha`: PostgreSQL under Patroni behind db-proxy (docs/ha.md); its overlay, added last,
#: takes timescaledb out and points every client at db-proxy
HA_PROFILE = "ha"
HA_OVERLAY = "docker-compose.ha.yml"
#: the profile of db-3, enabled with `ha` when HA_NODES is 3
HA_THIRD_NODE_PROFILE = "ha-3"
_START_TIMEOUT_S = 300
_HINT = "see `llmobs logs SERVICE` and `llmobs status`; `llmobs doctor` checks the Docker engine"


def _data_owner(proc: subprocess.CompletedProcess[bytes], what: str) -> str:
    """The "UID:GID" that ``stat -c %u:%g`` printed; refused when it is root's, since restore
    jobs run as the owner of the data they replace, without any capability."""
    owner = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0 or not re.fullmatch(r"\d+:\d+", owner):
        raise LlmobsError(
            f"cannot tell who owns {what}: {(proc.stdout + proc.stderr).decode(errors='replace').strip()[-300:]}",
            hint=_HINT,
        )
    if owner.startswith("0:"):
        raise LlmobsError(
            f"{what} belongs to root; restore jobs would need root",
            hint="its volume must come from an image that runs the server as its own user "
            "(the official postgres/timescaledb, redis and grafana images do)",
        )
    return owner


def _wait_for_proxy_dns() -> None:
    """Until the proxy's cached DNS answer has expired and its workers know the replicas as they
    are now. The proxy is never reloaded instead: a reload closes clients' idle kept-alive
    connections, and a request sent on one at that moment fails."""
    time.sleep(PROXY_DNS_TTL_S + 1)


#: A step run before the database container starts, passed in by a higher layer: the backup
#: layer's check for a restore that did not finish (``llmobs.backup.runner``).
BeforeDatabaseStart = Callable[["ComposeStack", Progress], None]


class ComposeStack(Stack):
    runtime = "compose"

    def __init__(
        self,
        settings: Settings,
        profiles: Sequence[str] = (),
        *,
        before_database_start: BeforeDatabaseStart | None = None,
    ) -> None:
        super().__init__(settings)
        self.before_database_start = before_database_start
        if settings.project_dir is None:
            raise LlmobsError("the compose runtime needs a project directory", hint="run `llmobs init` first")
        self.profiles = tuple(profiles)
        self.project = settings.get_str("COMPOSE_PROJECT_NAME")
        self.state_dir = settings.path("run", "compose")

    # -- compose plumbing -----------------------------------------------------------------------

    def compose_files(self) -> list[Path]:
        files = []
        for entry in self.settings.get_str("LLMOBS_COMPOSE_FILES").split(","):
            name = entry.strip()
            if not name:
                continue
            path = resource_dir("compose") / name if "/" not in name else self.settings.path(name)
            if not path.is_file():
                raise ConfigError("LLMOBS_COMPOSE_FILES", f"{name}: no such compose file ({path})")
            files.append(path)
        if not files:
            raise ConfigError("LLMOBS_COMPOSE_FILES", "names no compose file")
        if HA_PROFILE in self.profiles:
            files.append(resource_dir("compose") / HA_OVERLAY)
        return files

    def compose_env(self) -> dict[str, str]:
        """What compose interpolates the files with: every setting but the secrets, with the bind
        address in the form compose's port syntax takes."""
        env: dict[str, str] = {}
        for s in SETTINGS:
            if not s.secret:
                env[s.name] = self.settings.raw(s.name)
        if env.get("BIND_ADDRESS", "") in ("", "*"):
            env["BIND_ADDRESS"] = "0.0.0.0"
        env["COMPOSE_PROJECT_NAME"] = self.project
        env["LLMOBS_APP_ENV_FILE"] = str(self.state_dir / "app.env")
        env["LLMOBS_SECRETS_DIR"] = str(self.secrets_dir)
        return env

    def app_env(self) -> dict[str, str]:
        """Settings the api, collector and backup containers get as plain environment: every
        non-secret one (secrets reach them as Docker secrets and *_FILE variables)."""
        return {s.name: self.settings.raw(s.name) for s in SETTINGS if not s.secret}

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    def secret_files(self) -> dict[str, str]:
        """File name -> content of every Docker secret: each secret setting (empty when unset:
        the optional ones, such as SECRET_KEY_PREVIOUS, are still mounted), and boto3's
        credentials file from the AWS_* variables llmobs runs with."""
        files = {
            s.name: self.settings.secret(s.name) if self.settings.has_secret(s.name) else ""
            for s in SETTINGS
            if s.secret
        }
        files["AWS_CREDENTIALS"] = _aws_credentials(os.environ)
        files.update(self.tls_files())
        return files

    def tls_files(self) -> dict[str, str]:
        """The prod overlay's TLS files from LLMOBS_TLS_DIR, as secrets: copied, because the
        operator's key is usually readable by its owner only, and the containers' users differ."""
        tls_dir = self.settings.path(self.settings.get_str("LLMOBS_TLS_DIR") or "tls")
        files = {}
        for secret, name in TLS_FILES.items():
            path = tls_dir / name
            if path.is_file():
                try:
                    files[secret] = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ConfigError("LLMOBS_TLS_DIR", f"cannot read {path}: {exc}") from None
        return files

    def _write_secret_files(self) -> None:
        """The directory is private to its owner; the files are world-readable because a bind
        mount keeps their mode and the containers' users differ.

        A changed file is rewritten in place, not replaced: a bind mount holds on to the file it
        was created with, and what reads a secret again while it runs (Redis's healthcheck after
        a rotation) must see the new value. Servers read theirs once, at start."""
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.chmod(0o700)
        files = self.secret_files()
        for name in TLS_FILES.keys() - files.keys():
            (self.secrets_dir / name).unlink(missing_ok=True)
        for name, value in files.items():
            path = self.secrets_dir / name
            if not path.exists():
                write_private_file(path, value)
            elif path.read_text(encoding="utf-8") != value:
                path.chmod(0o600)
                with path.open("w", encoding="utf-8") as fh:
                    fh.write(value)
                    fh.flush()
                    os.fsync(fh.fileno())
            path.chmod(0o444)

    def _write_env_files(self) -> Path:
        self._write_secret_files()
        compose_env = self.state_dir / "compose.env"
        for path, values in ((compose_env, self.compose_env()), (self.state_dir / "app.env", self.app_env())):
            text = "# Written by llmobs before every compose command; edit the project's .env instead.\n"
            text += "".join(f"{k}={_env_quote(k, v)}\n" for k, v in values.items())
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                write_private_file(path, text)
        return compose_env

    @cached_property
    def docker(self) -> DockerClient:
        from python_on_whales import DockerClient

        return DockerClient(
            compose_files=[*self.compose_files()],
            compose_env_files=[self._write_env_files()],
            compose_project_name=self.project,
            compose_profiles=self.compose_profiles(),
        )

    def compose_profiles(self) -> list[str]:
        """The compose profiles: those enabled, and with `ha`, `ha-3` when HA_NODES is 3 (db-3)."""
        profiles = list(self.profiles)
        if HA_PROFILE in profiles and int(self.settings.get_str("HA_NODES")) >= 3:
            profiles.append(HA_THIRD_NODE_PROFILE)
        return profiles

    def compose_cmd(self) -> list[str]:
        """The `docker compose` command line with this project's files, env file and profiles."""
        return [str(a) for a in self.docker.client_config.docker_compose_cmd]

    def _compose(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """A compose subcommand through the raw CLI (bytes, stdin, exit codes). stdout and
        stderr are those of the command (compose's own progress lines are off)."""
        argv = [*self.compose_cmd(), "--progress", "quiet", *args]
        log.info("run: %s", shlex.join(argv))
        try:
            proc = subprocess.run(
                argv, env={**os.environ, **(env or {})}, input=input, timeout=timeout, capture_output=True
            )
        except FileNotFoundError:
            raise LlmobsError(
                "the docker command is not installed", hint="install Docker (scripts/docker-setup does it on Debian)"
            ) from None
        except subprocess.TimeoutExpired as exc:
            raise LlmobsError(f"docker compose {args[0]} did not finish within {timeout:g} s", hint=_HINT) from exc
        log.info("exit %d: docker compose %s", proc.returncode, args[0])
        if check and proc.returncode != 0:
            output = (proc.stdout + proc.stderr).decode(errors="replace")
            raise CommandError([*self.compose_cmd()[:1], "compose", *args], proc.returncode, output, hint=_HINT)
        return proc

    def _whales(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """A python-on-whales call, its failures turned into LlmobsError (no traceback)."""
        from python_on_whales.client_config import ClientNotFoundError
        from python_on_whales.exceptions import DockerException

        try:
            return call(*args, **kwargs)
        except ClientNotFoundError:
            raise LlmobsError(
                "the docker command is not installed", hint="install Docker (scripts/docker-setup does it on Debian)"
            ) from None
        except DockerException as exc:
            output = "\n".join(part for part in (exc.stdout, exc.stderr) if part)
            tail = "\n".join(output.strip().splitlines()[-12:])
            raise LlmobsError(f"docker compose {what} failed (exit {exc.return_code}):\n{tail}", hint=_HINT) from None

    @cached_property
    def config(self) -> dict[str, Any]:
        """The effective compose configuration (files, overlays, profiles, interpolation)."""
        return self._whales("config", self.docker.compose.config, return_json=True)

    @cached_property
    def full_config(self) -> dict[str, Any]:
        """The configuration with every profile enabled: all the project's volumes, including
        those only disabled services use (`docker compose config` leaves those out)."""
        from python_on_whales import DockerClient

        config = self.docker.client_config
        everything = DockerClient(
            compose_files=config.compose_files,
            compose_env_files=list(config.compose_env_files),
            compose_project_name=self.project,
            compose_profiles=["*"],
        )
        return self._whales("config", everything.compose.config, return_json=True)

    def volume_names(self) -> dict[str, str]:
        """Volume key in the compose file -> the engine's volume name (``<project>-db-data``)."""
        return {
            key: spec.get("name") or f"{self.project}_{key}"
            for key, spec in (self.full_config.get("volumes") or {}).items()
        }

    def network_name(self) -> str:
        spec = (self.config.get("networks") or {}).get("default") or {}
        return spec.get("name") or f"{self.project}_default"

    # -- Stack ----------------------------------------------------------------------------------

    def active_services(self) -> tuple[str, ...]:
        """Services of the effective configuration: base file, overlays and enabled profiles."""
        return tuple((self.config.get("services") or {}).keys())

    def available_services(self) -> tuple[str, ...]:
        active = set(self.active_services())
        return tuple(s.name for s in SERVICES if s.name in active)

    def start(self, services: Sequence[str], progress: Progress) -> None:
        if DB_SERVICE in services and self.before_database_start is not None:
            self.before_database_start(self, progress)  # e.g. a restore killed midway: old data back
        self.bring_up(services, progress)

    def bring_up(self, services: Sequence[str], progress: Progress, *, wait: bool = True) -> None:
        """`up` of the given services (and the proxy in front of api/collector); with ``wait``,
        until their healthchecks pass."""
        targets = self._targets(services)
        if not targets:
            return
        self._require_secrets()
        current = self._containers()
        idle = [s for s in targets if not any(c["State"] == "running" for c in current.get(s, []))]
        ensure_ports_free(self.settings, [k for s in idle for k in _port_keys(s)])
        progress.step(f"Starting {', '.join(targets)} (compose project {self.project})")
        waiting: dict[str, Any] = {"wait": True, "wait_timeout": _START_TIMEOUT_S} if wait else {}
        self._whales(
            "up",
            self.docker.compose.up,
            targets,
            detach=True,
            **waiting,
            scales=self._current_scales(current, targets),
            quiet=True,
        )
        progress.done(f"{', '.join(targets)} running")

    def stop(self, services: Sequence[str] | None = None, progress: Progress | None = None) -> None:
        progress = progress or SilentProgress()
        if services is None:
            progress.step(f"Stopping compose project {self.project}")
            self._whales("down", self.docker.compose.down, remove_orphans=True, quiet=True)
            progress.done("containers and network removed (volumes kept)")
            return
        targets = self._targets(services)
        progress.step(f"Stopping {', '.join(targets)}")
        self._whales("stop", self.docker.compose.stop, targets)
        progress.done(f"{', '.join(targets)} stopped")

    def restart(self, services: Sequence[str], progress: Progress) -> None:
        """Rolling restart of the api and collector: for each old replica, one new replica is
        started and healthy (with the current settings and secrets) before the old one stops.
        The proxy keeps the published ports open throughout. Grafana, pgAdmin and the backup
        scheduler, which read their secrets at start, are recreated. PostgreSQL and Redis are
        left alone: they change credentials online."""
        from python_on_whales.exceptions import DockerException

        wanted = [s for s in dict.fromkeys(services) if s in self.active_services()]
        apps = [s for s in wanted if s in PROXIED]
        others = [s for s in wanted if s not in PROXIED and s not in DATA_SERVICES and s != PROXY]
        if not apps and not others:
            return
        self._require_secrets()
        running = self._containers()
        others = [s for s in others if any(c.get("State") == "running" for c in running.get(s, []))]
        if others:
            progress.step(f"Recreating {', '.join(others)}")
            self._whales(
                "up",
                self.docker.compose.up,
                others,
                detach=True,
                wait=True,
                wait_timeout=_START_TIMEOUT_S,
                force_recreate=True,
                dependencies=False,
                quiet=True,
            )
            progress.done(f"{', '.join(others)} recreated")
        for name in apps:
            old = [c["Name"] for c in self._containers().get(name, []) if c.get("State") == "running"]
            if not old:
                raise LlmobsError(f"{name} is not running", hint="run `llmobs up` first")
            progress.step(f"Rolling restart of {name} ({len(old)} replica(s))")
            for container in old:
                self._whales(
                    "up",
                    self.docker.compose.up,
                    [name],
                    detach=True,
                    wait=True,
                    wait_timeout=_START_TIMEOUT_S,
                    scales={name: len(old) + 1},
                    recreate=False,
                    dependencies=False,
                    quiet=True,
                )
                try:
                    # After this every proxy worker knows the new replica and retries a refused
                    # connection to the old one there instead of failing.
                    _wait_for_proxy_dns()
                    self.docker.container.stop(container)
                    self.docker.container.remove(container, volumes=True)
                except DockerException as exc:
                    raise LlmobsError(f"cannot replace {container}: {(exc.stderr or '').strip()}", hint=_HINT) from None
            progress.done(f"{name} restarted, one replica at a time")

    def remove_data(self) -> list[str]:
        from python_on_whales.exceptions import DockerException

        running = [
            name for name, containers in self._containers().items() if any(c["State"] == "running" for c in containers)
        ]
        if running:
            raise LlmobsError(
                f"the stack is running ({', '.join(running)}): its volumes are in use", hint="run `llmobs down` first"
            )
        removed = []
        for volume in self.volume_names().values():
            try:
                self.docker.volume.remove(volume)
            except DockerException as exc:
                if "no such volume" in (exc.stderr or "").lower():
                    continue
                raise LlmobsError(f"cannot remove volume {volume}: {(exc.stderr or '').strip()}") from None
            removed.append(f"volume {volume}")
        return removed

    def states(self) -> dict[str, RuntimeState]:
        containers = self._containers()
        active = self.active_services()
        states: dict[str, RuntimeState] = {}
        for svc in SERVICES:
            if svc.name not in active:
                why = f"profile {svc.profile} not enabled" if svc.profile else "not in this compose configuration"
                states[svc.name] = RuntimeState("not available", detail=why)
        for name in active:
            states[name] = _state_of(containers.get(name, []))
        return states

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
        # `-e NAME` without a value: compose takes it from its own environment, so values
        # (possibly secret) never appear in a command line.
        env_args = [a for name in (env or {}) for a in ("-e", name)]
        return self._compose(["exec", "-T", *env_args, service, *argv], env=env, input=input, check=check)

    def run_job(
        self,
        argv: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """`llmobs ARGV` in a one-off container of the app image (the ``backup`` service's
        definition: its credentials, and the backup-data and wal-archive volumes at /backups and
        /wal-archive). ``mounts`` name volumes by their key in the compose file (``db-data``),
        by their full name, or are absolute host paths."""
        return self._compose(self._job_args(argv, mounts=mounts, env=env), env=env, check=check)

    def spawn_job(
        self,
        argv: Sequence[str],
        *,
        service: str = JOB_SERVICE,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """`llmobs ARGV` in a one-off container of ``service`` (``backup``, or ``restore`` with the
        database volume), running as ``user`` ("UID:GID") instead of the service's. Its stdin
        and stdout are pipes to us; its stderr is ours (what the operator sees)."""
        argv_full = [
            *self.compose_cmd(),
            "--progress",
            "quiet",
            *self._job_args(argv, service=service, user=user, env=env),
        ]
        log.info("run: %s", shlex.join(argv_full))
        try:
            return subprocess.Popen(
                argv_full, env={**os.environ, **(env or {})}, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        except FileNotFoundError:
            raise LlmobsError(
                "the docker command is not installed", hint="install Docker (scripts/docker-setup does it on Debian)"
            ) from None

    def _job_args(
        self,
        argv: Sequence[str],
        *,
        service: str = JOB_SERVICE,
        user: str | None = None,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """`run` arguments of a one-off job. `-e NAME` without a value: compose takes it from its
        own environment, so values never appear in a command line."""
        self._require_secrets()
        volumes = self.volume_names() if mounts else {}
        mount_args = [
            a
            for m in mounts
            for a in ("-v", f"{volumes.get(m.source, m.source)}:{m.target}{':ro' if m.read_only else ''}")
        ]
        env_args = [a for name in (env or {}) for a in ("-e", name)]
        user_args = ["--user", user] if user else []
        return ["run", "--rm", "--no-deps", "-T", *user_args, *mount_args, *env_args, service, *argv]

    def db_data_owner(self) -> str:
        """ "UID:GID" of PostgreSQL's data directory (the server's user: 70 in the official
        Alpine-based images, 999 in Debian-based ones), read from the running server, else from
        the root of the database volume (which its image creates owned by that user)."""
        if any(c.get("State") == "running" for c in self._containers().get(DB_SERVICE, [])):
            proc = self._compose(["exec", "-T", DB_SERVICE, "sh", "-c", 'stat -c %u:%g "$PGDATA"'], check=False)
            return _data_owner(proc, "PostgreSQL's data directory")
        return self.volume_owner(DB_MOUNT, "PostgreSQL's data directory")

    def volume_owner(self, path: str, what: str) -> str:
        """ "UID:GID" of ``path`` as a one-off container of the restore service sees it: the root of
        a volume it mounts there, which the server's image creates owned by the server's user.
        ``what`` names the data in messages."""
        proc = self._compose(
            ["run", "--rm", "--no-deps", "-T", "--entrypoint", "stat", RESTORE_SERVICE, "-c", "%u:%g", path],
            check=False,
        )
        return _data_owner(proc, what)

    def scale(self, replicas: Mapping[str, int], progress: Progress) -> None:
        for name, count in replicas.items():
            svc = SERVICES_BY_NAME.get(name)
            if svc is None or not svc.scalable:
                scalable = ", ".join(s.name for s in SERVICES if s.scalable)
                raise UsageError(f"{name} cannot be scaled; scalable services: {scalable}")
            if count < 0:
                raise UsageError(f"{name}: the number of replicas cannot be negative")
        self._require_secrets()
        current = self._containers()
        targets = [*replicas, PROXY]
        scales = {**self._current_scales(current, targets), **replicas}
        progress.step("Scaling " + ", ".join(f"{n} to {c}" for n, c in replicas.items()))
        self._whales(
            "up",
            self.docker.compose.up,
            targets,
            detach=True,
            wait=True,
            wait_timeout=_START_TIMEOUT_S,
            scales=scales,
            quiet=True,
            dependencies=False,
        )
        _wait_for_proxy_dns()  # new replicas get traffic from here on
        progress.done(", ".join(f"{n}: {c} replica(s)" for n, c in replicas.items()))

    def logs(self, service: str | None, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        if service is not None:
            self._check_known([service])
        args = ["logs", "--no-color"]
        if tail is not None:
            args += ["--tail", str(tail)]
        if follow:
            args.append("--follow")
        if service is not None and not (service in SERVICES_BY_NAME and SERVICES_BY_NAME[service].scalable):
            args.append("--no-log-prefix")
        if service is not None:
            args.append(service)
        proc = subprocess.Popen([*self.compose_cmd(), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                yield render_log_line(line.decode(errors="replace").rstrip("\n"))
            if proc.wait() != 0 and not follow:
                raise LlmobsError(f"docker compose logs exited with code {proc.returncode}", hint=_HINT)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)

    # -- helpers ----------------------------------------------------------------------------------

    def _check_known(self, services: Sequence[str]) -> None:
        active = self.active_services()
        for name in services:
            if name not in active:
                known = ", ".join(active)
                raise UsageError(f"unknown or disabled service {name!r}; services of this stack: {known}")

    def _targets(self, services: Sequence[str]) -> list[str]:
        """The services to act on: the given ones plus the proxy in front of api/collector."""
        self._check_known(services)
        targets = list(dict.fromkeys(services))
        if any(s in PROXIED for s in targets) and PROXY in self.active_services() and PROXY not in targets:
            targets.append(PROXY)
        return targets

    def _require_secrets(self) -> None:
        """Every generated secret the compose configuration hands to containers must be set (the
        message names the key, never the value); optional ones may be empty."""
        for spec in (self.config.get("secrets") or {}).values():
            name = Path(spec.get("file", "")).name if isinstance(spec, dict) else ""
            setting = SETTINGS_BY_NAME.get(name)
            if setting is not None and setting.generate:
                self.settings.secret(name)
            if name in TLS_FILES and not (self.secrets_dir / name).is_file():
                raise ConfigError(
                    "LLMOBS_TLS_DIR",
                    f"{TLS_FILES[name]} is missing: the compose files in use "
                    "(LLMOBS_COMPOSE_FILES) terminate TLS with it",
                    hint="put server.crt, server.key and ca.crt there (PEM)",
                )

    def _containers(self) -> dict[str, list[dict[str, Any]]]:
        """The project's service containers (not one-off jobs), by service."""
        proc = self._compose(["ps", "--all", "--format", "json"], timeout=60)
        by_service: dict[str, list[dict[str, Any]]] = {}
        for item in _json_items(proc.stdout.decode(errors="replace")):
            by_service.setdefault(item.get("Service", ""), []).append(item)
        for items in by_service.values():
            items.sort(key=lambda c: c.get("Name", ""))
        return by_service

    @staticmethod
    def _current_scales(current: Mapping[str, list[dict[str, Any]]], services: Sequence[str]) -> dict[str, int]:
        """Replica counts to keep: `up` would otherwise bring a scaled service back to one."""
        scales = {}
        for name in services:
            count = len(current.get(name, []))
            if SERVICES_BY_NAME.get(name) and SERVICES_BY_NAME[name].scalable and count > 1:
                scales[name] = count
        return scales


def _port_keys(service: str) -> tuple[str, ...]:
    if service == PROXY:
        return tuple(k for name in PROXIED for k in SERVICES_BY_NAME[name].port_keys)
    svc = SERVICES_BY_NAME.get(service)
    return () if svc is None or svc.name in PROXIED else svc.port_keys


def _state_of(containers: list[dict[str, Any]]) -> RuntimeState:
    if not containers:
        return RuntimeState("stopped")
    running = [c for c in containers if c.get("State") == "running"]
    healths = [c.get("Health") or "" for c in running]
    names = [c.get("Name", "") for c in containers]
    image = containers[0].get("Image")
    if running:
        state: State = "starting" if any(h in ("starting", "unhealthy") for h in healths) else "running"
        counted = {h: healths.count(h) for h in dict.fromkeys(healths) if h}
        detail = ", ".join(f"{n} {h}" for h, n in counted.items())
        return RuntimeState(
            state,
            replicas=len(running),
            desired=len(containers),
            containers=names,
            image=image,
            detail=f"containers: {detail}" if detail else "",
        )
    exited = [c for c in containers if c.get("State") in ("exited", "dead")]
    if exited:
        codes = ", ".join(str(c.get("ExitCode", "?")) for c in exited)
        return RuntimeState(
            "exited", desired=len(containers), containers=names, image=image, detail=f"exit code {codes}"
        )
    return RuntimeState(
        "starting" if any(c.get("State") == "restarting" for c in containers) else "stopped",
        desired=len(containers),
        containers=names,
        image=image,
    )


def _json_items(text: str) -> list[dict[str, Any]]:
    """`compose ps --format json` prints a JSON array (older) or one object per line (newer)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def _aws_credentials(environ: Mapping[str, str]) -> str:
    """A boto3 shared credentials file with the AWS keys of ``environ`` (empty without them)."""
    if not environ.get("AWS_ACCESS_KEY_ID") or not environ.get("AWS_SECRET_ACCESS_KEY"):
        return ""
    lines = [
        "[default]",
        f"aws_access_key_id = {environ['AWS_ACCESS_KEY_ID']}",
        f"aws_secret_access_key = {environ['AWS_SECRET_ACCESS_KEY']}",
    ]
    if environ.get("AWS_SESSION_TOKEN"):
        lines.append(f"aws_session_token = {environ['AWS_SESSION_TOKEN']}")
    return "\n".join(lines) + "\n"


def _env_quote(name: str, value: str) -> str:
    """A value for compose's env-file parser: single quotes keep it literal (no `$` expansion)."""
    if "'" in value or "\n" in value:
        raise ConfigError(name, "contains a single quote or a newline, which compose env files cannot carry")
    return f"'{value}'" if value else ""
