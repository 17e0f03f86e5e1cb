"""How long-running logic reports progress without knowing about terminals.

The CLI passes a rich-backed implementation; tests and cron pass a plain or silent one.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def step(self, message: str) -> None:
        """A new step has started."""

    def done(self, message: str) -> None:
        """The current step ended well; ``message`` says how."""

    def warn(self, message: str) -> None:
        """Something the operator should know, that does not stop the work."""


class SilentProgress:
    def step(self, message: str) -> None:
        pass

    def done(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


class LogProgress:
    """Progress as log records (servers, schedulers)."""

    def __init__(self, logger_name: str = "llmobs") -> None:
        import logging

        self._log = logging.getLogger(logger_name)

    def step(self, message: str) -> None:
        self._log.info("%s ...", message)

    def done(self, message: str) -> None:
        self._log.info("%s", message)

    def warn(self, message: str) -> None:
        self._log.warning("%s", message)
