"""Where a backup command runs: here (the local runtime, or already inside a job container of
the compose runtime), or delegated into a one-off container of the compose runtime, which has
the backup and WAL volumes mounted and reaches PostgreSQL on the stack's network."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.errors import EXIT_ALREADY_RUNNING, AlreadyRunning, LlmobsError, UsageError

if TYPE_CHECKING:
    from llmobs.backup.sites import LocalStackSite
    from llmobs.config import Settings

IN_JOB_ENV = "LLMOBS_BACKUP_IN_JOB"


def runs_here(settings: Settings) -> bool:
    """True when this process does the work itself."""
    if os.environ.get(IN_JOB_ENV) == "1" or Path("/.dockerenv").exists():
        return True
    from llmobs.stack.runtime import resolve_runtime

    return resolve_runtime(settings) == "local"


def delegate(settings: Settings, argv: Sequence[str]) -> int:
    """Run ``llmobs ARGV`` in a one-off job container; its output goes to ours. Returns its exit
    code (AlreadyRunning keeps its own code)."""
    from llmobs.stack.runtime import get_stack

    stack = get_stack(settings)
    proc = stack.run_job(list(argv), env={IN_JOB_ENV: "1"}, check=False)
    sys.stdout.buffer.write(proc.stdout or b"")
    sys.stdout.flush()
    if proc.returncode == EXIT_ALREADY_RUNNING:
        raise AlreadyRunning("another backup operation is running in the compose stack")
    return proc.returncode


def local_site(settings: Settings) -> LocalStackSite:
    """The site a restore acts on in the local runtime."""
    from llmobs.backup.sites import LocalStackSite
    from llmobs.stack.runtime import get_stack

    stack = get_stack(settings)
    if stack.runtime != "local":
        raise UsageError("restores of the compose runtime are not available from this command yet",
                         hint="restore with the local runtime, or see docs/backup.md for the manual steps")
    from llmobs.stack.local import LocalStack

    if not isinstance(stack, LocalStack):
        raise LlmobsError("unexpected runtime object")
    return LocalStackSite(stack)
