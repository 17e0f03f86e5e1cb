"""Whether this process is a job container of the compose runtime: a fact most backup modules
ask, kept apart so that none of them needs the runner (which needs them)."""

from __future__ import annotations

import os

IN_JOB_ENV = "LLMOBS_BACKUP_IN_JOB"


def in_job() -> bool:
    """True inside a job container of the compose runtime (its compose service sets it)."""
    return os.environ.get(IN_JOB_ENV) == "1"
