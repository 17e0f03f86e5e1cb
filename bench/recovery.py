"""Time until the local stack serves again after each fault (issue 18).

    .venv/bin/python bench/recovery.py [--runs 3]

Creates a throwaway project on free ports under /tmp, `llmobs up`, then for each fault measures
the seconds from the fault (or from the step that repairs it) until the service serves again:

* kill -9 of the collector, of the api: the supervisor restarts them (no `llmobs` command);
* kill -9 of the supervisor: its children die with it; `llmobs up` starts them again;
* kill -9 of redis-server and of the postmaster: `llmobs up` starts them again (crash recovery);
* a database restart (pg_ctl stop -m fast, start): from PostgreSQL accepting connections until
  the collector accepts a span again. Target: under 2 s.

Baseline in the same run: one accepted export on the healthy stack. Every acknowledged span is
counted against what PostgreSQL holds at the end (0 lost, 0 stored twice).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
from benchlib import llmobs, throwaway_project

from llmobs.config import Settings, read_env_file
from llmobs.stack.local import LocalStack

TIMEOUT = 120.0


class Probe:
    """Ingest through the collector and reads through the api, as a client would."""

    def __init__(self, project: Path) -> None:
        self.env = read_env_file(project / ".env")
        self.acked: set[str] = set()

    def export(self) -> bool:
        span_id = secrets.token_hex(8)
        now = time.time_ns()
        body = {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bench"}}]},
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": secrets.token_hex(16),
                                    "spanId": span_id,
                                    "name": "op",
                                    "startTimeUnixNano": str(now),
                                    "endTimeUnixNano": str(now + 1_000_000),
                                }
                            ]
                        }
                    ],
                }
            ]
        }
        try:
            response = httpx.post(
                f"http://127.0.0.1:{self.env['COLLECTOR_HTTP_PORT']}/v1/traces",
                json=body,
                headers={"authorization": f"Bearer {self.env['LLMOBS_INGEST_API_KEY']}"},
                timeout=10,
            )
        except httpx.HTTPError:
            return False
        if response.status_code == 200:
            self.acked.add(span_id)
        return response.status_code == 200

    def read(self) -> bool:
        try:
            response = httpx.get(
                f"http://127.0.0.1:{self.env['API_PORT']}/api/v1/traces",
                headers={"authorization": f"Bearer {self.env['LLMOBS_ADMIN_API_KEY']}"},
                timeout=10,
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def stored(self) -> tuple[int, int]:
        with psycopg.connect(
            host="127.0.0.1",
            port=int(self.env["DB_PORT"]),
            user="postgres",
            password=self.env["DB_PASSWORD"],
            dbname=self.env["DB_NAME"],
        ) as conn:
            row = conn.execute(
                "SELECT count(*), count(DISTINCT span_id) FROM spans WHERE span_id = ANY(%s)",
                (list(self.acked),),
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])


def until(ok: Callable[[], bool], started: float, what: str = "") -> float:
    """Seconds from ``started`` until ``ok()`` is true."""
    while not ok():
        if time.monotonic() - started > TIMEOUT:
            raise SystemExit(f"{ok.__name__}: not serving {TIMEOUT:.0f} s after {what or 'the fault'}")
        time.sleep(0.05)
    return time.monotonic() - started


def child_pid(project: Path, service: str) -> int:
    children = json.loads((project / "run" / "children.json").read_text())
    return int(children["services"][service][0]["pid"])


def serving(probe: Probe) -> bool:
    return probe.export() and probe.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with throwaway_project() as project:
        llmobs(project, "up", "--runtime", "local")
        probe = Probe(project)
        cluster = LocalStack(Settings.load(project, environ={})).cluster
        results: dict[str, list[float]] = {}

        def record(name: str, check: Callable[[], bool], started: float) -> None:
            results.setdefault(name, []).append(until(check, started, name))
            print(f"{name}: {results[name][-1]:.2f} s", file=sys.stderr)

        for _ in range(args.runs):
            record("baseline: one accepted export", probe.export, time.monotonic())
            time.sleep(11)  # served long enough: a kill is not a crash at start (no back-off)
            for service in ("collector", "api"):
                os.kill(child_pid(project, service), signal.SIGKILL)
                check = probe.export if service == "collector" else probe.read
                record(f"kill -9 {service} (supervisor restarts)", check, time.monotonic())
            supervisor = json.loads((project / "run" / "supervisor.pid").read_text())["pid"]
            os.kill(supervisor, signal.SIGKILL)
            started = time.monotonic()
            llmobs(project, "up")
            record("kill -9 supervisor, then `up`", lambda: serving(probe), started)
            os.kill(int((project / "run" / "redis.pid").read_text()), signal.SIGKILL)
            started = time.monotonic()
            llmobs(project, "up")
            record("kill -9 redis-server, then `up`", lambda: serving(probe), started)
            postmaster = cluster.running_pid()
            assert postmaster is not None
            os.kill(postmaster, signal.SIGKILL)
            started = time.monotonic()
            llmobs(project, "up")
            record("kill -9 postmaster, then `up`", lambda: serving(probe), started)
            cluster.stop(mode="fast")
            cluster.start()  # returns once PostgreSQL accepts connections
            accepting = time.monotonic()
            record("database restart: accepting -> ingest", probe.export, accepting)
            record("database restart: accepting -> api read", probe.read, accepting)
        count, distinct = probe.stored()
        print(f"{'fault':42} {'median s':>9} {'max s':>7}")
        for name, values in results.items():
            print(f"{name:42} {statistics.median(values):9.2f} {max(values):7.2f}")
        print(f"\nacknowledged {len(probe.acked)} spans: {count} stored ({count - distinct} twice)")
        ingest = max(results["database restart: accepting -> ingest"])
        print(f"target: ingest within 2 s of PostgreSQL accepting: {'OK' if ingest < 2 else 'TOO SLOW'} ({ingest:.2f})")


if __name__ == "__main__":
    main()
