"""`llmobs secrets rotate`: the plan, the run, and finishing a run that was killed.

One rotation covers several targets with a single rolling restart:

1. plan: journal written (``run/rotation.json``), the rotation log's baseline, checks that the
   stack is up and that no rotated secret is overridden by the environment;
2. stage: every new value into ``.env`` as ``NAME_NEXT`` before any server changes;
3. per target, the overlap: new credentials valid on the servers while the old ones still work,
   then ``.env`` switched (database, Redis, JWT key). The api is the server of the JWT key: a
   rolling restart right after staging makes every replica accept the staged key (``SECRET_KEY_NEXT``)
   before any replica signs with it;
4. one rolling restart of the api and collector, one replica at a time;
5. the old credentials closed (old app role, old Redis password), Grafana (compose);
6. final check: every service healthy with the new credentials, the old ones refused;
7. finish: rotation log, audit log, retired values dropped from ``.env``, journal removed.

The journal records each finished step; a rerun skips those and redoes the one under way.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs.config import SETTINGS_BY_NAME, Settings, generate_secret
from llmobs.errors import ConfigError, LlmobsError
from llmobs.progress import SilentProgress
from llmobs.secrets import grafana_admin, history, jwt_key, patroni_auth, postgres_roles, redis_acl
from llmobs.secrets.catalog import expand_targets, secrets_of
from llmobs.secrets.context import RotationContext, Step
from llmobs.secrets.journal import RotationJournal, rotation_lock
from llmobs.secrets.store import SecretStore
from llmobs.stack import ha
from llmobs.stack.lifecycle import wait_healthy
from llmobs.stack.local import LocalStack
from llmobs.stack.runtime import get_stack, resolve_runtime
from llmobs.store import audit

if TYPE_CHECKING:
    from llmobs.progress import Progress
    from llmobs.stack.base import Stack

log = logging.getLogger(__name__)

#: Fault injection for tests: ``secrets:<step>`` makes the rotation SIGKILL itself right after
#: that step's change and before the journal records it (the worst moment to die).
FAILPOINT_ENV = "LLMOBS_FAILPOINT"
_APP_SERVICES = ("collector", "api")
#: services that read database passwords only when they start: Grafana's datasource (readonly
#: role), the backup scheduler and the PostgreSQL exporter (superuser). The stack recreates them.
_DB_READERS_AT_START = ("grafana", "backup", "postgres-exporter")
#: services that read the Redis password only when they start
_REDIS_READERS_AT_START = ("redis-exporter",)


@dataclass
class RotationResult:
    rotation_ids: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    resumed: bool = False
    restarted: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def rotate(
    project_dir: Path, requested: Sequence[str], progress: Progress, *, environ: dict[str, str] | None = None
) -> RotationResult:
    """Rotate the secrets of ``requested`` targets (``all`` for every one), first finishing a
    rotation that a crash interrupted."""
    targets = expand_targets(requested)
    store = SecretStore(project_dir, environ)
    result = RotationResult()
    with rotation_lock(project_dir):
        journal = RotationJournal.read(project_dir)
        covered: list[str] = []
        if journal is not None:
            result.resumed = True
            progress.warn(
                f"finishing the rotation of {', '.join(journal.targets)} started at {journal.started_at} "
                "that did not complete"
            )
            _run(RotationContext(project_dir, store, journal, progress), result)
            covered = journal.targets
        remaining = [t for t in targets if t not in covered]
        if remaining:
            journal = _plan(project_dir, store, remaining, progress, result)
            if journal is not None:
                _run(RotationContext(project_dir, store, journal, progress), result)
    return result


# -- plan ----------------------------------------------------------------------------------------


def _plan(
    project_dir: Path, store: SecretStore, targets: list[str], progress: Progress, result: RotationResult
) -> RotationJournal | None:
    settings = Settings.load(project_dir, environ=store.environ)
    runtime = resolve_runtime(settings)
    stack = get_stack(settings, runtime)
    if "grafana" in targets:
        reason = _grafana_unavailable(stack)
        if reason:
            targets = [t for t in targets if t != "grafana"]
            result.skipped["grafana"] = reason
            progress.warn(f"{reason}: GRAFANA_ADMIN_PASSWORD is not rotated")
    for target, reason in _ha_skips(stack, targets).items():
        targets = [t for t in targets if t != target]
        result.skipped[target] = reason
        progress.warn(f"{reason}: {', '.join(secrets_of([target]))} not rotated")
    if not targets:
        return None
    names = secrets_of(targets)
    store.check_rotatable(_rewritten_keys(targets, names))
    _preflight(stack, settings, targets, progress)
    app_user = settings.get_str("DB_APP_USER")
    journal = RotationJournal(
        id=uuid.uuid4().hex[:12],
        started_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
        runtime=runtime,
        targets=targets,
        secrets=names,
        project_dir=str(project_dir),
        app_user_from=app_user if "db" in targets else None,
        app_user_to=postgres_roles.other_app_role(app_user) if "db" in targets else None,
        ha=_ha_profile(stack),
    )
    history.ensure_baseline(project_dir)
    journal.save()
    progress.done(f"rotation {journal.id} of {', '.join(targets)} planned ({stack.runtime} runtime)")
    return journal


def _grafana_unavailable(stack: Stack) -> str | None:
    """Why Grafana's password cannot be rotated here, if it cannot: it changes inside the running
    Grafana, so a Grafana that does not run keeps its password (and .env keeps matching it)."""
    if "grafana" not in stack.available_services():
        return f"Grafana does not run in the {stack.runtime} runtime" + (
            "" if stack.runtime == "local" else " of this project (not among its services)"
        )
    state = stack.states().get("grafana")
    if state is None or state.state != "running":
        return "Grafana is not running (start it with `llmobs up grafana`, then rotate it)"
    return None


def _ha_skips(stack: Stack, targets: list[str]) -> dict[str, str]:
    """Targets this stack cannot rotate, and why: ``ha`` without the profile's nodes."""
    if "ha" in targets and not _ha_profile(stack):
        return {"ha": "the stack does not run the `ha` profile (`llmobs up --profile ha`)"}
    return {}


def _ha_profile(stack: Stack) -> bool:
    return stack.runtime == "compose" and ha.enabled(stack)


def _rewritten_keys(targets: list[str], names: list[str]) -> list[str]:
    keys = list(names)
    if "db" in targets:
        keys.append("DB_APP_USER")
    if "jwt" in targets:
        keys += ["SECRET_KEY_PREVIOUS", "SECRET_KEY_PREVIOUS_UNTIL", "SECRET_KEY_NEXT"]
    return keys


def _preflight(stack: Stack, settings: Settings, targets: list[str], progress: Progress) -> None:
    """The stack must be up (the servers change credentials online), and services must not hold
    rotated secrets in their environment (they would never see the new values)."""

    database = ha.nodes(stack) if _ha_profile(stack) else ["timescaledb"]
    needed = [*database, *(["redis"] if "redis" in targets else [])]
    if "grafana" in targets:
        needed.append("grafana")
    states = stack.states()
    down = [s for s in needed if s not in states or states[s].state not in ("running", "starting")]
    try:
        if down:
            raise LlmobsError(f"{', '.join(down)} not running")
        wait_healthy(stack, settings, needed, SilentProgress(), timeout=15)
    except LlmobsError as exc:
        raise LlmobsError(
            f"the stack must be up to rotate secrets: {exc.message}",
            hint="start it with `llmobs up`; nothing was changed",
        ) from None
    _check_service_environment(stack, targets)
    progress.done(f"{', '.join(needed)} up")


def _check_service_environment(stack: Stack, targets: list[str]) -> None:
    if not isinstance(stack, LocalStack):
        return
    pid = stack.supervisor_pid()
    if pid is None:
        return
    import psutil

    try:
        environ = psutil.Process(pid).environ()
    except (psutil.Error, OSError):
        return
    for key in _rewritten_keys(targets, secrets_of(targets)):
        for name in (key, f"{key}_FILE"):
            if name in environ:
                raise ConfigError(
                    name,
                    "is in the environment the api and collector were started with, which "
                    "overrides .env: they would never use the new value",
                    hint="restart the stack without it (`llmobs down && llmobs up`), then rotate",
                )


# -- run -----------------------------------------------------------------------------------------


def rotation_steps(targets: Sequence[str], *, ha_profile: bool = False) -> list[Step]:
    """The steps of a rotation of ``targets``, in order; with ``ha_profile`` (the stack runs the
    `ha` profile) Patroni's nodes take the new superuser password right after ``.env`` has it."""
    steps = [Step("stage", "Generating the new secrets", _stage)]
    if "jwt" in targets:
        steps += jwt_key.accept_steps()
    if "db" in targets:
        steps += postgres_roles.steps(patroni_auth.superuser_steps() if ha_profile else ())
    if "redis" in targets:
        steps += redis_acl.steps()
    if "jwt" in targets:
        steps += jwt_key.steps()
    if _restart_targets(targets):
        steps.append(Step("restart", "Rolling restart", _restart))
    if "db" in targets:
        steps += postgres_roles.after_restart_steps()
    if "redis" in targets:
        steps += redis_acl.after_restart_steps()
    if "grafana" in targets:
        steps += grafana_admin.steps()
    if "ha" in targets:
        steps += patroni_auth.steps()
    steps += [
        Step("verify", "Checking the new and the old credentials", _verify),
        Step("finish", "Recording the rotation", _finish),
    ]
    return steps


def _run(ctx: RotationContext, result: RotationResult) -> None:
    journal = ctx.journal
    for step in rotation_steps(journal.targets, ha_profile=journal.ha):
        if step.name in journal.done:
            continue
        ctx.progress.step(step.title)
        step.run(ctx)
        _failpoint(step.name)
        if step.name == "finish":
            journal.remove()
        else:
            journal.mark(step.name)
    result.rotation_ids.append(journal.id)
    result.targets += journal.targets
    result.secrets += journal.secrets
    result.checks += ctx.checks
    result.warnings += ctx.warnings
    result.restarted = sorted(set(result.restarted) | set(journal.restarted))


def _failpoint(step: str) -> None:
    if os.environ.get(FAILPOINT_ENV) == f"secrets:{step}":
        log.warning("failpoint %s reached: killing this process", step)
        os.kill(os.getpid(), signal.SIGKILL)


def _stage(ctx: RotationContext) -> None:
    ctx.store.stage({name: generate_secret(SETTINGS_BY_NAME[name]) for name in ctx.journal.secrets})
    ctx.progress.done(f"new values staged in .env for {', '.join(ctx.journal.secrets)}")


def _restart_targets(targets: Sequence[str]) -> list[str]:
    services = list(_DB_READERS_AT_START) if "db" in targets else []
    services += list(_REDIS_READERS_AT_START) if "redis" in targets else []
    if "db" in targets or "redis" in targets:
        return [*_APP_SERVICES, *services]
    return ["api"] if "jwt" in targets else []


def _restart(ctx: RotationContext) -> None:
    if "redis" in ctx.journal.targets:
        redis_acl.ensure_in_use_accepted(ctx)
    services = ctx.running(_restart_targets(ctx.journal.targets))
    if not services:
        ctx.warn("no service to restart is running: they use the new secrets when they start")
        return
    ctx.journal.restarted = services
    ctx.rolling_restart(services)


def _verify(ctx: RotationContext) -> None:
    stack = ctx.stack()
    services = ctx.running(stack.available_services())
    wait_healthy(stack, ctx.settings(), services, SilentProgress(), timeout=120)
    ctx.check(f"healthy: {', '.join(services)}")
    targets = ctx.journal.targets
    if "db" in targets:
        postgres_roles.verify(ctx)
        if ctx.journal.ha and (swapped_at := ctx.journal.swapped_at.get("DB_PASSWORD")):
            patroni_auth.verify_superuser(ctx, swapped_at)
    if "redis" in targets:
        redis_acl.verify(ctx)
    if "jwt" in targets:
        jwt_key.verify(ctx)
    if "grafana" in targets:
        grafana_admin.verify(ctx)
    if "ha" in targets:
        patroni_auth.verify(ctx)


def _finish(ctx: RotationContext) -> None:
    journal = ctx.journal
    now = datetime.now(UTC).isoformat()
    actor = audit.cli_actor()
    history.record_rotated(
        ctx.project_dir, journal.id, {n: journal.swapped_at.get(n, now) for n in journal.secrets}, actor
    )
    try:
        with postgres_roles.admin_connection(ctx) as conn:
            seen = conn.execute(
                "SELECT 1 FROM audit_log WHERE action = 'secrets.rotate' AND details->>'rotation_id' = %s",
                (journal.id,),
            ).fetchone()
            if not seen:
                audit.record(
                    conn,
                    "secrets.rotate",
                    actor=actor,
                    target=",".join(journal.secrets),
                    source=audit.cli_source(),
                    details={
                        "rotation_id": journal.id,
                        "targets": journal.targets,
                        "runtime": journal.runtime,
                        "started_at": journal.started_at,
                        "app_user": journal.app_user_to,
                    },
                )
    except LlmobsError as exc:
        ctx.warn(f"could not write the audit record: {exc.message}")
    ctx.store.forget_retired(journal.secrets)
    dropped = jwt_key.drop_expired_previous(ctx.store)
    if dropped:
        ctx.progress.done(f"dropped the previous JWT key (its grace period ended {dropped.isoformat()})")
    ctx.progress.done(f"rotated {', '.join(journal.secrets)}")
