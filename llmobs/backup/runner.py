"""Where backup and restore commands run: here (the local runtime, or inside a job container of
the compose runtime), or delegated from the host into a one-off container of the compose
runtime, which has the volumes mounted and reaches PostgreSQL on the stack's network.

Backup jobs run from the ``backup`` service's definition as the app user (1001). Restore jobs
run from the ``restore`` service's, which adds the database, Redis and Grafana volumes, as the
owner of the data they replace (``--user UID:GID``): the files they write belong to the
server's user without any privilege to change owners. Jobs ask the host to stop and start
services (``control.py``).

A restore leaves a marker in the project's ``run/compose/`` while it runs. If it does not end
well (the job was killed, or this process), the host, or else the next `llmobs up`, runs a job
that finishes or undoes what the journal in the volume says (as the local runtime does before
starting PostgreSQL).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs.backup.control import HostChannel, serve
from llmobs.backup.job_env import IN_JOB_ENV, in_job
from llmobs.backup.manifest import backup_type_of
from llmobs.backup.sites import ComposeJobSite, HaComposeJobSite, LocalStackSite
from llmobs.errors import (
    EXIT_ABORTED,
    EXIT_ALREADY_RUNNING,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    AlreadyRunning,
    LlmobsError,
)
from llmobs.progress import Progress, SilentProgress
from llmobs.stack import ha
from llmobs.stack.compose import JOB_SERVICE, RESTORE_SERVICE, ComposeStack
from llmobs.stack.local import LocalStack
from llmobs.stack.runtime import get_stack, resolve_runtime

if TYPE_CHECKING:
    from llmobs.backup.sites import Site
    from llmobs.config import Settings
    from llmobs.stack.local import RedisPasswords

#: exit codes of a restore job that changed nothing (refused, locked out, declined)
_UNTOUCHED = (EXIT_USAGE, EXIT_ALREADY_RUNNING, EXIT_ABORTED)


def runs_here(settings: Settings) -> bool:
    """True when this process does the work itself."""
    if in_job():
        return True

    return resolve_runtime(settings) == "local"


def _compose_stack(settings: Settings) -> ComposeStack:
    stack = get_stack(settings)
    if not isinstance(stack, ComposeStack):
        raise LlmobsError("this command delegates to the compose runtime, but the stack runs locally")
    return stack


def _run_job(stack: ComposeStack, argv: Sequence[str], *, db_owner: str | None = None) -> int:
    """`llmobs ARGV` in a job container, serving its requests; its output is ours. With
    ``db_owner`` ("UID:GID"), a restore job running as that user. Returns its exit code."""

    proc = stack.spawn_job(
        list(argv), service=RESTORE_SERVICE if db_owner else JOB_SERVICE, user=db_owner, env={IN_JOB_ENV: "1"}
    )
    try:
        return serve(proc, lambda op, args: _handle(stack, op, args))
    finally:
        if proc.poll() is None:  # we are leaving early (an exception, ^C): the job sees stdin end
            proc.terminate()
            proc.wait(timeout=30)


def _handle(stack: ComposeStack, op: str, args: dict[str, Any]) -> Any:
    """A job's request (see control.py)."""
    if op == "states":
        return {name: state.state for name, state in stack.states().items()}
    if op == "stop":
        stack.stop(list(args["services"]), SilentProgress())
        return None
    if op == "start":
        stack.bring_up(list(args["services"]), SilentProgress(), wait=bool(args.get("wait", True)))
        return None
    if op == "ha-forget-cluster":
        ha.forget_cluster(stack)
        return None
    if op == "ha-nodes":
        return ha.nodes(stack)
    if op == "ha-members":
        return [m.to_dict() for m in ha.members(stack)]
    raise LlmobsError(f"unknown request {op!r}")


def delegate(settings: Settings, argv: Sequence[str], *, as_db_owner: bool = False) -> int:
    """Run `llmobs ARGV` in a one-off job container; returns its exit code (3: another backup
    operation holds the lock). ``as_db_owner``: a restore job (database volume, its owner)."""
    stack = _compose_stack(settings)
    return _run_job(stack, argv, db_owner=stack.db_data_owner() if as_db_owner else None)


def restore_marker(stack: ComposeStack) -> Path:
    return stack.state_dir / "restore.pending"


def delegate_restore(
    settings: Settings, argv: Sequence[str], progress: Progress, *, backup_id: str | None = None
) -> int:
    """Run `llmobs restore ...` (of ``backup_id``, if one is named) in a restore job. When it did
    not end well, finish or undo what it left, then start again the services that ran before.
    Returns its exit code."""
    stack = _compose_stack(settings)
    marker = restore_marker(stack)
    had_marker = marker.exists()
    owner = _restore_job_owner(stack, backup_id)
    running = [name for name, state in stack.states().items() if state.state in ("running", "starting")]
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.getpid()}\n")
    code = _run_job(stack, argv, db_owner=owner)
    if code == EXIT_OK or (code in _UNTOUCHED and not had_marker):
        marker.unlink(missing_ok=True)
    elif code not in _UNTOUCHED:
        progress.warn(f"the restore job ended with code {code}; making sure the previous data is in place")
        finish_interrupted_restore(stack, progress)
        stack.start(running, progress)
        if code != EXIT_FAILURE:  # killed: it could not say so itself
            raise LlmobsError(
                f"the restore job ended abruptly (exit code {code}); the data from before the "
                "restore is in place and the services that ran are running again"
            )
    return code


#: where restore jobs find the data a Redis or Grafana restore replaces (the restore service's
#: environment names the mount points)
_SERVICE_DATA_SETTINGS = {"redis": "BACKUP_REDIS_DATA_DIR", "grafana": "BACKUP_GRAFANA_DATA_DIR"}


def _restore_job_owner(stack: ComposeStack, backup_id: str | None) -> str:
    """ "UID:GID" a restore job runs as: the owner of the data it replaces, Redis's or Grafana's
    volume for their backups, PostgreSQL's data directory otherwise."""

    kind = backup_type_of(backup_id) if backup_id else None
    setting = _SERVICE_DATA_SETTINGS.get(kind or "")
    environment = (stack.full_config.get("services") or {}).get(RESTORE_SERVICE, {}).get("environment") or {}
    mount = environment.get(setting) if setting else None
    if kind is None or not mount:  # without the mount, the job says the restore is unavailable
        return stack.db_data_owner()
    return stack.volume_owner(mount, f"{kind.capitalize()}'s data")


def finish_interrupted_restore(stack: ComposeStack, progress: Progress) -> None:
    """Before the database starts: when a restore did not finish (its marker is left), a job
    undoes it from its journal (or drops the journal of one that was verified)."""
    marker = restore_marker(stack)
    if not marker.exists():
        return
    progress.step("Checking the journal of an unfinished restore")
    code = _run_job(stack, ["backup", "finish-restore"], db_owner=stack.db_data_owner())
    if code == EXIT_ALREADY_RUNNING:
        raise AlreadyRunning("a restore is running in this stack", hint="wait for it to finish, then retry")
    if code != EXIT_OK:
        raise LlmobsError(
            f"the job that finishes an interrupted restore failed (exit code {code})",
            hint="see its messages above; the previous data directory is kept aside, never deleted",
        )
    marker.unlink(missing_ok=True)


def restore_site(settings: Settings, *, redis_passwords: RedisPasswords | None = None) -> Site:
    """The site a restore acts on: inside a compose job, the mounted volume and the host's
    services; else the local runtime's cluster, whose Redis accepts ``redis_passwords`` when the
    restore starts it (see ``LocalStack``)."""
    if in_job():
        if settings.get_str("BACKUP_REPLICAS_DIR"):
            return HaComposeJobSite(settings, HostChannel())
        return ComposeJobSite(settings, HostChannel())
    stack = get_stack(settings, redis_passwords=redis_passwords)
    if not isinstance(stack, LocalStack):
        raise LlmobsError("unexpected runtime object")
    return LocalStackSite(stack)
