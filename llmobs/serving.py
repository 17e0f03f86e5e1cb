"""What both servers (api, collector) need from their host: sockets that replicas can share,
and telling the supervisor when they are ready to serve.

Replicas of one service on one host listen on the same port with SO_REUSEPORT; the kernel
spreads new connections across them. A supervisor that replaces a replica starts the new one
first and stops the old one only after the new one said it is ready, so the port never closes.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import signal
import socket
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmobs.config import Settings

log = logging.getLogger(__name__)

READY_FD_ENV = "LLMOBS_READY_FD"
#: set by the local runtime's supervisor in its children: its pid
SUPERVISOR_PID_ENV = "LLMOBS_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1
#: set by the local runtime's supervisor: this replica's own metrics port (see serve_replica_metrics)
REPLICA_METRICS_PORT_ENV = "LLMOBS_REPLICA_METRICS_PORT"


def listening_socket(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A bound, listening TCP socket with SO_REUSEPORT (several replicas share the port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    # connections whose socket says TCP. With it on, a response written in two parts waits for
    # the client's delayed ACK: 40 ms on every request of a kept-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def serve_replica_metrics(host: str, registry: Any = None) -> None:
    """Serve ``/metrics`` of ``registry`` (default: the process's) on this replica's own port,
    from a daemon thread, when the supervisor gave one (LLMOBS_REPLICA_METRICS_PORT): replicas
    share their service ports, so Prometheus needs one port per replica to scrape each. A port
    that cannot be bound costs only that scrape target (logged), never the replica."""
    port = os.environ.get(REPLICA_METRICS_PORT_ENV)
    if not port:
        return
    from prometheus_client import REGISTRY, start_http_server

    try:
        start_http_server(int(port), addr=host, registry=registry or REGISTRY)
    except (OSError, ValueError) as exc:
        log.warning("cannot serve this replica's metrics on port %s: %s", port, exc)


def notify_ready() -> None:
    """Tell the supervisor (if one started us) that every listener is up. Idempotent."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if not fd:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except (OSError, ValueError) as exc:
        log.warning("could not notify the supervisor: %s", exc)


def die_with_supervisor() -> None:
    """When the local runtime's supervisor started us, have the kernel send us SIGTERM when it
    dies, even by kill -9: a server must not outlive it unseen (a new supervisor would start a
    second set on the shared ports). SIGTERM is the ordinary stop: the collector drains its queue.
    Raises SystemExit when the supervisor is already gone. Without prctl (not Linux), `up` and
    `down` still stop orphans through the supervisor's pid records."""
    value = os.environ.pop(SUPERVISOR_PID_ENV, None)  # not for our own children
    if not value:
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("could not ask to be stopped with the supervisor: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != int(value):
        raise SystemExit(f"the supervisor (pid {value}) that started this server is gone")


def exec_with_supervisor(argv: list[str]) -> None:
    """Become the program ``argv`` (exec, same pid) after :func:`die_with_supervisor`: how the
    supervisor runs binaries that cannot ask for that themselves (Prometheus, the exporters). The
    death signal survives exec (not into a setuid or file-capability binary). Raises SystemExit
    when the supervisor is already gone, OSError when ``argv`` cannot be run."""
    die_with_supervisor()
    os.execvp(argv[0], argv)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LLMOBS_LOG_FORMAT=json): time (UTC, ISO 8601), level, service,
    pid, logger, message and, with a traceback, exception. ``llmobs logs`` renders it readably
    (``render_log_line``)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def render_log_line(line: str) -> str:
    """A JSON log line (JsonFormatter), alone or after a ``name | `` prefix (`docker compose
    logs`), as the text format shows it; any other line unchanged."""
    if not line.startswith("{"):
        head, sep, rest = line.partition("| ")
        return head + sep + render_log_line(rest) if sep and rest.startswith("{") else line
    try:
        entry = json.loads(line)
        text = (
            f"{entry['time']} {entry['service']}[{entry['pid']}] {entry['level'].upper()} "
            f"{entry['logger']}: {entry['message']}"
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return line
    return text + (f"\n{entry['exception']}" if entry.get("exception") else "")


_json_logs = False


def uvicorn_log_config() -> dict[str, Any] | None:
    """uvicorn's ``log_config``: its own (text) handlers, or none with JSON logs, so that its
    records reach the root logger's JSON handler."""
    from uvicorn.config import LOGGING_CONFIG

    return None if _json_logs else LOGGING_CONFIG


def setup_logging(settings: Settings, role: str) -> None:
    """Log lines on stderr that name the server and its process, at ``LLMOBS_LOG_LEVEL``, as
    text or JSON (``LLMOBS_LOG_FORMAT``). The connection pool and uvicorn say something at INFO
    on every request: kept to warnings."""
    global _json_logs
    level = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}[
        settings.get_str("LLMOBS_LOG_LEVEL")
    ]
    handler = logging.StreamHandler(sys.stderr)
    _json_logs = settings.get_str("LLMOBS_LOG_FORMAT") == "json"
    if _json_logs:
        handler.setFormatter(JsonFormatter(role))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {role}[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn", "uvicorn.error", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def tune_gc() -> None:
    """Call once start-up is done. Each request (or span) makes dozens of short-lived containers,
    and the default collection threshold (700) then runs the cyclic GC thousands of times a
    second, now and then over every long-lived object (modules, the app, queued rows): a full
    collection of a started API process takes about 50 ms, a stall for every request in flight.
    Freezing what exists after start-up and collecting young objects less often saves about a
    tenth of the collector's CPU per span (bench/ingest.py) and those stalls."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


if __name__ == "__main__":  # python -m llmobs.serving PROGRAM ARGS...: see exec_with_supervisor
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m llmobs.serving PROGRAM [ARGS...]")
    exec_with_supervisor(sys.argv[1:])
