"""The secrets `llmobs secrets` rotates, grouped by the target names of the command line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llmobs.errors import UsageError

#: rotation order: the database first (its superuser is what the rest of the run logs in with)
TARGETS = ("db", "redis", "jwt", "grafana", "ha")


@dataclass(frozen=True)
class RotatedSecret:
    name: str
    target: str
    what: str


SECRETS: tuple[RotatedSecret, ...] = (
    RotatedSecret("DB_PASSWORD", "db", "PostgreSQL superuser `postgres`"),
    RotatedSecret("DB_READONLY_PASSWORD", "db", "PostgreSQL role `llmobs_readonly` (Grafana)"),
    RotatedSecret("DB_APP_PASSWORD", "db", "PostgreSQL app login role (api, collector)"),
    RotatedSecret("REDIS_PASSWORD", "redis", "Redis ACL user (api, collector)"),
    RotatedSecret("SECRET_KEY", "jwt", "JWT signing key (api)"),
    RotatedSecret("GRAFANA_ADMIN_PASSWORD", "grafana", "Grafana `admin` user"),
    RotatedSecret("DB_REPLICATION_PASSWORD", "ha", "PostgreSQL replication user `replicator` (profile `ha`)"),
    RotatedSecret("PATRONI_REST_PASSWORD", "ha", "Patroni REST API user `patroni` (profile `ha`)"),
)


def expand_targets(names: Iterable[str]) -> list[str]:
    """Targets in rotation order; ``all`` means every one."""
    wanted: set[str] = set()
    for name in names:
        if name == "all":
            wanted.update(TARGETS)
        elif name in TARGETS:
            wanted.add(name)
        else:
            raise UsageError(f"unknown secret {name!r}; choose from: {', '.join(TARGETS)}, all")
    if not wanted:
        raise UsageError(f"name what to rotate: {', '.join(TARGETS)} or all")
    return [t for t in TARGETS if t in wanted]


def secrets_of(targets: Iterable[str]) -> list[str]:
    chosen = set(targets)
    return [s.name for s in SECRETS if s.target in chosen]
