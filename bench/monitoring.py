"""CPU the `monitoring` profile adds to an idle local stack.

    .venv/bin/python bench/monitoring.py [--seconds 120]

Creates a throwaway project on free ports under /tmp, starts the stack (`llmobs up --runtime
local`), and measures the CPU time of every process of the project (PostgreSQL, Redis, the
supervisor, api, collector) over ``--seconds`` of idleness: the baseline. Then it starts the
`monitoring` profile (Prometheus, Alertmanager, both exporters, default 15 s scrape interval),
waits for a first rule evaluation, and measures every process again over as long. Prints both as
a share of one core, and the difference. Target: monitoring adds under 5 % of one core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import psutil
from benchlib import llmobs, throwaway_project


def project_processes(project: Path) -> list[psutil.Process]:
    """Every process whose command line or working directory points into the project, with
    their children (PostgreSQL's backends)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(project) in cmd or (proc.info["cwd"] or "").startswith(str(project)):
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return list(found.values())


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    times = {}
    for proc in procs:
        try:
            t = proc.cpu_times()
            times[proc.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return times


def idle_cpu_share(project: Path, seconds: float) -> float:
    """CPU seconds used by the project's processes per wall-clock second (1.0 = one core)."""
    procs = project_processes(project)
    before = cpu_seconds(procs)
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    after = cpu_seconds(project_processes(project))
    # A process that started during the window counts from zero; one that ended is lost (rare).
    used = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    return used / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    with throwaway_project() as project:
        try:
            measure(project, args.seconds)
        finally:
            llmobs(project, "down")


def measure(project: Path, seconds: float) -> None:
    """Start the stack, measure it idle, start the monitoring profile, measure again, print."""
    llmobs(project, "up", "--runtime", "local")
    time.sleep(10)  # start-up work (first maintenance pass) out of the window
    baseline = idle_cpu_share(project, seconds)
    llmobs(project, "up", "--runtime", "local", "--profile", "monitoring")
    time.sleep(30)  # Prometheus's first scrapes, rule evaluations and WAL replay
    with_monitoring = idle_cpu_share(project, seconds)
    print(f"idle stack, {seconds:.0f} s window (share of one core)")
    print(f"  baseline (no monitoring):      {baseline * 100:6.2f} %")
    print(f"  with the monitoring profile:   {with_monitoring * 100:6.2f} %")
    print(f"  added by monitoring:           {(with_monitoring - baseline) * 100:6.2f} %  (target < 5 %)")


if __name__ == "__main__":
    main()
