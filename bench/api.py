"""Benchmark of the read API on a realistic volume of spans.

Loads 1,000,000 spans (about 200,000 traces over 7 days, 3 projects, 5 services, 6 models) with
COPY, refreshes the rollups, starts ``llmobs serve api`` and measures with concurrent clients
(wrk, ``apt-get install wrk``: a Python client spends more CPU per request than the API does):

* ``GET /api/v1/traces/{id}``: p50 / p99 latency and requests per second;
* ``GET /api/v1/traces`` with filters;
* ``GET /api/v1/metrics`` over 24 hours: cold (Redis cache miss) and cached.

Targets on 2 cores: trace fetch p99 < 50 ms; 24 h metrics cold < 200 ms. Baselines measured in
the same run: ``GET /health`` (the HTTP floor, no database) and the same SQL run directly with
psycopg (the database floor), so the API's own overhead is visible whatever the machine.

Standalone: ``python bench/api.py`` starts its own PostgreSQL and Redis on free ports under a
temporary directory (``--keep`` keeps them for another run with ``--reuse DIR``).
``--spans N`` scales the data set down for a quick look. Each line also shows the CPU time the
API's processes spent per request, a figure steadier than latency on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchlib import Infra, free_port, server_env, start_server, stop_server

from llmobs.store.spans import SpanRow

PROJECTS = ("default", "acme", "globex")
SERVICES = ("chat-api", "rag-worker", "agent", "summarizer", "search")
#: (provider, model, USD per 1M input tokens, per 1M output tokens)
MODELS = (
    ("openai", "gpt-4o", 2.5, 10.0),
    ("openai", "gpt-4o-mini", 0.15, 0.6),
    ("anthropic", "claude-3-5-sonnet", 3.0, 15.0),
    ("anthropic", "claude-3-5-haiku", 0.8, 4.0),
    ("mistral_ai", "mistral-large", 2.0, 6.0),
    ("openai", "text-embedding-3-small", 0.02, 0.0),
)
SPANS_PER_TRACE = 5


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def generate(
    project_ids: list[int], n_spans: int, days: int = 7, seed: int = 7, now: datetime | None = None
) -> Iterator[SpanRow]:
    """About ``n_spans`` spans in traces of 2 to 8 spans (5 on average) spread over ``days``."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    span_seconds = days * 86400
    produced = 0
    empty_obj, empty_list = "{}", "[]"
    while produced < n_spans:
        project = rng.choice(project_ids)
        service = rng.choice(SERVICES)
        trace_id = _hex(rng, 128)
        start = now - timedelta(seconds=rng.random() * span_seconds)
        root_id = _hex(rng, 64)
        children = rng.randint(1, 7)
        session = f"s-{rng.randrange(5000)}"
        user = f"u-{rng.randrange(800)}"
        failed = rng.random() < 0.03
        t = start + timedelta(milliseconds=rng.uniform(1, 20))
        rows = []
        for _ in range(children):
            provider, model, p_in, p_out = rng.choice(MODELS)
            duration = rng.lognormvariate(6.0, 0.8)  # median about 400 ms
            tokens_in = rng.randint(50, 4000)
            tokens_out = 0 if "embedding" in model else rng.randint(10, 1200)
            cost = (tokens_in * p_in + tokens_out * p_out) / 1e6
            error = failed and rng.random() < 0.5
            end = t + timedelta(milliseconds=duration)
            rows.append(
                SpanRow(
                    project,
                    trace_id,
                    _hex(rng, 64),
                    root_id,
                    service,
                    "production",
                    "bench",
                    f"chat {model}",
                    "client",
                    t,
                    end,
                    duration,
                    "error" if error else "ok",
                    "upstream error" if error else None,
                    provider,
                    model,
                    model,
                    "embeddings" if "embedding" in model else "chat",
                    tokens_in,
                    tokens_out,
                    tokens_in + tokens_out,
                    None,
                    None,
                    cost,
                    "computed",
                    session,
                    user,
                    ["stop"],
                    f'{{"gen_ai.request.model": "{model}", "gen_ai.usage.input_tokens": {tokens_in}}}',
                    empty_list,
                    f'{{"service.name": "{service}"}}',
                )
            )
            t = end + timedelta(milliseconds=rng.uniform(0, 30))
        root_end = t + timedelta(milliseconds=rng.uniform(1, 50))
        rows.insert(
            0,
            SpanRow(
                project,
                trace_id,
                root_id,
                None,
                service,
                "production",
                "bench",
                f"POST /{service}",
                "server",
                start,
                root_end,
                (root_end - start) / timedelta(milliseconds=1),
                "error" if failed else "ok",
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                session,
                user,
                None,
                empty_obj,
                empty_list,
                f'{{"service.name": "{service}"}}',
            ),
        )
        produced += len(rows)
        yield from rows


# ---------------------------------------------------------------------------------------------
# infrastructure


def load(settings, n_spans: int) -> dict[str, int]:
    """Bootstrap the schema, create the projects and COPY the spans in; refresh the rollups."""
    from llmobs.store.apikeys import ensure_project
    from llmobs.store.bootstrap import bootstrap
    from llmobs.store.db import connect
    from llmobs.store.maintain import maintain
    from llmobs.store.spans import copy_spans

    bootstrap(settings)
    with connect(settings, "admin", autocommit=True) as conn:
        projects = {name: ensure_project(conn, name)[0] for name in PROJECTS}
        have = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        if have >= n_spans * 0.95:
            print(f"data: {have:,} spans already loaded")
            return projects
        conn.execute("TRUNCATE spans")
        conn.execute("DELETE FROM llmobs_rollup_state")
        started = time.perf_counter()
        batch: list[SpanRow] = []
        total = 0
        for row in generate(list(projects.values()), n_spans):
            batch.append(row)
            if len(batch) >= 50_000:
                with conn.transaction():
                    total += copy_spans(conn, batch)
                batch = []
        with conn.transaction():
            total += copy_spans(conn, batch)
        copied = time.perf_counter() - started
        print(f"data: {total:,} spans loaded with COPY in {copied:.1f} s ({total / copied:,.0f} spans/s)")
        conn.execute("ANALYZE spans")
        started = time.perf_counter()
        maintain(conn, settings)
        conn.execute("ANALYZE spans_rollup_1m")
        conn.execute("ANALYZE spans_rollup_1h")
        print(f"data: rollups refreshed in {time.perf_counter() - started:.1f} s")
    return projects


def start_read_infra(reuse: Path | None, prefix: str) -> Infra:
    """PostgreSQL (tuned for bulk loading) and Redis for a read benchmark, in ``reuse`` (a kept
    earlier run) or a new temporary directory named with ``prefix``."""
    return Infra.start(
        reuse or Path(tempfile.mkdtemp(prefix=prefix)),
        server_env(DB_POOL_SIZE="10", API_RATE_LIMIT_PER_MINUTE="0"),
        reuse=reuse is not None,
        pg_settings={"shared_buffers": "'512MB'", "max_wal_size": "'4GB'", "synchronous_commit": "off"},
    )


# ---------------------------------------------------------------------------------------------
# measurement


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int = 0
    #: CPU time the API processes spent per request (milliseconds), when measured.
    api_cpu_ms: float | None = None

    @classmethod
    def from_latencies(cls, name: str, latencies_ms: list[float], seconds: float) -> Result:
        lat = sorted(latencies_ms)
        return cls(
            name, len(lat), seconds, statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1]
        )

    def line(self) -> str:
        cpu = f"  API CPU {self.api_cpu_ms:5.2f} ms/req" if self.api_cpu_ms is not None else ""
        return (
            f"{self.name:<52} n={self.requests:>6}  p50 {self.p50_ms:7.1f} ms  p99 {self.p99_ms:7.1f} ms  "
            f"{self.requests / self.seconds:7.0f} req/s{cpu}" + (f"  errors {self.errors}" if self.errors else "")
        )


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (the API's workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


@dataclass
class LoadGenerator:
    """HTTP load from wrk (C, about 20 us of CPU per request): a Python client costs more CPU per
    request than the API itself and, on two shared cores, measures its own queueing."""

    base: str
    token: str
    api_pid: int

    def run(self, name: str, paths: list[str], connections: int, seconds: float) -> Result:
        """GET ``paths`` in turn (wrapping around) over ``connections`` kept-alive connections."""
        with tempfile.NamedTemporaryFile("w", suffix=".paths") as listing:
            listing.write("\n".join(paths) + "\n")
            listing.flush()
            cpu_before = tree_cpu_seconds(self.api_pid)
            proc = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{connections}",
                    f"-d{seconds:g}s",
                    "--timeout",
                    "30s",
                    "-s",
                    str(Path(__file__).with_name("wrk_paths.lua")),
                    self.base,
                ],
                env={**os.environ, "WRK_PATHS": listing.name, "WRK_TOKEN": self.token},
                capture_output=True,
                text=True,
                check=False,
            )
            cpu = tree_cpu_seconds(self.api_pid) - cpu_before
        if proc.returncode != 0:
            raise SystemExit(f"wrk failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
        figures = json.loads(proc.stdout.strip().splitlines()[-1])
        requests = max(1, figures["requests"])
        return Result(
            name,
            figures["requests"],
            figures["seconds"],
            figures["p50_ms"],
            figures["p99_ms"],
            figures["max_ms"],
            figures["errors"],
            api_cpu_ms=cpu * 1000 / requests,
        )


def sql_baseline(settings, project_id: int, trace_ids: list[str]) -> Result:
    """The trace lookup run directly (app role, RLS scope), one connection: the database floor."""
    from llmobs.store.db import connect
    from llmobs.store.queries import SPAN_FIELDS

    latencies = []
    with connect(settings, "app", autocommit=True) as conn:
        conn.execute("SET ROLE llmobs_app")
        conn.execute("SELECT set_config('llmobs.project_id', %s, false)", (str(project_id),))
        started_all = time.perf_counter()
        for trace_id in trace_ids:
            started = time.perf_counter()
            conn.execute(
                f"SELECT {', '.join(SPAN_FIELDS)} FROM spans WHERE project_id = %s AND trace_id = %s "
                "ORDER BY start_time, span_id",
                (project_id, trace_id),
            ).fetchall()
            latencies.append((time.perf_counter() - started) * 1000)
        elapsed = time.perf_counter() - started_all
    return Result.from_latencies("baseline: trace SQL direct (1 connection)", latencies, elapsed)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def metrics_paths(now: datetime, interval: str, n: int) -> list[str]:
    """``n`` 24-hour ranges by model, each ending a minute before the previous one: every
    request misses the result cache."""
    paths = []
    for i in range(n):
        end = (now - timedelta(minutes=i)).replace(second=0, microsecond=0)
        paths.append(
            f"/api/v1/metrics?from={_iso(end - timedelta(hours=24))}&to={_iso(end)}&group_by=model&interval={interval}"
        )
    return paths


async def metrics_sql_baseline(settings, project_id: int, now: datetime, n: int) -> Result:
    """The 24 h metrics query run directly (the API's store function, no HTTP): the database floor."""
    import psycopg

    from llmobs.store import queries
    from llmobs.store.db import connect_kwargs

    latencies = []
    async with await psycopg.AsyncConnection.connect(**connect_kwargs(settings, "app"), autocommit=True) as conn:
        await conn.execute("SET ROLE llmobs_app")
        await conn.execute("SET jit = off")
        await conn.execute("SELECT set_config('llmobs.project_id', %s, false)", (str(project_id),))
        started_all = time.perf_counter()
        for i in range(n):
            end = (now - timedelta(minutes=i)).replace(second=0, microsecond=0)
            req = queries.MetricsRequest(end - timedelta(hours=24), end, group_by="model")
            started = time.perf_counter()
            await queries.metric_series(conn, project_id, req)
            latencies.append((time.perf_counter() - started) * 1000)
        elapsed = time.perf_counter() - started_all
    return Result.from_latencies("baseline: 24 h metrics SQL direct (auto)", latencies, elapsed)


def measure(settings, load: LoadGenerator, projects: dict[str, int], args) -> list[Result]:
    from llmobs.store.db import connect

    project_id = projects["default"]
    with connect(settings, "admin") as conn:
        trace_ids = [
            r[0]
            for r in conn.execute(
                "SELECT trace_id FROM spans WHERE project_id = %s AND parent_span_id IS NULL "
                "ORDER BY random() LIMIT %s",
                (project_id, args.traces),
            ).fetchall()
        ]
    seconds, conns = args.seconds, args.concurrency
    results = [
        load.run("baseline: GET /health", ["/health"], conns, seconds),
        sql_baseline(settings, project_id, trace_ids[:1000]),
    ]
    trace_paths = [f"/api/v1/traces/{t}" for t in trace_ids]
    load.run("warm-up", trace_paths, conns, 3)  # connections, prepared statements
    results.append(load.run("GET /api/v1/traces/{id}", trace_paths, conns, seconds))
    now = datetime.now(UTC)
    day_ago, week_ago = _iso(now - timedelta(hours=24)), _iso(now - timedelta(days=7))
    lists = {
        "GET /api/v1/traces (24 h, newest)": f"/api/v1/traces?from={day_ago}&limit=50",
        "GET /api/v1/traces?model=gpt-4o&status=error": f"/api/v1/traces?from={day_ago}&model=gpt-4o&status=error",
        "GET /api/v1/traces?service=agent&min_cost_usd=0.02": f"/api/v1/traces?from={day_ago}&service=agent"
        "&min_cost_usd=0.02",
        "GET /api/v1/traces (7 d, sort=cost_usd)": f"/api/v1/traces?from={week_ago}&sort=cost_usd&limit=20",
    }
    for name, path in lists.items():
        results.append(load.run(name, [path], min(conns, 4), seconds))
    # Metrics over 24 h: cold, one client, each request a range not asked before (a cache miss);
    # then cached, one range again and again. auto picks 1 h points (the hourly rollup); 15 min
    # points read the minute rollup.
    for label, interval in (("auto: 1 h points", "auto"), ("15 min points", "15m")):
        paths = metrics_paths(now, interval, 3000)
        results.append(load.run(f"GET /api/v1/metrics 24 h by model, {label}, cold", paths, 1, seconds))
        load.run("prime the cache", paths[-1:], 1, 1)
        results.append(load.run(f"GET /api/v1/metrics 24 h by model, {label}, cached", paths[-1:], conns, seconds))
    results.append(asyncio.run(metrics_sql_baseline(settings, project_id, now, 50)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10, help="length of each measurement")
    parser.add_argument("--traces", type=int, default=5000, help="distinct traces fetched, in turn")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="concurrent connections (wrk shares the machine with the server: 2 cores)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reuse", type=Path, help="directory of a previous --keep run")
    parser.add_argument("--keep", action="store_true", help="keep PostgreSQL/Redis data for --reuse")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/api.py generates its load with wrk: apt-get install wrk")

    from llmobs.config import Settings

    infra = start_read_infra(args.reuse, "llmobs-bench-api-")
    root = infra.root
    api = None
    try:
        settings = Settings(infra.env, None)
        projects = load(settings, args.spans)
        port = free_port()
        api_log = root / "api.log"
        api = start_server(
            ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)],
            infra.env,
            api_log,
            f"http://127.0.0.1:{port}/health/ready",
        )
        load_generator = LoadGenerator(f"http://127.0.0.1:{port}", infra.env["LLMOBS_ADMIN_API_KEY"], api.pid)
        results = measure(settings, load_generator, projects, args)
        print(
            f"\nAPI with {args.workers} worker(s), {args.concurrency} concurrent connections, "
            f"{os.cpu_count()} CPUs, {args.seconds:g} s per line:"
        )
        for r in results:
            print("  " + r.line())
        fetch = next(r for r in results if r.name == "GET /api/v1/traces/{id}")
        cold = next(r for r in results if r.name.endswith("cold"))  # the default (auto) interval
        complaints = [
            line
            for line in api_log.read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line
        ]
        if complaints:
            print(f"\nthe API logged {len(complaints)} warning(s) or error(s) ({api_log}), first:\n  {complaints[0]}")
        print(f"\ntarget trace fetch p99 < 50 ms: {fetch.p99_ms:.1f} ms -> {'met' if fetch.p99_ms < 50 else 'MISSED'}")
        print(
            f"target 24 h metrics cold < 200 ms: p50 {cold.p50_ms:.1f} ms, max {cold.max_ms:.1f} ms "
            f"-> {'met' if cold.max_ms < 200 else 'MISSED'}"
        )
    finally:
        if api is not None:
            stop_server(api)
        infra.stop()
        if args.keep or args.reuse:
            print(f"data kept in {root} (reuse with --reuse {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
