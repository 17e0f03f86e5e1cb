"""Errors that the CLI turns into a message and an exit code instead of a traceback.

Exit codes are shared by every command so that scripts can rely on them:

* 0 success
* 1 the operation failed (a service did not come up, a backup did not verify, ...)
* 2 bad input: invalid configuration or arguments
* 3 another run holds the lock (``llmobs backup`` from cron)
* 4 the operator declined a confirmation
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ALREADY_RUNNING = 3
EXIT_ABORTED = 4


class LlmobsError(Exception):
    """An expected failure: shown as ``error: message`` (plus an optional hint), never as a traceback."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(LlmobsError):
    """A setting is missing or invalid. The message names the key and never contains a secret value."""

    exit_code = EXIT_USAGE

    def __init__(self, key: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{key}: {problem}", hint=hint)
        self.key = key


class UsageError(LlmobsError):
    exit_code = EXIT_USAGE


class AlreadyRunning(LlmobsError):
    exit_code = EXIT_ALREADY_RUNNING


class Aborted(LlmobsError):
    exit_code = EXIT_ABORTED


class CommandError(LlmobsError):
    """An external command (pg_ctl, initdb, docker, ...) exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, output: str, *, hint: str | None = None) -> None:
        name = argv[0].rsplit("/", 1)[-1] if argv else "command"
        tail = "\n".join(output.strip().splitlines()[-15:])
        message = f"{name} exited with code {returncode}"
        if tail:
            message += f":\n{tail}"
        super().__init__(message, hint=hint)
        self.argv = argv
        self.returncode = returncode
        self.output = output
