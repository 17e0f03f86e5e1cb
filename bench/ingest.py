"""End-to-end ingestion rate of the collector against a plain COPY ceiling, in the same run.

    .venv/bin/python bench/ingest.py [--spans 100000] [--workers N] [--transports grpc,http] [--mixed]

Starts its own PostgreSQL (default durability: fsync and synchronous_commit on) and Redis under
a temporary directory, then:

1. ceiling: the pipeline's rows for the same spans, COPYed by one connection in batches of
   COLLECTOR_BATCH_MAX_SPANS with a commit each: what PostgreSQL takes with no collector at all;
2. for each transport, ``llmobs serve collector`` as a subprocess and 8 concurrent clients sending
   OTLP requests of 512 realistic LLM spans (3-6 spans per trace, a few hundred bytes of prompt
   and completion), retrying on 429/503 like the SDK exporters. The rate counts spans
   acknowledged, and is checked against ``count(*)`` of the table afterwards;
3. the ceiling again (the machine is noisy: the mean of both is the baseline).

Prints spans/s, the ratio to the ceiling, the collector's peak RSS (all its processes) and the CPU
time it spent per span (steadier than spans/s on a shared machine).
Targets on 2 cores: gRPC >= 40 % of the ceiling, peak RSS < 300 MiB.

``--mixed`` adds what ``opentelemetry-instrumentation-openai-v2`` sends beside the spans: for every
LLM span three OTLP log records (GenAI events: system and user message, choice; about 3 KB of
content per call) and, with every trace request, an OTLP metrics request (cumulative token usage
and duration histograms). Clients send the three signals concurrently; the ceiling is then the
COPY of the span, log record and metric rows together, and the report gives spans/s and log
records/s of both.

``--pipeline`` measures, without any server, the CPU per span of the collector's own work on each
request, by stage: decode (protobuf to spans), process (the span pipeline: normalize, messages,
price, redact) and encode (COPY text), with the collector's GC settings. ``--against DIR`` runs the
same measurement on another checkout (e.g. a worktree of the commit before a change) in the same
run, alternating with this one for ``--rounds`` rounds, and prints both with the difference::

    git worktree add --detach /tmp/before HEAD~1
    .venv/bin/python bench/ingest.py --pipeline --spans 20000 --rounds 5 --against /tmp/before

Without ``--pipeline``, ``--against DIR`` runs the collector of that checkout too, on the same
PostgreSQL and the same requests, right after this checkout's for each transport and round, and
prints the medians of both collectors' CPU per span with the difference. The other checkout's
collector writes into the tables this one created, so it must have the same database schema; for a
checkout with other migrations, run ``bench/ingest.py`` in each checkout in turn instead.

``--ha`` measures the cost of the `ha` profile's synchronous replication instead: a throwaway
compose project (``llmobs up --profile ha``, the images of ``eval "$(scripts/offline-images)"``,
removed with its volumes afterwards) takes OTLP/HTTP ingest through the collector (``--threads``
clients, batches of ``--batch`` spans, ``--seconds`` a phase) in three phases a round, ``--rounds``
rounds on the same stack: ``synchronous_mode`` on; off (asynchronous replication, Patroni's
``PATCH /config``); the replica stopped, so the leader runs as a single node (the baseline). The
replica is started again (and synchronous) before the next round. It reports the median spans/s
of each phase over the rounds (alternating phases spreads the load of a shared machine over
all of them) and the cost of ``synchronous_mode`` against the single node and against
asynchronous replication::

    eval "$(scripts/offline-images)"
    .venv/bin/python bench/ingest.py --ha [--rounds 2] [--seconds 15] [--threads 4] [--batch 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import ROOT, Infra, free_port, server_env, start_server, stop_server

from llmobs.collector.otlp import ProtobufRequest

BATCH = 512
CONCURRENCY = 8
MODELS = (
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-3-5-sonnet-20241022"),
    ("anthropic", "claude-3-5-haiku-20241022"),
    ("mistral_ai", "mistral-large-latest"),
)
_TEXT = (
    "the quick brown fox jumps over the lazy dog while a customer asks about the refund policy of their "
    "order and the assistant looks up the knowledge base for shipping times in europe"
)
WORDS = tuple(_TEXT.split())


def sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def make_requests(n_spans: int, seed: int) -> list[bytes]:
    """OTLP requests of BATCH spans each, shaped like an instrumented LLM app's traces."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    rng = random.Random(seed)

    def kv(key: str, value: object) -> KeyValue:
        v = AnyValue()
        if isinstance(value, bool):
            v.bool_value = value
        elif isinstance(value, int):
            v.int_value = value
        elif isinstance(value, float):
            v.double_value = value
        elif isinstance(value, list):
            v.array_value.values.extend(AnyValue(string_value=x) for x in value)
        else:
            v.string_value = str(value)
        return KeyValue(key=key, value=v)

    requests: list[bytes] = []
    now = time.time_ns()
    made = 0
    while made < n_spans:
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(
            [
                kv("service.name", rng.choice(("chat-api", "rag-worker", "agent"))),
                kv("deployment.environment.name", "prod"),
                kv("telemetry.sdk.language", "python"),
                kv("telemetry.sdk.version", "1.45.0"),
            ]
        )
        ss = rs.scope_spans.add()
        ss.scope.name = "opentelemetry.instrumentation.openai"
        in_batch = 0
        while in_batch < BATCH and made + in_batch < n_spans:
            trace_id = rng.randbytes(16)
            root_id = rng.randbytes(8)
            start = now - rng.randrange(0, 3_600_000_000_000)
            size = min(rng.randint(3, 6), BATCH - in_batch, n_spans - made - in_batch)
            root = ss.spans.add(
                trace_id=trace_id,
                span_id=root_id,
                name="POST /chat",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=start,
                end_time_unix_nano=start + 2_500_000_000,
            )
            root.attributes.extend(
                [
                    kv("http.request.method", "POST"),
                    kv("http.route", "/chat"),
                    kv("session.id", f"s-{rng.randrange(10_000)}"),
                ]
            )
            for i in range(size - 1):
                provider, model = rng.choice(MODELS)
                t0 = start + i * 400_000_000
                sp = ss.spans.add(
                    trace_id=trace_id,
                    span_id=rng.randbytes(8),
                    parent_span_id=root_id,
                    name=f"chat {model}",
                    kind=Span.SPAN_KIND_CLIENT,
                    start_time_unix_nano=t0,
                    end_time_unix_nano=t0 + rng.randrange(200_000_000, 2_000_000_000),
                )
                sp.attributes.extend(
                    [
                        kv("gen_ai.operation.name", "chat"),
                        kv("gen_ai.system", provider),
                        kv("gen_ai.request.model", model),
                        kv("gen_ai.response.model", model),
                        kv("gen_ai.request.temperature", 0.7),
                        kv("gen_ai.request.max_tokens", 1024),
                        kv("gen_ai.usage.input_tokens", rng.randrange(50, 4000)),
                        kv("gen_ai.usage.output_tokens", rng.randrange(10, 800)),
                        kv("gen_ai.response.finish_reasons", ["stop"]),
                        kv("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(64):x}"),
                        kv("gen_ai.prompt.0.role", "system"),
                        kv("gen_ai.prompt.0.content", sentence(rng, 12)),
                        kv("gen_ai.prompt.1.role", "user"),
                        kv("gen_ai.prompt.1.content", sentence(rng, 40)),
                        kv("gen_ai.completion.0.role", "assistant"),
                        kv("gen_ai.completion.0.content", sentence(rng, 60)),
                    ]
                )
                if rng.random() < 0.02:
                    sp.status.code = Status.STATUS_CODE_ERROR
                    sp.status.message = "rate limited"
            in_batch += size
        made += in_batch
        requests.append(req.SerializeToString())
    return requests


LOG_EVENTS = (("gen_ai.system.message", 40), ("gen_ai.user.message", 220), ("gen_ai.choice", 220))
METRIC_SERIES = 20


def make_signal_requests(trace_requests: list[bytes], seed: int) -> list[tuple[bytes, int, bytes, int]]:
    """For each trace request: (logs request, log records, metrics request, data points). Three
    GenAI events per LLM span (about 3 KB of content per call, in the openai-v2 shape) and
    cumulative histograms of METRIC_SERIES series per metric."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

    rng = random.Random(seed)
    out = []
    for n, body in enumerate(trace_requests):
        traces = ExportTraceServiceRequest.FromString(body)
        logs = ExportLogsServiceRequest()
        rl = logs.resource_logs.add()
        rl.resource.CopyFrom(traces.resource_spans[0].resource)
        sl = rl.scope_logs.add()
        sl.scope.name = "opentelemetry.instrumentation.openai_v2"
        records = 0
        for sp in traces.resource_spans[0].scope_spans[0].spans:
            if sp.kind != 3:  # client spans are the LLM calls
                continue
            for event, words in LOG_EVENTS:
                rec = sl.log_records.add(
                    time_unix_nano=sp.start_time_unix_nano, trace_id=sp.trace_id, span_id=sp.span_id, event_name=event
                )
                rec.attributes.append(KeyValue(key="gen_ai.system", value=AnyValue(string_value="openai")))
                content = KeyValue(key="content", value=AnyValue(string_value=sentence(rng, words)))
                if event == "gen_ai.choice":
                    message = AnyValue(kvlist_value=KeyValueList(values=[content]))
                    fields = [
                        KeyValue(key="index", value=AnyValue(int_value=0)),
                        KeyValue(key="finish_reason", value=AnyValue(string_value="stop")),
                        KeyValue(key="message", value=message),
                    ]
                else:
                    fields = [content]
                rec.body.kvlist_value.values.extend(fields)
                records += 1
        metrics = ExportMetricsServiceRequest()
        rm = metrics.resource_metrics.add()
        rm.resource.CopyFrom(traces.resource_spans[0].resource)
        sm = rm.scope_metrics.add()
        points = 0
        now = time.time_ns()
        for name, unit in (("gen_ai.client.token.usage", "{token}"), ("gen_ai.client.operation.duration", "s")):
            metric = sm.metrics.add(name=name, unit=unit)
            metric.histogram.aggregation_temporality = 2
            for series in range(METRIC_SERIES):
                provider, model = MODELS[series % len(MODELS)]
                dp = metric.histogram.data_points.add(
                    time_unix_nano=now, start_time_unix_nano=now - 3_600_000_000_000, count=n + 1, sum=100.0 * (n + 1)
                )
                dp.attributes.extend(
                    [
                        KeyValue(key="gen_ai.system", value=AnyValue(string_value=provider)),
                        KeyValue(key="gen_ai.response.model", value=AnyValue(string_value=model)),
                        KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
                        KeyValue(key="gen_ai.token.type", value=AnyValue(string_value=("input", "output")[series % 2])),
                        KeyValue(key="series", value=AnyValue(int_value=series)),
                    ]
                )
                dp.explicit_bounds.extend([1, 4, 16, 64, 256, 1024, 4096, 16384])
                dp.bucket_counts.extend([0, 0, 0, 0, n + 1, 0, 0, 0, 0])
                points += 1
        out.append((logs.SerializeToString(), records, metrics.SerializeToString(), points))
    return out


# ---------------------------------------------------------------------------------------------
# pipeline stages, per code tree

#: Run as ``python -c PIPELINE_STAGES TREE REQUESTS PASSES`` in a fresh process: imports llmobs from
#: TREE (any checkout with the same entry points), prints the CPU microseconds per span of each
#: stage, the best of PASSES passes over the pickled requests.
PIPELINE_STAGES = """
import gc, json, pickle, sys, time
tree = sys.argv[1]
sys.path.insert(0, tree)
import llmobs
if not llmobs.__file__.startswith(tree):
    raise SystemExit(f"llmobs imported from {llmobs.__file__}, not from {tree}")
from llmobs.collector.otlp import ProtobufRequest
from llmobs.collector.pipeline import SpanPipeline
from llmobs.config import Settings
from llmobs.serving import tune_gc
from llmobs.store.spans import encode_rows
with open(sys.argv[2], "rb") as fh:
    requests = pickle.load(fh)
pipeline = SpanPipeline.from_settings(Settings({}, None))
tune_gc()
clock = time.process_time
best = None
for _ in range(int(sys.argv[3])):
    spent = [0.0, 0.0, 0.0]
    spans = 0
    for body in requests:
        t0 = clock()
        request = ProtobufRequest(body)
        request.span_count
        raw = list(request.raw_spans())
        t1 = clock()
        rows = pipeline.process(raw, 1).rows
        t2 = clock()
        encode_rows(rows)
        t3 = clock()
        spent[0] += t1 - t0
        spent[1] += t2 - t1
        spent[2] += t3 - t2
        spans += len(raw)
    us = [t / spans * 1e6 for t in spent]
    if best is None or sum(us) < sum(best):
        best = us
print(json.dumps(best))
"""
STAGES = ("decode", "process", "encode")


def pipeline_stages(tree: Path, requests_file: Path, passes: int = 3) -> list[float]:
    """CPU microseconds per span of decode, process and encode with llmobs from ``tree``."""
    proc = subprocess.run(
        [sys.executable, "-c", PIPELINE_STAGES, str(tree), str(requests_file), str(passes)],
        capture_output=True,
        text=True,
        cwd=tree,
    )
    if proc.returncode != 0:
        raise SystemExit(f"pipeline stages on {tree} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def run_pipeline(requests: list[bytes], rounds: int, against: Path | None) -> None:
    """Stage CPU per span of this checkout (and of ``against``), alternating, medians printed."""
    trees = {"this checkout": ROOT} | ({str(against): against} if against else {})
    results: dict[str, list[list[float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="llmobs-bench-pipeline-") as tmp:
        requests_file = Path(tmp) / "requests.pickle"
        requests_file.write_bytes(pickle.dumps(requests))
        for n in range(rounds):
            # ABAB..., starting with the other tree every second round: drift in the machine's load
            # falls on both alike
            order = list(trees.items()) if n % 2 == 0 else list(trees.items())[::-1]
            for name, tree in order:
                results[name].append(pipeline_stages(tree, requests_file))
                stages = ", ".join(f"{s} {v:.1f}" for s, v in zip(STAGES, results[name][-1], strict=True))
                print(f"round {n + 1} {name}: {stages} us/span", flush=True)
    medians = {name: [statistics.median(r[i] for r in runs) for i in range(3)] for name, runs in results.items()}
    print()
    header = " ".join(f"{s:>8}" for s in (*STAGES, "total"))
    print(f"{'CPU us/span':<30} {header}   (medians of {rounds} round(s), collector GC settings)")
    for name, values in medians.items():
        print(f"{name:<30} " + " ".join(f"{v:>8.1f}" for v in (*values, sum(values))))
    if against:
        this, other = medians["this checkout"], medians[str(against)]
        print(
            f"{'this vs ' + against.name:<30} "
            + " ".join(f"{(a / b - 1):>+8.0%}" for a, b in zip((*this, sum(this)), (*other, sum(other)), strict=True))
        )
    print(json.dumps({name: dict(zip((*STAGES, "total"), (*v, sum(v)), strict=True)) for name, v in medians.items()}))


# ---------------------------------------------------------------------------------------------
# infrastructure


def start_infra(root: Path) -> Infra:
    """PostgreSQL (default durability) and Redis, bootstrapped."""
    from llmobs.config import Settings
    from llmobs.store.bootstrap import bootstrap

    env = server_env(
        COLLECTOR_GRPC_PORT=str(free_port()),
        COLLECTOR_HTTP_PORT=str(free_port()),
        COLLECTOR_METRICS_PORT=str(free_port()),
    )
    infra = Infra.start(root, env, pg_settings={"shared_buffers": "'256MB'", "max_wal_size": "'4GB'"})
    bootstrap(Settings(env, None))
    return infra


def admin(env: dict[str, str]):
    from llmobs.config import Settings
    from llmobs.store.db import connect

    return connect(Settings(env, None), "admin", autocommit=True)


def reset_spans(env: dict[str, str]) -> None:
    with admin(env) as conn:
        conn.execute("TRUNCATE spans, log_records, metric_points")
        conn.execute("CHECKPOINT")


def count_rows(env: dict[str, str], table: str = "spans") -> int:
    with admin(env) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# ---------------------------------------------------------------------------------------------
# ceiling


def copy_ceiling(env: dict[str, str], requests: list[bytes], signals: list[tuple[bytes, int, bytes, int]]) -> float:
    """Seconds a plain COPY takes for the rows the pipeline makes of ``requests`` (and of the log
    and metric requests in ``signals``), in batches of COLLECTOR_BATCH_MAX_SPANS with a commit each."""
    from llmobs.collector.otlp_signals import LogsProtobufRequest, MetricsProtobufRequest
    from llmobs.collector.pipeline import SpanPipeline
    from llmobs.config import Settings
    from llmobs.store.db import connect
    from llmobs.store.signals import LOG_RECORDS, METRIC_POINTS, SPANS, CopyTable

    settings = Settings(env, None)
    pipeline = SpanPipeline.from_settings(settings)
    tables: list[tuple[CopyTable, list]] = [(SPANS, []), (LOG_RECORDS, []), (METRIC_POINTS, [])]
    for body in requests:
        tables[0][1].extend(pipeline.process(ProtobufRequest(body).raw_spans(), 1).rows)
    for logs, _, metrics, _ in signals:
        tables[1][1].extend(LogsProtobufRequest(logs).rows(1, pipeline.redactor).rows)
        tables[2][1].extend(MetricsProtobufRequest(metrics).rows(1, pipeline.redactor).rows)
    batch = settings.get_int("COLLECTOR_BATCH_MAX_SPANS")
    chunks = [(table, table.encode(rows[i : i + batch])) for table, rows in tables for i in range(0, len(rows), batch)]
    with connect(settings, "app") as conn:
        started = time.perf_counter()
        for table, chunk in chunks:
            with conn.cursor().copy(table.copy_sql) as copy:
                copy.write(chunk)
            conn.commit()
        elapsed = time.perf_counter() - started
    reset_spans(env)
    return elapsed


# ---------------------------------------------------------------------------------------------
# the collector under load


def start_collector(
    env: dict[str, str], workers: int | None, log_file: Path, tree: Path | None = None
) -> subprocess.Popen:
    extra = {"COLLECTOR_WORKERS": str(workers)} if workers else {}
    return start_server(
        ["collector"], {**env, **extra}, log_file, f"http://127.0.0.1:{env['COLLECTOR_METRICS_PORT']}/health", tree=tree
    )


class ProcessSampler(threading.Thread):
    """Peak resident memory of a process and its children, and the CPU time they used, sampled
    every 50 ms (CPU per span is steadier than spans/s on a shared machine)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.cpu: dict[int, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self._halt.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
                for p in procs:
                    times = p.cpu_times()
                    self.cpu[p.pid] = times.user + times.system
            except psutil.Error:
                pass
            self._halt.wait(0.05)

    def stop(self) -> tuple[int, float]:
        """Peak RSS (bytes) and CPU seconds."""
        self._halt.set()
        self.join()
        return self.peak, sum(self.cpu.values())


#: signal -> (gRPC method, HTTP path)
ENDPOINTS = {
    "traces": ("/opentelemetry.proto.collector.trace.v1.TraceService/Export", "/v1/traces"),
    "logs": ("/opentelemetry.proto.collector.logs.v1.LogsService/Export", "/v1/logs"),
    "metrics": ("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", "/v1/metrics"),
}
#: (signal, request body, items in it)
Item = tuple[str, bytes, int]


async def send_grpc(env: dict[str, str], items: list[Item]) -> dict[str, int]:
    """Items acknowledged per signal."""
    import grpc

    target = f"127.0.0.1:{env['COLLECTOR_GRPC_PORT']}"
    metadata = (("authorization", f"Bearer {env['LLMOBS_INGEST_API_KEY']}"),)
    retryable = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
    queue = list(items)
    acked = dict.fromkeys(ENDPOINTS, 0)

    async def client() -> None:
        async with grpc.aio.insecure_channel(target) as channel:
            exports = {signal: channel.unary_unary(method) for signal, (method, _) in ENDPOINTS.items()}
            while queue:
                signal, body, n = queue.pop()
                while True:
                    try:
                        await exports[signal](body, metadata=metadata, timeout=60)
                        acked[signal] += n
                        break
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() not in retryable:
                            raise
                        await asyncio.sleep(0.2)

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return acked


async def send_http(env: dict[str, str], items: list[Item]) -> dict[str, int]:
    """Items acknowledged per signal."""
    import httpx

    base = f"http://127.0.0.1:{env['COLLECTOR_HTTP_PORT']}"
    headers = {"authorization": f"Bearer {env['LLMOBS_INGEST_API_KEY']}", "content-type": "application/x-protobuf"}
    queue = list(items)
    acked = dict.fromkeys(ENDPOINTS, 0)

    async def client() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            while queue:
                signal, body, n = queue.pop()
                while True:
                    response = await http.post(base + ENDPOINTS[signal][1], content=body, headers=headers)
                    if response.status_code == 200:
                        acked[signal] += n
                        break
                    if response.status_code not in (429, 503):
                        raise SystemExit(f"HTTP {response.status_code}: {response.text[:200]}")
                    await asyncio.sleep(0.2)

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return acked


def run_transport(
    env: dict[str, str],
    transport: str,
    items: list[Item],
    workers: int | None,
    log_file: Path,
    tree: Path | None = None,
) -> tuple[float, float, int, float]:
    """Spans/s, log records/s, peak RSS and collector CPU microseconds per span (the collector of
    ``tree``, another checkout, when given)."""
    proc = start_collector(env, workers, log_file, tree)
    sampler = ProcessSampler(proc.pid)
    sampler.start()
    time.sleep(0.2)
    cpu_before = sum(sampler.cpu.values())
    try:
        started = time.perf_counter()
        sender = send_grpc if transport == "grpc" else send_http
        acked = asyncio.run(sender(env, items))
        elapsed = time.perf_counter() - started
        time.sleep(0.1)
        cpu_after = sum(sampler.cpu.values())
    finally:
        try:
            stop_server(proc)
        finally:
            peak, _ = sampler.stop()
    for signal, table in (("traces", "spans"), ("logs", "log_records"), ("metrics", "metric_points")):
        stored = count_rows(env, table)
        if stored < acked[signal]:
            raise SystemExit(f"{transport}: {acked[signal]} {signal} items acknowledged but only {stored} stored")
    reset_spans(env)
    spans = acked["traces"]
    return spans / elapsed, acked["logs"] / elapsed, peak, (cpu_after - cpu_before) / spans * 1e6


def ha_body(worker: int, n: int, batch: int) -> bytes:
    """An OTLP request of ``batch`` small spans with ids no other (worker, n) uses."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    now = time.time_ns()
    for i in range(batch):
        scope.spans.add(
            trace_id=bytes.fromhex(f"{worker + 1:08x}{n:024x}"),
            span_id=bytes.fromhex(f"{worker + 1:04x}{n:08x}{i:04x}"),
            name="bench",
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1_000_000,
        )
    return req.SerializeToString()


def ha_ingest(url: str, token: str, *, seconds: float, threads: int, batch: int, offset: int) -> float:
    """Acknowledged spans per second over ``seconds`` from ``threads`` OTLP/HTTP clients."""
    import httpx

    acked = [0] * threads
    stop = time.monotonic() + seconds
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {token}"}

    def run(worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            n = offset
            while time.monotonic() < stop:
                n += 1
                response = client.post(f"{url}/v1/traces", content=ha_body(worker, n, batch), headers=headers)
                if response.status_code == 200:
                    acked[worker] += batch

    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return sum(acked) / (time.monotonic() - started)


def run_ha(rounds: int, seconds: float, threads: int, batch: int) -> None:
    """The `--ha` measurement (module docstring): ``rounds`` of three phases on one throwaway
    `ha` stack."""
    import os
    import secrets as secrets_mod

    from benchlib import init_project

    from llmobs.config import Settings, update_env_file
    from llmobs.progress import SilentProgress
    from llmobs.stack import ha
    from llmobs.stack.compose import ComposeStack

    images = {k: v for k, v in os.environ.items() if k.startswith("LLMOBS_IMAGE_") or k == "LLMOBS_COMPOSE_FILES"}
    root = Path(tempfile.mkdtemp(prefix="llmobs-bench-ha-"))
    root.chmod(0o755)
    project = init_project(root)
    name = f"llmobs-bench-ha-{secrets_mod.token_hex(4)}"
    update_env_file(project / ".env", {**images, "COMPOSE_PROJECT_NAME": name, "LLMOBS_RUNTIME": "compose"})
    cli = [sys.executable, "-m", "llmobs", "--project-dir", str(project)]
    phases = ("synchronous_mode on", "asynchronous replication", "single node (replica stopped)")
    rates: dict[str, list[float]] = {p: [] for p in phases}
    try:
        print("starting a throwaway `ha` stack ...", flush=True)
        subprocess.run([*cli, "up", "--profile", "ha"], check=True, capture_output=True)
        settings = Settings.load(project)
        stack = ComposeStack(settings, profiles=(ha.PROFILE,))
        url = f"http://127.0.0.1:{settings.get_int('COLLECTOR_HTTP_PORT')}"
        token = settings.secret("LLMOBS_INGEST_API_KEY")
        ha_ingest(url, token, seconds=3, threads=threads, batch=batch, offset=0)  # warm-up
        offset = 0
        for n in range(rounds):
            for label in phases:
                if label == phases[0]:
                    ha.set_synchronous_mode(stack, True, timeout=180)
                elif label == phases[1]:
                    ha.set_synchronous_mode(stack, False)
                else:
                    replica = next(m.name for m in ha.members(stack) if m.role == "replica")
                    stack.stop([replica], SilentProgress())
                offset += 10_000_000
                rates[label].append(ha_ingest(url, token, seconds=seconds, threads=threads, batch=batch, offset=offset))
                print(f"round {n + 1}, {label}: {rates[label][-1]:,.0f} spans/s", flush=True)
            stack.start([replica], SilentProgress())
    finally:
        subprocess.run([*cli, "down", "--volumes", "--yes"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    median = {label: statistics.median(r) for label, r in rates.items()}
    on, off, single = (median[p] for p in phases)
    print(
        f"\n{'phase':32} {'spans/s':>9}   (median of {rounds} rounds; OTLP/HTTP, {threads} clients, "
        f"batches of {batch}, {seconds:g} s a phase)"
    )
    for label, rate in median.items():
        print(f"{label:32} {rate:9,.0f}   ({', '.join(f'{r:,.0f}' for r in rates[label])})")
    print(
        f"\ncost of synchronous_mode: {100 * (1 - on / single):.1f} % fewer spans/s than a single node, "
        f"{100 * (1 - on / off):.1f} % fewer than asynchronous replication"
    )
    print(json.dumps({"sync_on": round(on), "async": round(off), "single_node": round(single)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=100_000, help="spans sent per transport")
    parser.add_argument("--workers", type=int, default=None, help="COLLECTOR_WORKERS (default: the setting's)")
    parser.add_argument("--transports", default="grpc,http")
    parser.add_argument(
        "--rounds", type=int, default=None, help="repeat ceiling + transports (--ha: the phases); medians are reported"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--mixed", action="store_true", help="send GenAI log records and metrics beside the spans")
    parser.add_argument("--pipeline", action="store_true", help="only the CPU per span of decode, process, encode")
    parser.add_argument(
        "--against", type=Path, help="another checkout measured in the same run, alternating (same database schema)"
    )
    parser.add_argument("--ha", action="store_true", help="synchronous replication against a single node (compose)")
    parser.add_argument("--seconds", type=float, default=15, help="with --ha: seconds a phase")
    parser.add_argument("--threads", type=int, default=4, help="with --ha: OTLP/HTTP clients")
    parser.add_argument("--batch", type=int, default=100, help="with --ha: spans a request")
    args = parser.parse_args()
    if args.ha:
        run_ha(args.rounds or 2, args.seconds, args.threads, args.batch)
        return
    args.rounds = args.rounds or 1
    if args.against and not (args.against / "llmobs" / "__init__.py").is_file():
        parser.error("--against takes a checkout of llmobs (a directory with llmobs/)")
    against = args.against.resolve() if args.against else None
    if args.pipeline:
        print(f"generating {args.spans} spans in requests of {BATCH} ...", flush=True)
        run_pipeline(make_requests(args.spans, seed=1), args.rounds, against)
        return
    transports = args.transports.split(",")

    root = Path(tempfile.mkdtemp(prefix="llmobs-bench-ingest-"))
    root.chmod(0o755)
    print(f"generating {args.spans} spans in requests of {BATCH} ...", flush=True)
    requests = make_requests(args.spans, seed=1)
    counts = [ProtobufRequest(r).span_count for r in requests]
    signals = make_signal_requests(requests, seed=2) if args.mixed else []
    items: list[Item] = []
    for i, (body, n) in enumerate(zip(requests, counts, strict=True)):
        items.append(("traces", body, n))
        if signals:
            logs, records, metrics, points = signals[i]
            items += [("logs", logs, records), ("metrics", metrics, points)]
    n_spans, n_logs = sum(counts), sum(s[1] for s in signals)
    infra = start_infra(root)
    env = infra.env
    ceilings: list[float] = []  # spans/s of the COPY (log records/s: times n_logs / n_spans)
    runs: list[dict[str, tuple[float, float, int, float]]] = []
    #: collector CPU microseconds per span of the --against checkout, per transport, a run per round
    against_cpu: dict[str, list[float]] = {transport: [] for transport in transports}

    def ceiling() -> None:
        ceilings.append(n_spans / copy_ceiling(env, requests, signals))
        logs = f", {ceilings[-1] * n_logs / n_spans:,.0f} log records/s" if signals else ""
        print(f"COPY ceiling: {ceilings[-1]:,.0f} spans/s{logs}", flush=True)

    try:
        ceiling()
        for n in range(args.rounds):
            runs.append({})
            for transport in transports:
                log_file = root / f"collector-{transport}-{n}.log"
                rate, log_rate, peak, cpu = run_transport(env, transport, items, args.workers, log_file)
                runs[-1][transport] = (rate, log_rate, peak, cpu)
                logs = f", {log_rate:,.0f} log records/s" if signals else ""
                print(
                    f"{transport}: {rate:,.0f} spans/s{logs}, peak RSS {peak / 2**20:.0f} MiB, collector CPU "
                    f"{cpu:.1f} us/span",
                    flush=True,
                )
                if against:
                    log_file = root / f"collector-{transport}-{n}-against.log"
                    rate, _, _, cpu = run_transport(env, transport, items, args.workers, log_file, against)
                    against_cpu[transport].append(cpu)
                    print(
                        f"{transport} ({against.name}): {rate:,.0f} spans/s, collector CPU {cpu:.1f} us/span",
                        flush=True,
                    )
            ceiling()
    finally:
        infra.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    # Each round's rates are compared with the mean of the ceilings measured just before and after it.
    summary = {}
    for transport in transports:
        rates = [run[transport][0] for run in runs]
        ratios = [run[transport][0] / ((ceilings[n] + ceilings[n + 1]) / 2) for n, run in enumerate(runs)]
        summary[transport] = {
            "spans_per_s": round(statistics.median(rates)),
            "log_records_per_s": round(statistics.median(run[transport][1] for run in runs)),
            "ratio": round(statistics.median(ratios), 3),
            "peak_rss_mib": round(max(run[transport][2] for run in runs) / 2**20),
            "collector_cpu_us_per_span": round(statistics.median(run[transport][3] for run in runs), 1),
        }
    ceiling_rate = statistics.median(ceilings)
    workload = f"{n_spans} spans + {n_logs} GenAI log records + metrics" if signals else f"{n_spans} spans"
    print()
    print(
        f"{'transport':<10} {'spans/s':>10} {'logs/s':>10} {'of ceiling':>11} {'peak RSS':>10} {'CPU/span':>9}   "
        f"(ceiling {ceiling_rate:,.0f} spans/s, {ceiling_rate * n_logs / n_spans:,.0f} log records/s; {workload}, "
        f"batches of {BATCH}, concurrency {CONCURRENCY}, {args.rounds} round(s), medians)"
    )
    for transport, row in summary.items():
        print(
            f"{transport:<10} {row['spans_per_s']:>10,} {row['log_records_per_s']:>10,} {row['ratio']:>10.0%} "
            f"{row['peak_rss_mib']:>6} MiB {row['collector_cpu_us_per_span']:>6} us"
        )
    compared = {}
    for transport in transports if against else ():
        this = [run[transport][3] for run in runs]
        other = against_cpu[transport]
        this_cpu, other_cpu = statistics.median(this), statistics.median(other)
        compared[transport] = {"cpu_us_per_span": round(other_cpu, 1), "runs": [round(x, 1) for x in other]}
        print(
            f"{transport:<10} collector CPU/span: this checkout {this_cpu:.1f} us ({min(this):.1f}-{max(this):.1f}), "
            f"{against.name} {other_cpu:.1f} us ({min(other):.1f}-{max(other):.1f}): "
            f"{this_cpu - other_cpu:+.1f} us ({this_cpu / other_cpu - 1:+.0%})"
        )
    print(
        json.dumps(
            {
                "ceiling": round(ceiling_rate),
                "ceiling_log_records": round(ceiling_rate * n_logs / n_spans),
                **summary,
                **({"against": {"tree": str(against), **compared}} if against else {}),
            }
        )
    )
    if args.keep:
        print(f"kept {root}")


if __name__ == "__main__":
    main()
