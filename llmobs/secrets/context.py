"""What every rotation step gets: the project, its secrets, the journal, progress.

Settings and the stack are built afresh on each use: the steps rewrite ``.env`` as they go, and
each later step (and each service restarted) must see the new values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.config import Settings
from llmobs.secrets.store import redis_passwords_in_play
from llmobs.stack.lifecycle import wait_healthy
from llmobs.stack.runtime import get_stack

if TYPE_CHECKING:
    from llmobs.progress import Progress
    from llmobs.secrets.journal import RotationJournal
    from llmobs.secrets.store import SecretStore
    from llmobs.stack.base import Stack


@dataclass
class RotationContext:
    project_dir: Path
    store: SecretStore
    journal: RotationJournal
    progress: Progress
    warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def settings(self) -> Settings:
        return Settings.load(self.project_dir, environ=self.store.environ)

    def stack(self) -> Stack:
        return get_stack(self.settings(), self.journal.runtime, redis_passwords=redis_passwords_in_play)

    def running(self, services: Sequence[str]) -> list[str]:
        """Those of ``services`` that run now (api and collector may be stopped or scaled to 0)."""
        states = self.stack().states()
        return [s for s in services if s in states and states[s].state in ("running", "starting")]

    def rolling_restart(self, services: Sequence[str]) -> None:
        """Replace ``services`` one replica at a time, each new one started with ``.env`` as it is
        now, and wait until they are healthy."""

        stack = self.stack()
        stack.restart(services, self.progress)
        wait_healthy(stack, self.settings(), services, self.progress, timeout=120)

    def swap(self, name: str, **kwargs: object) -> bool:
        """Put the staged value of ``name`` into use (see SecretStore.swap) and note when."""
        swapped = self.store.swap(name, **kwargs)  # type: ignore[arg-type]
        if swapped:
            self.journal.swapped_at[name] = datetime.now(UTC).isoformat()
            self.journal.save()
        return swapped

    def warn(self, message: str) -> None:
        self.progress.warn(message)
        self.warnings.append(message)

    def check(self, message: str) -> None:
        """A final check passed."""
        self.progress.done(message)
        self.checks.append(message)


@dataclass(frozen=True)
class Step:
    """One change with an effect outside this process. Running it again after it (or a part of
    it) already ran must do no harm: a rotation killed in the middle redoes its current step."""

    name: str
    title: str
    run: Callable[[RotationContext], None]
