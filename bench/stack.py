"""Local runtime timings: `llmobs up` (cold and warm), `llmobs status`, `llmobs down`.

    .venv/bin/python bench/stack.py [--runs 10]

Creates a throwaway project on free ports under /tmp and removes it afterwards. Baseline in the
same run: `llmobs --version` (interpreter + CLI start-up). Target: status under 1 s.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PORT_KEYS = ("DB_PORT", "REDIS_PORT", "API_PORT", "COLLECTOR_GRPC_PORT", "COLLECTOR_HTTP_PORT",
             "COLLECTOR_METRICS_PORT", "GRAFANA_PORT", "PGADMIN_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(project: Path, *args: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llmobs", "--project-dir", str(project), *args],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"llmobs {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="llmobs-bench-"))
    root.chmod(0o755)
    project = root / "proj"
    try:
        subprocess.run([sys.executable, "-m", "llmobs", "init", str(project)], check=True, capture_output=True)
        with (project / ".env").open("a") as fh:
            fh.writelines(f"{k}={free_port()}\n" for k in PORT_KEYS)
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
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
