"""`llmobs serve collector` as a real subprocess (the ``start_collector`` fixture of
tests/conftest.py starts them), and OTLP requests sent to it with real clients (grpcio, httpx)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from helpers.common import free_port

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


@dataclass
class RunningCollector:
    proc: subprocess.Popen
    env: dict[str, str]
    log_file: Path

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.env['COLLECTOR_GRPC_PORT']}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.env['COLLECTOR_HTTP_PORT']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['COLLECTOR_METRICS_PORT']}"

    @property
    def token(self) -> str:
        return self.env["LLMOBS_INGEST_API_KEY"]

    def logs(self) -> str:
        return self.log_file.read_text(errors="replace")

    def health(self) -> tuple[int, dict]:
        response = httpx.get(f"{self.metrics_url}/health", timeout=5)
        return response.status_code, response.json()

    def metric(self, name: str) -> float:
        """Sum of a metric's samples whose name (with labels) starts with ``name``."""
        text = httpx.get(f"{self.metrics_url}/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (drain) and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def collector_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    env = {
        **base,
        "COLLECTOR_GRPC_PORT": str(free_port()),
        "COLLECTOR_HTTP_PORT": str(free_port()),
        "COLLECTOR_METRICS_PORT": str(free_port()),
        "COLLECTOR_WORKERS": "1",
        "LLMOBS_LOG_LEVEL": "info",
    }
    env.update(extra)
    return env


def launch(env: dict[str, str], log_file: Path, *, wait_healthy: bool = True, timeout: float = 60) -> RunningCollector:
    child_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMOBS_", "DB_", "REDIS_", "COLLECTOR_", "PII_", "SAMPLING_", "OTEL_"))
    }
    child_env.update(env)
    # secrets go through the environment, never the arguments
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmobs", "serve", "collector"],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=log_file.open("ab"),
        start_new_session=True,
    )
    running = RunningCollector(proc, env, log_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"collector exited with {proc.returncode}:\n{running.logs()[-3000:]}")
        try:
            code, _ = running.health()
            if code == 200 or (code == 503 and not wait_healthy):
                return running
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    running.kill()
    raise AssertionError(f"collector not healthy after {timeout} s:\n{running.logs()[-3000:]}")


@dataclass
class CollectorFactory:
    base_env: dict[str, str]
    workdir: Path
    started: list[RunningCollector] = field(default_factory=list)

    def __call__(self, *, wait_healthy: bool = True, **extra: str) -> RunningCollector:
        env = collector_env(self.base_env, **extra)
        running = launch(env, self.workdir / f"collector-{len(self.started)}.log", wait_healthy=wait_healthy)
        self.started.append(running)
        return running

    def close(self) -> None:
        for running in self.started:
            running.kill()


# ---------------------------------------------------------------------------------------------
# requests


def otlp_request(spans: list[dict], resource: dict | None = None) -> bytes:
    """An ExportTraceServiceRequest. Each span dict: trace_id (hex), span_id (hex), name, start (ns),
    end (ns), optional parent, kind (int), status (int), attributes (dict), events (list)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (resource or {"service.name": "test-svc"}).items():
        rs.resource.attributes.append(key_value(k, v))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    for s in spans:
        sp = ss.spans.add(
            trace_id=bytes.fromhex(s["trace_id"]),
            span_id=bytes.fromhex(s["span_id"]),
            name=s.get("name", "op"),
            kind=s.get("kind", 1),
            start_time_unix_nano=s.get("start", time.time_ns()),
            end_time_unix_nano=s.get("end", time.time_ns() + 1_000_000),
        )
        if s.get("parent"):
            sp.parent_span_id = bytes.fromhex(s["parent"])
        sp.status.code = s.get("status", 0)
        for k, v in s.get("attributes", {}).items():
            sp.attributes.append(key_value(k, v))
    return req.SerializeToString()


def key_value(key: str, value: object):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, bytes):
        v.bytes_value = value
    else:
        v.string_value = str(value)
    return KeyValue(key=key, value=v)


def grpc_export(
    target: str, body: bytes, token: str | None, *, compression=None, timeout: float = 30, method: str = TRACE_EXPORT
):
    """Send raw request bytes to ``method`` (TRACE_EXPORT, LOGS_EXPORT, METRICS_EXPORT); returns
    (StatusCode, response bytes or details, trailing metadata dict)."""
    import grpc

    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)]) as channel:
        export = channel.unary_unary(method)
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            response, call = export.with_call(body, metadata=metadata, timeout=timeout, compression=compression)
        except grpc.RpcError as exc:
            return exc.code(), exc.details(), dict(exc.trailing_metadata() or ())
        return grpc.StatusCode.OK, response, dict(call.trailing_metadata() or ())


def http_export(
    base_url: str,
    body: bytes,
    token: str | None,
    *,
    content_type: str = "application/x-protobuf",
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    path: str = "/v1/traces",
) -> httpx.Response:
    all_headers = {"content-type": content_type, **(headers or {})}
    if token:
        all_headers["authorization"] = f"Bearer {token}"
    return httpx.post(f"{base_url}{path}", content=body, headers=all_headers, timeout=timeout)


class LoadThreads:
    """Client threads sending requests of new spans until the ``with`` block ends. A subclass's
    ``_run(worker)`` appends ``(time.monotonic(), span ids)`` to ``acked`` for every request the
    collector acknowledged and describes anything it does not retry in ``failures``."""

    def __init__(self, threads: int) -> None:
        self.acked: list[tuple[float, list[str]]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _run(self, worker: int) -> None:
        raise NotImplementedError

    def acked_ids(self) -> set[str]:
        return {s for _, ids in self.acked for s in ids}


def ids(n: int, prefix: int) -> list[tuple[str, str]]:
    """n distinct (trace id, span id) pairs."""
    return [(f"{prefix:08x}{i:024x}", f"{prefix:04x}{i:012x}") for i in range(1, n + 1)]
