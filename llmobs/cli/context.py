"""What every command gets: the project directory, settings, and a console to render on.

Kept light: importing this must not import any server library (``llmobs --help`` stays fast).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from llmobs.config import Settings


@dataclass
class CliContext:
    project_dir_option: Path | None = None
    json_output: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    @cached_property
    def project_dir(self) -> Path:
        from llmobs.config import find_project_dir

        return find_project_dir(self.project_dir_option)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from llmobs.config import Settings

            self._settings = Settings.load(self.project_dir)
            setup_file_logging(self._settings)
            self._warn_unknown_keys()
        return self._settings

    def _warn_unknown_keys(self) -> None:
        """Misspelt keys in ``.env``: a warning on stderr (machine output on stdout stays clean).
        Not an error: the stack runs on the defaults, as it would without the key."""
        from rich.markup import escape

        from llmobs.config import ENV_FILE, read_env_file, unknown_env_keys

        for warning in unknown_env_keys(read_env_file(self.project_dir / ENV_FILE)):
            logging.getLogger("llmobs.config").warning("%s", warning)
            self.err_console.print(f"[yellow]warning:[/] {escape(warning)}")

    @cached_property
    def console(self) -> Console:
        return make_console(stderr=False)

    @cached_property
    def err_console(self) -> Console:
        return make_console(stderr=True)


def make_console(*, stderr: bool) -> Console:
    """A console on stdout or stderr. Without a terminal (cron, pipes, logs) lines are never
    wrapped (a message stays one line for grep) and tables get 160 columns instead of rich's 80."""
    from rich.console import Console

    terminal = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, highlight=False, width=None if terminal else 160, soft_wrap=not terminal)


def ctx_obj(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliContext):
        obj = CliContext()
        ctx.find_root().obj = obj
    return obj


def setup_file_logging(settings: Settings) -> None:
    """Log every external command and step to ``logs/llmobs.log`` of the project."""
    if settings.project_dir is None or getattr(setup_file_logging, "_done", False):
        return
    setup_file_logging._done = True  # type: ignore[attr-defined]
    from llmobs.config import open_private_log  # lazy, as every import of this module (`--help` speed)

    log_dir = settings.project_dir / "logs"
    try:
        log_dir.mkdir(exist_ok=True)
        open_private_log(log_dir / "llmobs.log").close()  # 0600: it names what every command did
        handler = logging.FileHandler(log_dir / "llmobs.log")
    except OSError:
        return
    handler.setFormatter(logging.Formatter(f"%(asctime)s [cli {os.getpid()}] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if settings.get_str("LLMOBS_LOG_LEVEL") == "debug" else logging.INFO)


def is_interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def command_group(help: str) -> typer.Typer:
    """A sub-command group (`llmobs db ...`). Plain help formatting: rich's help renderer costs
    more start-up time than `--help` may take."""
    return typer.Typer(
        help=help, no_args_is_help=True, rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]}
    )
