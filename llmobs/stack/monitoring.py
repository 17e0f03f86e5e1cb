"""The `monitoring` profile in the local runtime: Prometheus, Alertmanager and the PostgreSQL and
Redis exporters as processes of the project's supervisor, from Debian's packages.

Their configuration is written under ``run/monitoring/`` from the settings each time one starts
(so a restart picks up new ports or passwords). Prometheus and Alertmanager start through the
same entrypoints as the compose services (``monitoring/entrypoints/``), which write
``prometheus.yml`` (from ``prometheus.local.yml``: the api and collector through file_sd target
files the supervisor keeps current, the exporters, Alertmanager and itself), ``thresholds.yml``
(recording rules carrying settings the alert rules compare with) and ``alertmanager.yml`` (0600:
the webhook URL may hold a token); this module writes the PostgreSQL password file. The alert
rules and the exporter's queries ship in the wheel (``monitoring/``).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs.config import write_private_file
from llmobs.errors import LlmobsError
from llmobs.resources import resource_dir
from llmobs.stack.layout import LocalLayout

if TYPE_CHECKING:
    from llmobs.config import Settings

PROFILE = "monitoring"
MONITORING_SERVICES = ("prometheus", "alertmanager", "postgres-exporter", "redis-exporter")
BINARIES = {
    "prometheus": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "postgres-exporter": "prometheus-postgres-exporter",
    "redis-exporter": "prometheus-redis-exporter",
}
#: Debian package of each binary, for the hint when one is missing.
PACKAGES = {
    "prometheus": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "postgres-exporter": "prometheus-postgres-exporter",
    "redis-exporter": "prometheus-redis-exporter",
}
#: Text in each process's command line (with its start time, how a pid is known to be ours).
PROCESS_MARKERS = {
    "prometheus": "--storage.tsdb.path=",
    "alertmanager": "prometheus-alertmanager",
    "postgres-exporter": "prometheus-postgres-exporter",
    "redis-exporter": "prometheus-redis-exporter",
}
#: Settings the Prometheus and Alertmanager entrypoints read from their environment.
_ENTRYPOINT_SETTINGS = (
    "MONITORING_SCRAPE_INTERVAL_SECONDS",
    "BACKUP_MAX_AGE_HOURS",
    "ALERT_WEBHOOK_URL",
    "ALERT_EMAIL_TO",
    "ALERT_EMAIL_FROM",
    "ALERT_SMTP_SMARTHOST",
)
#: Jobs whose targets (one per replica) the supervisor writes for file_sd.
APP_TARGETS = ("api", "collector")


@dataclass(frozen=True)
class ProcessSpec:
    """How the supervisor starts one monitoring process."""

    argv: list[str]
    env: dict[str, str]


def monitoring_dir(layout: LocalLayout) -> Path:
    return layout.run / "monitoring"


def targets_path(layout: LocalLayout, job: str) -> Path:
    return monitoring_dir(layout) / "targets" / f"{job}.json"


def missing_binaries() -> list[str]:
    """Debian packages of the monitoring binaries not on PATH."""
    return [PACKAGES[s] for s, binary in BINARIES.items() if shutil.which(binary) is None]


def require_binaries() -> None:
    """Raise a clear error naming the packages to install when a binary is missing."""
    missing = missing_binaries()
    if missing:
        raise _missing_error(missing)


def _missing_error(packages: list[str]) -> LlmobsError:
    return LlmobsError(
        f"the monitoring profile needs {', '.join(packages)}, not installed here",
        hint=f"install them (Debian: `apt-get install {' '.join(packages)}`) or use the compose runtime",
    )


def _host_port(settings: Settings, key: str) -> str:
    """Where a client on this host reaches the port ``key`` (DB_HOST / REDIS_HOST for those)."""
    host = {"DB_PORT": settings.db_host, "REDIS_PORT": settings.redis_host}.get(key, settings.client_host)
    return f"[{host}]:{settings.get_int(key)}" if ":" in host else f"{host}:{settings.get_int(key)}"


def _listen(settings: Settings, key: str) -> str:
    bind = settings.get_str("BIND_ADDRESS")
    return f"[{bind}]:{settings.get_int(key)}" if ":" in bind else f"{bind}:{settings.get_int(key)}"


def local_volumes(layout: LocalLayout, settings: Settings) -> dict[str, Path]:
    """The local runtime's volumes (names as in compose) and a path on each, for the maintenance
    pass to measure (VolumeAlmostFull)."""
    backup_dir = settings.get_str("BACKUP_DIR")
    return {
        "db-data": layout.pgdata,
        "wal-archive": layout.wal_archive,
        # BACKUP_DIR relative to the project directory; an absolute one replaces it.
        "backup-data": layout.root / Path(backup_dir).expanduser() if backup_dir else layout.backups,
    }


def write_app_targets(layout: LocalLayout, settings: Settings, children: Mapping[str, list[dict[str, Any]]]) -> None:
    """The file_sd targets of the api and collector: one per replica, on the metrics port the
    supervisor gave it (``children``: the supervisor's records per service), labelled with its
    replica number. A replica that died keeps its target until it is restarted on a new port, so
    it shows as ``up == 0`` meanwhile."""
    host = settings.client_host
    host = f"[{host}]" if ":" in host else host
    for job in APP_TARGETS:
        groups = [
            {"targets": [f"{host}:{entry['metrics_port']}"], "labels": {"replica": str(entry["replica"])}}
            for entry in children.get(job, [])
            if entry.get("metrics_port")
        ]
        _write_if_changed(targets_path(layout, job), json.dumps(groups))


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def process_spec(service: str, settings: Settings, layout: LocalLayout) -> ProcessSpec:
    """Write the configuration ``service`` reads and return how to start it; LlmobsError when its
    binary is missing. Secrets go to 0600 files or the environment, never the arguments."""
    binary = shutil.which(BINARIES[service])
    if binary is None:
        raise _missing_error([PACKAGES[service]])
    run_dir = monitoring_dir(layout)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    entrypoints = resource_dir("monitoring") / "entrypoints"
    if service in ("prometheus", "alertmanager"):
        # The compose services' entrypoints write the configuration in both runtimes.
        env.update(
            LLMOBS_MONITORING_DIR=str(resource_dir("monitoring")),
            LLMOBS_MONITORING_RUN_DIR=str(run_dir),
            COMPOSE_PROJECT_NAME=settings.get_str("COMPOSE_PROJECT_NAME"),
            **{key: settings.raw(key) for key in _ENTRYPOINT_SETTINGS},
        )
    if service == "prometheus":
        env.update(
            LLMOBS_PROMETHEUS_TEMPLATE="prometheus.local.yml",
            LLMOBS_TARGET_ALERTMANAGER=_host_port(settings, "ALERTMANAGER_PORT"),
            LLMOBS_TARGET_POSTGRES_EXPORTER=_host_port(settings, "POSTGRES_EXPORTER_PORT"),
            LLMOBS_TARGET_REDIS_EXPORTER=_host_port(settings, "REDIS_EXPORTER_PORT"),
            LLMOBS_TARGET_PROMETHEUS=_host_port(settings, "PROMETHEUS_PORT"),
            PROMETHEUS_BIN=binary,
            PROMETHEUS_STORAGE=str(layout.data / "prometheus"),
            PROMETHEUS_LISTEN=_listen(settings, "PROMETHEUS_PORT"),
        )
        argv = ["/bin/sh", str(entrypoints / "prometheus-entrypoint.sh")]
    elif service == "alertmanager":
        env.update(
            ALERTMANAGER_BIN=binary,
            ALERTMANAGER_STORAGE=str(layout.data / "alertmanager"),
            ALERTMANAGER_LISTEN=_listen(settings, "ALERTMANAGER_PORT"),
        )
        argv = ["/bin/sh", str(entrypoints / "alertmanager-entrypoint.sh")]
    elif service == "postgres-exporter":
        password_file = run_dir / "postgres-password"
        write_private_file(password_file, settings.secret("DB_PASSWORD"))
        env.update(
            DATA_SOURCE_URI=f"{_host_port(settings, 'DB_PORT')}/{settings.get_str('DB_NAME')}?sslmode=disable",
            DATA_SOURCE_USER="postgres",
            DATA_SOURCE_PASS_FILE=str(password_file),
        )
        argv = [
            binary,
            f"--web.listen-address={_listen(settings, 'POSTGRES_EXPORTER_PORT')}",
            f"--extend.query-path={resource_dir('monitoring') / 'postgres-exporter' / 'queries.yml'}",
        ]
    elif service == "redis-exporter":
        env.update(
            REDIS_ADDR=f"redis://{_host_port(settings, 'REDIS_PORT')}",
            REDIS_USER=settings.get_str("REDIS_USER"),
            REDIS_PASSWORD=settings.secret("REDIS_PASSWORD"),
        )
        argv = [binary, f"-web.listen-address={_listen(settings, 'REDIS_EXPORTER_PORT')}"]
    else:
        raise LlmobsError(f"{service} is not a monitoring service")
    return ProcessSpec(argv, env)


def firing_alerts(settings: Settings, *, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The active, unsilenced alerts Alertmanager holds (its v2 API): name, severity, summary,
    since, labels. Raises OSError (URLError) when Alertmanager does not answer."""
    url = f"http://{_host_port(settings, 'ALERTMANAGER_PORT')}/api/v2/alerts?active=true&silenced=false&inhibited=false"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        alerts = json.loads(resp.read())
    return [
        {
            "name": a["labels"].get("alertname", "?"),
            "severity": a["labels"].get("severity", ""),
            "summary": a.get("annotations", {}).get("summary", ""),
            "since": a.get("startsAt"),
            "labels": a["labels"],
        }
        for a in alerts
    ]
