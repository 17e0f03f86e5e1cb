"""One backup operation at a time per backup directory.

An advisory ``flock`` on ``BACKUP_DIR/.lock``: the kernel drops it when the holder exits, even
on kill -9, so a crash never leaves a stale lock. Containers of the compose runtime share it
through the backup volume. A second run gets AlreadyRunning (exit code 3) naming the holder
(its pid and host: in a container, the container's id).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmobs.errors import AlreadyRunning


@contextmanager
def backup_lock(path: Path, operation: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, writable = os.open(path, os.O_RDWR | os.O_CREAT, 0o660), True
    except PermissionError:
        # A restore job of the compose runtime runs as PostgreSQL's user: it may only read a lock
        # file that a backup job created, and flock works on a read-only descriptor too.
        fd, writable = os.open(path, os.O_RDONLY), False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"another backup operation is running ({_holder(fd)})",
                hint="wait for it to finish; this run did nothing",
            ) from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(
                fd,
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "operation": operation,
                        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    }
                ).encode(),
                0,
            )
        try:
            yield
        finally:
            if writable:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        where = f" on {info['host']}" if info.get("host") else ""
        return f"{info['operation']}, pid {info['pid']}{where}, since {info['since']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"
