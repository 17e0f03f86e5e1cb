"""Reading service log files: the last lines, then (optionally) following them. JSON lines
(LLMOBS_LOG_FORMAT=json) are shown as the text format shows them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from llmobs.serving import render_log_line


def tail_lines(path: Path, count: int | None) -> tuple[list[str], int]:
    """The last ``count`` lines of ``path`` (all when None) and the offset after them."""
    try:
        with path.open("rb") as fh:
            if count is None:
                data = fh.read()
                return data.decode(errors="replace").splitlines(), fh.tell()
            size = fh.seek(0, os.SEEK_END)
            block, data = 8192, b""
            while size > 0 and data.count(b"\n") <= count:
                step = min(block, size)
                size -= step
                fh.seek(size)
                data = fh.read(step) + data
                block *= 2
            end = fh.seek(0, os.SEEK_END)
            lines = data.decode(errors="replace").splitlines()
            return lines[-count:] if count else [], end
    except FileNotFoundError:
        return [], 0


def read_logs(files: Mapping[str, Path], *, follow: bool, tail: int | None, prefix: bool) -> Iterator[str]:
    """Lines of several log files: each file's tail, then new lines as they are written."""
    offsets: dict[str, int] = {}
    width = max((len(n) for n in files), default=0)

    def fmt(name: str, line: str) -> str:
        line = render_log_line(line)
        return f"{name.ljust(width)} | {line}" if prefix else line

    for name, path in files.items():
        lines, offsets[name] = tail_lines(path, tail)
        for line in lines:
            yield fmt(name, line)
    partial: dict[str, bytes] = {}
    while follow:
        got = False
        for name, path in files.items():
            try:
                with path.open("rb") as fh:
                    if fh.seek(0, os.SEEK_END) < offsets[name]:
                        offsets[name] = 0  # truncated or replaced
                    fh.seek(offsets[name])
                    chunk = fh.read()
                    offsets[name] = fh.tell()
            except FileNotFoundError:
                continue
            if not chunk:
                continue
            got = True
            data = partial.pop(name, b"") + chunk
            *complete, rest = data.split(b"\n")
            if rest:
                partial[name] = rest
            yield from (fmt(name, line.decode(errors="replace")) for line in complete)
        if not got:
            time.sleep(0.2)
