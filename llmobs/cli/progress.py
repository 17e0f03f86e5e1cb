"""Progress on the terminal: a spinner on the current step and a line per finished step; plain
lines without colour when output is not a terminal (cron, CI, pipes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status


class ConsoleProgress:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Status | None = None

    def __enter__(self) -> ConsoleProgress:
        if self.console.is_terminal:
            self._status = self.console.status("")
            self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def step(self, message: str) -> None:
        if self._status is not None:
            self._status.update(escape(message) + " ...")
        else:
            self.console.print(f"{message} ...", markup=False)

    def done(self, message: str) -> None:
        if self.console.is_terminal:
            self.console.print(f"[green]✓[/] {escape(message)}")
        else:
            self.console.print(f"ok: {message}", markup=False)

    def warn(self, message: str) -> None:
        if self.console.is_terminal:
            self.console.print(f"[yellow]![/] {escape(message)}")
        else:
            self.console.print(f"warning: {message}", markup=False)
