"""How fast `llmobs --help` answers, against the bare interpreter start-up as a baseline.

    .venv/bin/python bench/cli_help.py [--runs 20]

Target: under 0.3 s. Prints the median and worst of each, and the slowest imports.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    py = sys.executable
    baseline = timed([py, "-c", "pass"], args.runs)
    cases = {
        "python -c pass (baseline)": baseline,
        "llmobs --help": timed([py, "-m", "llmobs", "--help"], args.runs),
        "llmobs db --help": timed([py, "-m", "llmobs", "db", "--help"], args.runs),
        "llmobs --version": timed([py, "-m", "llmobs", "--version"], args.runs),
    }
    print(f"{'command':32} {'median':>9} {'max':>9}")
    for name, times in cases.items():
        print(f"{name:32} {statistics.median(times) * 1000:8.0f}ms {max(times) * 1000:8.0f}ms")
    worst = statistics.median(cases["llmobs --help"])
    print(f"\n--help median {worst * 1000:.0f} ms, target 300 ms: {'OK' if worst < 0.3 else 'TOO SLOW'}")
    out = subprocess.run([py, "-X", "importtime", "-m", "llmobs", "--help"], capture_output=True, text=True).stderr
    rows = []
    for line in out.splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = line.split("|")
            try:
                rows.append((int(parts[1]), parts[2].rstrip()))
            except ValueError:
                continue
    print("\nslowest cumulative imports (us):")
    for cumulative, name in sorted(rows, reverse=True)[:8]:
        print(f"{cumulative:>9} {name}")


if __name__ == "__main__":
    main()
