"""Local runtime timings: `llmobs up` (cold and warm), `llmobs status`, `llmobs down`.

    .venv/bin/python bench/stack.py [--runs 10]

Creates a throwaway project on free ports under /tmp and removes it afterwards. Baseline in the
same run: `llmobs --version` (interpreter + CLI start-up). Target: status under 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchlib import llmobs, throwaway_project


def cli(project: Path, *args: str) -> float:
    """Seconds one `llmobs` command takes."""
    started = time.perf_counter()
    llmobs(project, *args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with throwaway_project() as project:
        rows = [("up (cold: initdb, migrations)", cli(project, "up", "--runtime", "local"))]
        status = [cli(project, "status") for _ in range(args.runs)]
        version = [cli(project, "--version") for _ in range(args.runs)]
        rows.append(("up (warm: all running)", cli(project, "up")))
        rows.append(("down", cli(project, "down")))
        rows.append(("up (data kept)", cli(project, "up")))
        cli(project, "down")
        print(f"{'step':34} {'seconds':>8}")
        for name, secs in rows:
            print(f"{name:34} {secs:8.2f}")
        print(f"{'llmobs --version (baseline)':34} {statistics.median(version):8.2f} median of {args.runs}")
        med = statistics.median(status)
        print(f"{'llmobs status':34} {med:8.2f} median, {max(status):.2f} max of {args.runs}")
        print(f"\nstatus target 1.0 s: {'OK' if med < 1.0 else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
