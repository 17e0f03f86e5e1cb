"""A job container asking the `llmobs` process that started it to act on the stack.

A restore in the compose runtime runs in a one-off container (it needs the volumes), but only
the host can stop and start the stack's services. The job writes one request per line on its
stdout, marked with ``PREFIX`` (``{"op": "stop", "services": ["api"]}``); the host performs it
and answers with one JSON line on the job's stdin (``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``). Every other line of stdout is the job's own output, passed
through. When the host goes away, stdin ends and every further request fails: the job stops
where it stands and leaves its journal for the next `llmobs up`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from typing import IO, Any

from llmobs.errors import LlmobsError

log = logging.getLogger(__name__)

PREFIX = b"@@llmobs-control@@ "

Handler = Callable[[str, dict[str, Any]], Any]


class HostChannel:
    """The job's side: requests to the host over stdout/stdin."""

    def __init__(self, out: IO[bytes] | None = None, into: IO[bytes] | None = None) -> None:
        self._out = out or sys.stdout.buffer
        self._in = into or sys.stdin.buffer
        self._gone = False

    def request(self, op: str, **args: Any) -> Any:
        if self._gone:
            raise HostGone()
        sys.stdout.flush()  # our own output so far goes before the request
        self._out.write(PREFIX + json.dumps({"op": op, **args}).encode() + b"\n")
        self._out.flush()
        line = self._in.readline()
        if not line:
            self._gone = True
            raise HostGone()
        answer = json.loads(line)
        if not answer.get("ok"):
            raise LlmobsError(f"{op} failed on the host: {answer.get('error')}")
        return answer.get("result")


class HostGone(LlmobsError):
    def __init__(self) -> None:
        super().__init__(
            "the llmobs command that started this job went away",
            hint="`llmobs up` finishes or undoes what the job left",
        )


def serve(proc: subprocess.Popen[bytes], handle: Handler, out: IO[bytes] | None = None) -> int:
    """The host's side: pass the job's output through and answer its requests until it exits.
    Returns its exit code."""
    out = out or sys.stdout.buffer
    assert proc.stdout is not None and proc.stdin is not None
    for line in proc.stdout:
        if not line.startswith(PREFIX):
            out.write(line)
            out.flush()
            continue
        request = json.loads(line[len(PREFIX) :])
        op = request.pop("op")
        try:
            answer = {"ok": True, "result": handle(op, request)}
        except LlmobsError as exc:
            answer = {"ok": False, "error": exc.message}
        log.info("job request %s %s -> %s", op, request, "ok" if answer["ok"] else answer["error"])
        try:
            proc.stdin.write(json.dumps(answer, default=str).encode() + b"\n")
            proc.stdin.flush()
        except BrokenPipeError:  # the job is gone: its exit code tells how
            break
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    return proc.wait()
