"""`llmobs doctor`: what each runtime needs, checked on this machine, with a fix for each gap."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from llmobs.errors import LlmobsError
from llmobs.stack.ports import port_in_use
from llmobs.stack.postgres import PgBinaries
from llmobs.stack.runtime import docker_engine_answers

if TYPE_CHECKING:
    from llmobs.config import Settings

Verdict = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    scope: str  # "general", "local", "compose"
    name: str
    verdict: Verdict
    detail: str
    hint: str = ""


def _python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check(
        "general",
        "python",
        "ok" if ok else "fail",
        sys.version.split()[0],
        "" if ok else "llmobs needs Python 3.11 or newer",
    )


def _local_checks(settings: Settings | None) -> list[Check]:
    checks = []
    try:
        binaries = PgBinaries.find(settings.get_str("PG_BIN_DIR") if settings else "")
        checks.append(Check("local", "postgresql", "ok", f"PostgreSQL {binaries.major} in {binaries.bin_dir}"))
    except LlmobsError as exc:
        checks.append(Check("local", "postgresql", "fail", exc.message, exc.hint or ""))
    redis = shutil.which("redis-server")
    checks.append(
        Check(
            "local",
            "redis-server",
            "ok" if redis else "fail",
            redis or "not found",
            "" if redis else "apt-get install redis-server",
        )
    )
    checks.append(_monitoring_check())
    if os.geteuid() == 0:
        user = settings.get_str("PG_OS_USER") if settings else "postgres"
        import pwd

        try:
            pwd.getpwnam(user)
            checks.append(Check("local", "postgres os user", "ok", f"running as root: PostgreSQL runs as {user}"))
        except KeyError:
            checks.append(
                Check(
                    "local",
                    "postgres os user",
                    "fail",
                    f"OS user {user!r} does not exist",
                    "useradd --system --home /var/lib/postgresql postgres, or set PG_OS_USER",
                )
            )
        if settings and settings.project_dir:
            blocked = _untraversable(settings.project_dir)
            if blocked:
                checks.append(
                    Check(
                        "local",
                        "project dir access",
                        "fail",
                        f"{blocked} is not traversable by other users",
                        f"chmod o+x {blocked}, or put the project elsewhere (e.g. /srv)",
                    )
                )
    return checks


def _monitoring_check() -> Check:
    """The `monitoring` profile's binaries: optional, so a gap is a warning."""
    from llmobs.stack.monitoring import missing_binaries

    missing = missing_binaries()
    if not missing:
        return Check("local", "monitoring profile", "ok", "Prometheus, Alertmanager and both exporters installed")
    return Check(
        "local",
        "monitoring profile",
        "warn",
        f"not installed: {', '.join(missing)} (only `--profile monitoring` needs them)",
        f"apt-get install {' '.join(missing)}",
    )


def _untraversable(path: Path) -> Path | None:
    for parent in (path, *path.parents):
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return parent
    return None


def _compose_checks() -> list[Check]:
    import subprocess

    checks = []
    docker = shutil.which("docker")
    checks.append(
        Check(
            "compose",
            "docker client",
            "ok" if docker else "fail",
            docker or "not found",
            "" if docker else "apt-get install docker.io (or Docker's docker-ce-cli)",
        )
    )
    engine = docker_engine_answers()
    checks.append(
        Check(
            "compose",
            "docker engine",
            "ok" if engine else "fail",
            "answers" if engine else "no engine answers on DOCKER_HOST or /var/run/docker.sock",
            "" if engine else "start it (`systemctl start docker`, or scripts/docker-setup here)",
        )
    )
    if docker:
        proc = subprocess.run([docker, "compose", "version", "--short"], capture_output=True, text=True)
        ok = proc.returncode == 0
        checks.append(
            Check(
                "compose",
                "compose plugin",
                "ok" if ok else "fail",
                f"Docker Compose {proc.stdout.strip()}" if ok else "missing",
                "" if ok else "install the compose plugin (scripts/docker-setup does it from PyPI)",
            )
        )
    return checks


def _port_checks(settings: Settings, running: bool) -> list[Check]:
    checks = []
    bind = settings.get_str("BIND_ADDRESS")
    for key, port in settings.ports().items():
        taken = port_in_use(bind, port)
        if taken and running:
            checks.append(Check("general", f"port {key}", "ok", f"{port} in use (the stack is running)"))
        elif taken:
            checks.append(
                Check(
                    "general",
                    f"port {key}",
                    "warn",
                    f"{port} on {bind} is in use",
                    f"stop what uses it or change {key}",
                )
            )
        else:
            checks.append(Check("general", f"port {key}", "ok", f"{port} free"))
    return checks


def _disk_check(path: Path) -> Check:
    free = shutil.disk_usage(path).free
    gib = free / 2**30
    if gib < 1:
        return Check("general", "disk space", "fail", f"{gib:.1f} GiB free in {path}", "free some space")
    if gib < 5:
        return Check(
            "general",
            "disk space",
            "warn",
            f"{gib:.1f} GiB free in {path}",
            "spans, WAL and backups grow: keep 5 GiB or more free",
        )
    return Check("general", "disk space", "ok", f"{gib:.0f} GiB free in {path}")


def run_checks(settings: Settings | None, *, stack_running: bool = False) -> list[Check]:
    checks = [_python()]
    checks += _local_checks(settings)
    checks += _compose_checks()
    if settings is not None:
        checks += _port_checks(settings, stack_running)
    checks.append(_disk_check(settings.project_dir if settings and settings.project_dir else Path.cwd()))
    return checks


def runtime_ready(checks: list[Check], runtime: str) -> bool:
    return not any(c.verdict == "fail" and c.scope in ("general", runtime) for c in checks)
