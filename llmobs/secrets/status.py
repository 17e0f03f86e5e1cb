"""`llmobs secrets status`: how old each secret is, from the rotation log, and what needs doing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmobs.config import ENV_FILE
from llmobs.secrets import history
from llmobs.secrets.catalog import SECRETS
from llmobs.secrets.journal import RotationJournal


@dataclass
class SecretAge:
    name: str
    target: str
    what: str
    #: when the value in use was set: its rotation, else the baseline or the .env file's time
    since: datetime | None
    #: rotated | baseline | estimated (no log yet: the time .env was last written)
    source: str
    age_days: float | None
    #: False when the runtime does not use it (Grafana in the local runtime): no age warning
    in_use: bool
    warning: str | None = None


@dataclass
class SecretsStatus:
    runtime: str
    max_age_days: int
    secrets: list[SecretAge]
    jwt_previous_until: datetime | None = None
    pending_rotation: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "max_age_days": self.max_age_days,
            "secrets": [asdict(s) for s in self.secrets],
            "jwt_previous_until": self.jwt_previous_until,
            "pending_rotation": self.pending_rotation,
            "warnings": self.warnings,
            "ok": not self.warnings,
        }


def secrets_status(
    project_dir: Path, *, runtime: str, max_age_days: int, jwt_previous_until: str = "", now: datetime | None = None
) -> SecretsStatus:
    now = now or datetime.now(UTC)
    latest = history.last_change(project_dir)
    try:
        env_written: datetime | None = datetime.fromtimestamp((project_dir / ENV_FILE).stat().st_mtime, UTC)
    except OSError:
        env_written = None
    status = SecretsStatus(runtime, max_age_days, [])
    for s in SECRETS:
        entry = latest.get(s.name)
        since, source = (entry.at, entry.event) if entry else (env_written, "estimated")
        age = (now - since).total_seconds() / 86400 if since else None
        # the local runtime has neither Grafana nor the `ha` profile's Patroni nodes
        in_use = not (s.target in ("grafana", "ha") and runtime == "local")
        item = SecretAge(s.name, s.target, s.what, since, source, round(age, 2) if age is not None else None, in_use)
        if in_use and age is not None and age > max_age_days:
            item.warning = (
                f"{s.name} ({s.what}) is {age:.0f} days old, older than SECRETS_MAX_AGE_DAYS="
                f"{max_age_days}: run `llmobs secrets rotate {s.target}`"
            )
            status.warnings.append(item.warning)
        status.secrets.append(item)
    if jwt_previous_until:
        try:
            until = datetime.fromisoformat(jwt_previous_until.replace("Z", "+00:00"))
            status.jwt_previous_until = until if until.tzinfo else until.replace(tzinfo=UTC)
        except ValueError:
            status.warnings.append("SECRET_KEY_PREVIOUS_UNTIL is not an ISO 8601 time")
    journal = RotationJournal.read(project_dir)
    if journal is not None:
        status.pending_rotation = {
            "id": journal.id,
            "started_at": journal.started_at,
            "targets": journal.targets,
            "steps_done": len(journal.done),
        }
        status.warnings.append(
            f"the rotation of {', '.join(journal.targets)} started at {journal.started_at} "
            f"did not finish: run `llmobs secrets rotate {' '.join(journal.targets)}` to "
            "finish it"
        )
    return status
