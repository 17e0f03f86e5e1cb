"""The services of the stack. Their names are part of the interface (compose service names,
`llmobs logs SERVICE`, `llmobs scale SERVICE=N`, status output)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmobs.errors import UsageError

Probe = Literal["postgres", "redis", "http"]


@dataclass(frozen=True)
class Service:
    name: str
    description: str
    probe: Probe
    #: settings naming the ports it publishes, in display order
    port_keys: tuple[str, ...]
    #: HTTP path probed for health (probe "http"), on the first port key unless health_port_key says
    health_path: str = ""
    health_port_key: str = ""
    #: "data": started first and bootstrapped; "app": our servers; "ui": third-party web UIs
    tier: Literal["data", "app", "ui"] = "app"
    #: compose profile that enables it (None: always on)
    profile: str | None = None
    #: runs in the local runtime
    local: bool = True
    #: can be scaled to several replicas
    scalable: bool = False


SERVICES: tuple[Service, ...] = (
    Service("timescaledb", "PostgreSQL (TimescaleDB when available)", "postgres", ("DB_PORT",), tier="data"),
    Service("redis", "Redis: rate limits, cache, pub/sub", "redis", ("REDIS_PORT",), tier="data"),
    # Profile `ha` (compose only, docs/ha.md): PostgreSQL under Patroni instead of timescaledb.
    # db-proxy is probed like the single server (a login through the write port reaches the
    # leader); the nodes and etcd by their containers' healthchecks.
    Service("etcd", "etcd: Patroni's configuration store", "http", (), tier="data", profile="ha", local=False),
    Service("db-1", "PostgreSQL under Patroni", "http", (), tier="data", profile="ha", local=False),
    Service("db-2", "PostgreSQL under Patroni", "http", (), tier="data", profile="ha", local=False),
    # with HA_NODES=3 only (compose profile `ha-3`, which llmobs enables then)
    Service("db-3", "PostgreSQL under Patroni", "http", (), tier="data", profile="ha", local=False),
    Service(
        "db-proxy",
        "HAProxy: write port to the Patroni leader, read port to the replicas",
        "postgres",
        ("DB_PORT", "DB_READ_PORT"),
        tier="data",
        profile="ha",
        local=False,
    ),
    Service(
        "collector",
        "OTLP collector (gRPC and HTTP)",
        "http",
        ("COLLECTOR_GRPC_PORT", "COLLECTOR_HTTP_PORT", "COLLECTOR_METRICS_PORT"),
        health_path="/health",
        health_port_key="COLLECTOR_METRICS_PORT",
        scalable=True,
    ),
    Service("api", "REST/GraphQL API", "http", ("API_PORT",), health_path="/health", scalable=True),
    # Compose only: publishes the api and collector ports and balances their replicas. Probed
    # through them (a healthy api/collector answer passes through it).
    Service("proxy", "Reverse proxy in front of api and collector replicas", "http", (), tier="app", local=False),
    # Compose only: the local runtime's supervisor runs the same loop itself.
    Service("maintenance", "Database upkeep (`llmobs db maintain --every`)", "http", (), tier="app", local=False),
    Service(
        "grafana", "Grafana dashboards", "http", ("GRAFANA_PORT",), health_path="/api/health", tier="ui", local=False
    ),
    Service(
        "pgadmin",
        "pgAdmin",
        "http",
        ("PGADMIN_PORT",),
        health_path="/misc/ping",
        tier="ui",
        profile="admin",
        local=False,
    ),
    Service(
        "backup", "Backup scheduler (`llmobs backup schedule`)", "http", (), tier="app", profile="backup", local=False
    ),
    # Profile `monitoring`: in the local runtime, Debian's binaries under the supervisor.
    Service(
        "prometheus",
        "Prometheus: scrapes the stack, evaluates the alert rules",
        "http",
        ("PROMETHEUS_PORT",),
        health_path="/-/healthy",
        profile="monitoring",
    ),
    Service(
        "alertmanager",
        "Alertmanager: routes alerts to ALERT_WEBHOOK_URL / e-mail",
        "http",
        ("ALERTMANAGER_PORT",),
        health_path="/-/healthy",
        profile="monitoring",
    ),
    Service(
        "postgres-exporter",
        "PostgreSQL metrics for Prometheus",
        "http",
        ("POSTGRES_EXPORTER_PORT",),
        health_path="/",
        profile="monitoring",
    ),
    Service(
        "redis-exporter",
        "Redis metrics for Prometheus",
        "http",
        ("REDIS_EXPORTER_PORT",),
        health_path="/health",
        profile="monitoring",
    ),
)

SERVICES_BY_NAME: dict[str, Service] = {s.name: s for s in SERVICES}
DATA_SERVICES = tuple(s.name for s in SERVICES if s.tier == "data")
APP_SERVICES = ("collector", "api")


def service(name: str) -> Service:
    try:
        return SERVICES_BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown service {name!r}; services are: {', '.join(SERVICES_BY_NAME)}") from None
