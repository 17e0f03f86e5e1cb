"""The `monitoring` profile in the local runtime: Prometheus, Alertmanager and the PostgreSQL and
Redis exporters as processes of the project's supervisor, from Debian's packages.

Their configuration is written under ``run/monitoring/`` from the settings each time one starts
(so a restart picks up new ports or passwords): ``prometheus.yml`` (scrapes the api and
collector through file_sd target files the supervisor keeps current, the exporters, Alertmanager
and itself), ``thresholds.yml`` (recording rules carrying settings the alert rules compare with),
``alertmanager.yml`` (0600: the webhook URL may hold a token) and the PostgreSQL password file.
The alert rules and the exporter's queries ship in the wheel (``monitoring/``).
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

import yaml

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


def scrape_interval(settings: Settings) -> str:
    return f"{settings.get_int('MONITORING_SCRAPE_INTERVAL_SECONDS')}s"


def thresholds_rules(settings: Settings) -> dict[str, Any]:
    """Recording rules that carry settings into PromQL (the alert rules compare with them)."""
    max_age = settings.get_int("BACKUP_MAX_AGE_HOURS") * 3600
    return {
        "groups": [
            {
                "name": "llmobs-settings",
                "rules": [{"record": "llmobs:backup_max_age_seconds", "expr": f"vector({max_age})"}],
            }
        ]
    }


def prometheus_config(settings: Settings, layout: LocalLayout) -> dict[str, Any]:
    """Prometheus configuration of the local runtime."""
    interval = settings.get_int("MONITORING_SCRAPE_INTERVAL_SECONDS")
    rules = resource_dir("monitoring") / "prometheus"

    def static(job: str, key: str) -> dict[str, Any]:
        return {"job_name": job, "static_configs": [{"targets": [_host_port(settings, key)]}]}

    return {
        "global": {
            "scrape_interval": f"{interval}s",
            "evaluation_interval": f"{interval}s",
            "scrape_timeout": f"{min(interval, 10)}s",
            "external_labels": {"project": settings.get_str("COMPOSE_PROJECT_NAME")},
        },
        "rule_files": [str(rules / "alerts.yml"), str(monitoring_dir(layout) / "thresholds.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [_host_port(settings, "ALERTMANAGER_PORT")]}]}]},
        "scrape_configs": [
            *(
                {
                    "job_name": job,
                    "file_sd_configs": [
                        {"files": [str(targets_path(layout, job))], "refresh_interval": f"{interval}s"}
                    ],
                }
                for job in APP_TARGETS
            ),
            static("postgres-exporter", "POSTGRES_EXPORTER_PORT"),
            static("redis-exporter", "REDIS_EXPORTER_PORT"),
            static("alertmanager", "ALERTMANAGER_PORT"),
            static("prometheus", "PROMETHEUS_PORT"),
        ],
    }


def alertmanager_config(settings: Settings) -> dict[str, Any]:
    """One receiver: the webhook (ALERT_WEBHOOK_URL) and, when set, e-mail; with neither, alerts
    are only listed (Alertmanager's API, `llmobs status`). Alerts wait one scrape interval to be
    grouped, and resolved ones are sent too."""
    receiver: dict[str, Any] = {"name": "llmobs"}
    webhook = settings.get_str("ALERT_WEBHOOK_URL")
    if webhook:
        receiver["webhook_configs"] = [{"url": webhook, "send_resolved": True}]
    to, smarthost = settings.get_str("ALERT_EMAIL_TO"), settings.get_str("ALERT_SMTP_SMARTHOST")
    if to and smarthost:
        receiver["email_configs"] = [
            {
                "to": to,
                "from": settings.get_str("ALERT_EMAIL_FROM"),
                "smarthost": smarthost,
                "send_resolved": True,
                "require_tls": False,
            }
        ]
    interval = scrape_interval(settings)
    return {
        "route": {
            "receiver": "llmobs",
            "group_by": ["alertname", "job"],
            "group_wait": interval,
            "group_interval": "1m",
            "repeat_interval": "4h",
        },
        "receivers": [receiver],
    }


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
    if service == "prometheus":
        _write_if_changed(run_dir / "thresholds.yml", yaml.safe_dump(thresholds_rules(settings)))
        _write_if_changed(run_dir / "prometheus.yml", yaml.safe_dump(prometheus_config(settings, layout)))
        argv = [
            binary,
            f"--config.file={run_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={layout.data / 'prometheus'}",
            f"--web.listen-address={_listen(settings, 'PROMETHEUS_PORT')}",
            "--storage.tsdb.retention.time=15d",
        ]
    elif service == "alertmanager":
        write_private_file(run_dir / "alertmanager.yml", yaml.safe_dump(alertmanager_config(settings)))
        argv = [
            binary,
            f"--config.file={run_dir / 'alertmanager.yml'}",
            f"--storage.path={layout.data / 'alertmanager'}",
            f"--web.listen-address={_listen(settings, 'ALERTMANAGER_PORT')}",
            "--cluster.listen-address=",  # a single instance: no gossip port
        ]
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
