#!/usr/bin/python3
"""Container healthcheck for the llmobs image (standard library only: it runs every few seconds).

llmobs-healthcheck                     GET http://127.0.0.1:$API_PORT/health (default 8080)
llmobs-healthcheck URL                 GET URL; healthy on a 2xx answer
llmobs-healthcheck --process WORDS     healthy while a process runs whose command line contains WORDS
"""

import os
import sys
import urllib.request
from pathlib import Path


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return False


def process_running(words: str) -> bool:
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if words in cmdline and "llmobs-healthcheck" not in cmdline:
            return True
    print(f"no process running {words!r}", file=sys.stderr)
    return False


def main(argv: list[str]) -> int:
    if argv[:1] == ["--process"]:
        return 0 if process_running(" ".join(argv[1:])) else 1
    url = argv[0] if argv else f"http://127.0.0.1:{os.environ.get('API_PORT', '8080')}/health"
    return 0 if http_ok(url) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
