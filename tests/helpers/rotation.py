"""Clients that keep using the stack while its secrets rotate, and checks for what they saw:
a real OpenTelemetry SDK exporter sending spans over OTLP/gRPC, a reader listing traces through
the API with one JWT, and a sampler of every process's arguments."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from llmobs.config import SETTINGS, read_env_file

SECRET_NAMES = [s.name for s in SETTINGS if s.secret]


class _RetryCounter(logging.Handler):
    """Counts the exporter's transient-error retries (each one is a request the server refused)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Transient error" in record.getMessage():
            self.count += 1


class SpanSender:
    """Traces of three spans from the OpenTelemetry SDK through its OTLP/gRPC exporter; the span
    ids of every batch the collector acknowledged are kept."""

    def __init__(self, port: int, ingest_key: str) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        sender = self
        self.acked: set[str] = set()
        self.failed_batches = 0
        self.retries = _RetryCounter()
        logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").addHandler(self.retries)
        inner = OTLPSpanExporter(
            endpoint=f"http://127.0.0.1:{port}",
            insecure=True,
            timeout=30,
            headers=(("authorization", f"Bearer {ingest_key}"),),
        )

        class Recording(SpanExporter):
            def export(self, spans):  # type: ignore[no-untyped-def]
                result = inner.export(spans)
                if result == SpanExportResult.SUCCESS:
                    sender.acked.update(format(s.context.span_id, "016x") for s in spans)
                else:
                    sender.failed_batches += 1
                return result

            def shutdown(self) -> None:
                inner.shutdown()

        self.provider = TracerProvider(resource=Resource.create({"service.name": "rotation-load"}))
        self.provider.add_span_processor(
            BatchSpanProcessor(Recording(), schedule_delay_millis=50, max_export_batch_size=30, max_queue_size=100_000)
        )
        self.tracer = self.provider.get_tracer("rotation-test")
        self.created = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.tracer.start_as_current_span("agent.run"):
                for _ in range(2):
                    with self.tracer.start_as_current_span("chat gpt-4o") as span:
                        span.set_attribute("gen_ai.system", "openai")
                        span.set_attribute("gen_ai.request.model", "gpt-4o")
                        span.set_attribute("gen_ai.usage.input_tokens", 12)
                        span.set_attribute("gen_ai.usage.output_tokens", 7)
            self.created += 3
            time.sleep(0.02)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.provider.force_flush(60_000)
        self.provider.shutdown()
        logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").removeHandler(self.retries)


class TraceReader:
    """Lists traces through the API with one JWT, as a dashboard would, and records every answer
    that is not a 200."""

    def __init__(self, port: int, token: str) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        self.token = token
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.client.get(
                    "/api/v1/traces", params={"limit": 5}, headers={"Authorization": f"Bearer {self.token}"}
                )
                if resp.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self.client.close()


class FreshTokenUser:
    """Fetches a new JWT and uses it at once, over and over, each request on a new connection: with
    several api replicas, a token issued by one replica is often presented to another. Records the
    key ids it was issued tokens with and every answer that is not a 200."""

    def __init__(self, port: int, api_key: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.api_key = api_key
        self.used = 0
        self.kids: set[str] = set()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _once(self) -> None:
        import jwt

        resp = httpx.post(
            f"{self.base}/api/v1/auth/token", headers={"Authorization": f"Bearer {self.api_key}"}, timeout=10
        )
        if resp.status_code != 200:
            self.failures.append(f"token: HTTP {resp.status_code}: {resp.text[:200]}")
            return
        token = resp.json()["access_token"]
        self.kids.add(jwt.get_unverified_header(token)["kid"])
        resp = httpx.get(
            f"{self.base}/api/v1/traces", params={"limit": 1}, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        if resp.status_code == 200:
            self.used += 1
        else:
            self.failures.append(f"use: HTTP {resp.status_code}: {resp.text[:200]}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._once()
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.02)

    def __enter__(self) -> FreshTokenUser:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


class ProcessArgsSampler:
    """`ps -eo args` over and over while running: every command line seen on the machine."""

    def __init__(self) -> None:
        self.samples: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
            time.sleep(0.02)

    def __enter__(self) -> ProcessArgsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def issue_jwt(env: dict[str, str]) -> str:
    resp = httpx.post(
        f"http://127.0.0.1:{env['API_PORT']}/api/v1/auth/token",
        headers={"Authorization": f"Bearer {env['LLMOBS_ADMIN_API_KEY']}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def api_status(env: dict[str, str], token: str) -> int:
    return httpx.get(
        f"http://127.0.0.1:{env['API_PORT']}/api/v1/traces",
        params={"limit": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).status_code


def pg_accepts(env: dict[str, str], user: str, password: str) -> bool:
    """Whether PostgreSQL lets ``user`` in; False only for a refused login (not an outage)."""
    try:
        psycopg.connect(
            host="127.0.0.1",
            port=int(env["DB_PORT"]),
            dbname=env["DB_NAME"],
            user=user,
            password=password,
            connect_timeout=5,
        ).close()
        return True
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc) or "not permitted to log in" in str(exc), exc
        return False


def pg_refuses(env: dict[str, str], user: str, password: str) -> bool:
    return not pg_accepts(env, user, password)


def redis_accepts(env: dict[str, str], password: str) -> bool:
    client = redis.Redis(
        host="127.0.0.1",
        port=int(env["REDIS_PORT"]),
        username=env["REDIS_USER"],
        password=password,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        return False
    finally:
        client.close()


def redis_refuses(env: dict[str, str], password: str) -> bool:
    return not redis_accepts(env, password)


def stored_span_ids(env: dict[str, str], span_ids: set[str]) -> set[str]:
    with psycopg.connect(
        host="127.0.0.1", port=int(env["DB_PORT"]), dbname=env["DB_NAME"], user="postgres", password=env["DB_PASSWORD"]
    ) as conn:
        rows = conn.execute(
            "SELECT span_id FROM spans WHERE service_name = 'rotation-load' AND span_id = ANY(%s)", (list(span_ids),)
        ).fetchall()
    return {r[0] for r in rows}


def secret_values(*envs: dict[str, str]) -> dict[str, str]:
    found = {}
    for env in envs:
        for key, value in env.items():
            if value and len(value) >= 8 and (key in SECRET_NAMES or key.endswith(("_NEXT", "_RETIRED"))):
                found[value] = key
    return found


def assert_no_secret_in(texts: list[str], secrets: dict[str, str], where: str) -> None:
    for text in texts:
        for value, key in secrets.items():
            assert value not in text, f"{key} appeared in {where}"


def load_clients(project: Path) -> tuple[SpanSender, TraceReader, str]:
    env = read_env_file(project / ".env")
    token = issue_jwt(env)
    sender = SpanSender(int(env["COLLECTOR_GRPC_PORT"]), env["LLMOBS_INGEST_API_KEY"])
    reader = TraceReader(int(env["API_PORT"]), token)
    sender.start()
    reader.start()
    deadline = time.monotonic() + 60
    while (not sender.acked or not reader.ok) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sender.acked and reader.ok, f"the load never got through: {reader.failures[:3]}"
    return sender, reader, token


def wait_for_load_to_go_on(sender: SpanSender, reader: TraceReader, what: str, *, timeout: float = 30) -> None:
    """Return once the collector has acknowledged spans and the API has answered reads that were
    sent after this call began: each counter grows twice, so the second batch and read left the
    clients after the first ones came back, not before ``what`` happened. Fails naming ``what``
    when the load stalls for ``timeout`` seconds (generous: a loaded machine is slow, not broken)."""
    deadline = time.monotonic() + timeout
    for _ in range(2):
        acked, reads = len(sender.acked), reader.ok
        while not (len(sender.acked) > acked and reader.ok > reads):
            assert time.monotonic() < deadline, (
                f"load stalled {what}: {len(sender.acked) - acked} spans acknowledged, {reader.ok - reads} reads "
                f"in {timeout:.0f} s; {reader.failures[-3:]}"
            )
            time.sleep(0.05)


def assert_nothing_failed_or_lost(
    project: Path, sender: SpanSender, reader: TraceReader, *, allow_retries: bool = False
) -> None:
    """No read failed, no export failed, every acknowledged span is stored. ``allow_retries``
    tolerates export requests the collector refused as retryable (OTLP UNAVAILABLE, which the
    SDK retries), e.g. from a replica that takes traffic before its database pool is up."""
    print(
        f"{len(sender.acked)} spans acknowledged, {sender.retries.count} export retries, "
        f"{reader.ok} reads, {len(reader.failures)} failed reads"
    )
    assert reader.failures == [], f"{len(reader.failures)} failed reads, e.g. {reader.failures[:5]}"
    assert sender.failed_batches == 0, f"{sender.failed_batches} span batches failed"
    if not allow_retries:
        assert sender.retries.count == 0, f"the collector refused {sender.retries.count} export request(s)"
    env = read_env_file(project / ".env")
    missing = sender.acked - stored_span_ids(env, sender.acked)
    assert not missing, f"{len(missing)} of {len(sender.acked)} acknowledged spans are not in the database"
