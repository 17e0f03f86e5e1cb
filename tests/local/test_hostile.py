"""Hostile input and noisy neighbours (issue 17): one project's key, or no key, must not degrade
the service for another project. Each test drives an attack against the real servers and checks
that it is refused or absorbed, that another project's reads keep their latency (a baseline
measured in the same test, generous factors: the machine is noisy) and that health tells the truth.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import time
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest

from llmobs.store.retention import partitions

from helpers.api import api_client, llm_trace, make_project, store_spans
from helpers.collector import RunningCollector, grpc_export, http_export, otlp_request

NS_PER_DAY = 86_400 * 10**9


def read_latency(client, headers: dict[str, str], rounds: int = 5) -> float:
    """Median seconds of a cheap read of another project (the trace list), each answered 200."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = client.get("/api/v1/traces?limit=20", headers=headers)
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return statistics.median(timings)


def assert_latency_kept(before: float, after: float) -> None:
    """Another project's reads after the attack: at most a few times the baseline (plus noise)."""
    assert after < max(5 * before, before + 1.0), f"reads slowed from {before:.3f}s to {after:.3f}s"


@pytest.fixture
def neighbour(settings):
    """Project B with a few traces: the bystander whose reads must stay fast."""
    b = make_project(settings, "bystander")
    now = datetime.now(UTC)
    store_spans(settings, b.id, [s for i in range(5) for s in llm_trace(now - timedelta(minutes=5 + i))])
    return b


@pytest.fixture
def in_process_api(settings):
    """The api in-process (its own pool of the test database): for the neighbour's reads."""
    with api_client(settings) as client:
        yield client


def test_span_timestamps_outside_the_window_are_rejected_and_make_no_partitions(
    start_collector, settings, admin_conn, neighbour
):
    collector: RunningCollector = start_collector()
    partitions_before = partitions(admin_conn, "spans")
    with api_client(settings) as api:
        baseline = read_latency(api, neighbour.auth())

        # one request with spans on 400 different days from 1970 to 2500, plus one span in the window
        now_ns = time.time_ns()
        spans = [
            {"trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}", "start": i * 365 * NS_PER_DAY + NS_PER_DAY}
            for i in range(400)
        ]
        spans.append({"trace_id": "ab" * 16, "span_id": "ab" * 8, "start": now_ns, "end": now_ns + 10**6})
        body = otlp_request(spans)
        response = http_export(collector.http_url, body, collector.token, content_type="application/x-protobuf")
        assert response.status_code == 200
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        answer = ExportTraceServiceResponse.FromString(response.content)
        assert answer.partial_success.rejected_spans == 400
        assert "outside the accepted window" in answer.partial_success.error_message
        assert "COLLECTOR_MAX_SPAN_AGE_DAYS" in answer.partial_success.error_message
        code, details, _ = grpc_export(collector.grpc_target, body, collector.token)
        assert code == grpc.StatusCode.OK
        assert ExportTraceServiceResponse.FromString(details).partial_success.rejected_spans == 400

        # the same through the API: refused, named, nothing stored
        writer = make_project(settings, "attacker")
        future = {"trace_id": "cd" * 16, "span_id": "cd" * 8, "name": "x", "start_time": "2400-01-01T00:00:00Z"}
        response = api.post("/api/v1/spans", json=[future], headers=writer.auth("writer"))
        assert response.status_code == 422 and "outside the accepted window" in response.json()["error"]["message"]

        # no partition was made for any of those days; the span in the window was stored once per transport
        assert partitions(admin_conn, "spans") == partitions_before
        stored = admin_conn.execute("SELECT count(*) FROM spans WHERE span_id = %s", ("ab" * 8,)).fetchone()[0]
        assert stored == 2
        # the app role cannot create partitions by itself either
        import psycopg

        from llmobs.store.db import connect

        with connect(settings, "app", autocommit=True) as app, pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT llmobs_ensure_span_partition('2300-01-01')")

        assert_latency_kept(baseline, read_latency(api, neighbour.auth()))
    assert collector.health()[0] == 200 and collector.health()[1]["database"] == "up"
    assert collector.proc.poll() is None


def test_numbers_out_of_range_are_rejected_and_rollups_keep_working(start_collector, settings, admin_conn, neighbour):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    from llmobs.store.maintain import maintain

    collector: RunningCollector = start_collector()
    now_ns = time.time_ns()
    bad = [
        {"gen_ai.usage.cost": 1.7e308},
        {"gen_ai.usage.cost": 1.7e308},
        {"gen_ai.usage.cost": -5.0},
        {"llm.cost.prompt": 9e305, "llm.cost.completion": 9e305},
        {"gen_ai.usage.input_tokens": 2**62},
        {"gen_ai.usage.output_tokens": -1},
        {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10**12, "gen_ai.usage.output_tokens": 10**12},
    ]
    spans = [
        {"trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}", "start": now_ns, "attributes": a}
        for i, a in enumerate(bad)
    ]
    # a span lasting 30 days, and a good one
    spans.append({"trace_id": "aa" * 16, "span_id": "aa" * 8, "start": now_ns, "end": now_ns + 30 * NS_PER_DAY})
    good = {"trace_id": "ab" * 16, "span_id": "ab" * 8, "start": now_ns, "attributes": {"gen_ai.usage.cost": 0.5}}
    spans.append(good)
    response = http_export(collector.http_url, otlp_request(spans), collector.token)
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert answer.rejected_spans == len(spans) - 1, answer.error_message
    message = answer.error_message
    assert "gen_ai.usage.cost: 1.7e+308 is out of range (0 to 1e+06)" in message
    assert "gen_ai.usage.input_tokens: 4.61169e+18 is out of range (0 to 1e+12)" in message
    assert "gen_ai.usage.output_tokens: -1 is out of range" in message
    assert "computed cost (gpt-4o)" in message and "duration" in message

    with api_client(settings) as api:
        writer = make_project(settings, "attacker")
        span = {
            "trace_id": "cd" * 16,
            "span_id": "cd" * 8,
            "name": "x",
            "start_time": datetime.now(UTC).isoformat(),
            "attributes": {"gen_ai.usage.cost": 1.7e308},
        }
        response = api.post("/api/v1/spans", json=[span], headers=writer.auth("writer"))
        assert response.status_code == 422 and "out of range" in response.json()["error"]["message"]

    # the rollup refresh runs, and counts the one good span's cost
    admin_conn.execute("DELETE FROM llmobs_rollup_state")
    maintain(admin_conn, settings)
    total = admin_conn.execute("SELECT sum(cost_usd) FROM spans_rollup_1m WHERE project_id = 1").fetchone()[0]
    assert total == pytest.approx(0.5)


def gql(client, headers: dict[str, str], query: str, variables: dict | None = None):
    return client.post("/graphql", headers=headers, json={"query": query, "variables": variables or {}})


NESTED_FRAGMENTS = """query($id: String!) { trace(traceId: $id) { spans { ...L1 } } }
fragment L1 on Span { trace { spans { ...L2 } } }
fragment L2 on Span { trace { spans { ...L3 } } }
fragment L3 on Span { trace { spans { name spanId } } }"""


def test_graphql_cost_is_bounded(settings, neighbour):
    attacker = make_project(settings, "attacker")
    trace = llm_trace(datetime.now(UTC) - timedelta(minutes=3), calls=15)  # 16 spans
    store_spans(settings, attacker.id, trace)
    variables = {"id": trace[0].trace_id}
    with api_client(settings) as api:
        baseline = read_latency(api, neighbour.auth())

        nested = "spans { trace { " * 4 + "spans { name }" + " } }" * 4
        response = gql(api, attacker.auth(), f"query($id: String!) {{ trace(traceId: $id) {{ {nested} }} }}", variables)
        assert response.status_code == 400
        assert "inside another `trace`" in response.json()["error"]["message"]

        # the same through fragments (which validation sees one at a time): 16^4 spans, stopped early
        started = time.monotonic()
        response = gql(api, attacker.auth(), NESTED_FRAGMENTS, variables)
        assert response.status_code == 400, response.text[:500]
        error = response.json()["error"]
        assert error["code"] == "query_too_costly" and "API_GRAPHQL_MAX_OBJECTS" in error["message"]
        assert time.monotonic() - started < 10

        # 30 aliases, each listing traces and looking each one up: bounded the same way
        aliases = " ".join(
            f"a{i}: traces(first: 200) {{ traces {{ trace {{ spans {{ name }} }} }} }}" for i in range(30)
        )
        response = gql(api, attacker.auth(), f"{{ {aliases} }}")
        assert response.status_code in (200, 400), response.text[:500]
        assert api.get("/health/ready").status_code == 200

        # a document within every limit still works
        response = gql(
            api, attacker.auth(), "query($id: String!) { trace(traceId: $id) { spans { name } } }", variables
        )
        assert response.status_code == 200 and len(response.json()["data"]["trace"]["spans"]) == 16

        assert_latency_kept(baseline, read_latency(api, neighbour.auth()))

    with api_client(settings.with_overrides(API_GRAPHQL_MAX_RESPONSE_BYTES="2048")) as api:
        response = gql(
            api, attacker.auth(), "query($id: String!) { trace(traceId: $id) { spans { attributes } } }", variables
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "response_too_large"


# ---------------------------------------------------------------------------------------------
# unauthenticated and oversized traffic: refused before it costs memory or time


def raw_request(port: int, head: bytes, body: bytes = b"", *, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``head`` and ``body`` on a new connection and read until the server closes it or a
    response has arrived; the response bytes and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may close while we still send: its answer counts
            sock.sendall(head + body)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    return data, time.monotonic() - started


def read_response(sock) -> bytes:
    """A whole response: its head and as much body as its content-length says (or until closed)."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            if len(body) >= length:
                return data
        try:
            chunk = sock.recv(65536)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk


def post_head(path: str, length: int, token: str | None = None, extra: bytes = b"") -> bytes:
    auth = f"authorization: Bearer {token}\r\n".encode() if token else b""
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n".encode()
        + f"content-length: {length}\r\n".encode()
        + auth
        + extra
        + b"\r\n"
    )


def export_latency(collector: RunningCollector, token: str, rounds: int = 5) -> float:
    """Median seconds of a small export with ``token`` (each one stored)."""
    timings = []
    for i in range(rounds):
        body = otlp_request([{"trace_id": f"{0xE0 + i:032x}", "span_id": f"{0xE0 + i:016x}", "name": "probe"}])
        started = time.perf_counter()
        assert http_export(collector.http_url, body, token).status_code == 200
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def test_collector_refuses_unauthenticated_slow_huge_and_oversized_requests(
    start_collector, admin_conn, neighbour, in_process_api
):
    """The attacker sends with the default project's key; the neighbour's exports (another
    project's key) and its reads through the api keep their latency, measured before and during
    or after each attack."""
    import threading

    collector: RunningCollector = start_collector(
        HTTP_READ_TIMEOUT_SECONDS="2",
        COLLECTOR_MAX_INFLIGHT_BYTES=str(4 * 1024 * 1024),
        COLLECTOR_QUEUE_MAX_SPANS="1000",
        AUTH_FAILURES_PER_MINUTE="1000",
    )
    port = int(collector.env["COLLECTOR_HTTP_PORT"])
    api = in_process_api
    neighbour_writer = neighbour.keys["writer"]
    baseline = export_latency(collector, neighbour_writer)
    read_baseline = read_latency(api, neighbour.auth())

    # no key: 401 at once, before the 8 MiB body is sent, for every signal
    for path in ("/v1/traces", "/v1/logs", "/v1/metrics"):
        answer, took = raw_request(port, post_head(path, 8 * 1024 * 1024), b"x" * 1024)
        assert answer.startswith(b"HTTP/1.1 401") and took < 5, (path, answer[:200])

    # a header of 1 MiB: 431, connection closed
    answer, took = raw_request(port, post_head("/v1/traces", 0, extra=b"x-junk: " + b"a" * (1 << 20) + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 431") and took < 10

    # slow bodies with a valid key: each holds 3 MiB of a declared 6 MiB; the memory budget (4 MiB)
    # (shared by traces and logs) refuses the second at once, the read deadline ends the first
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        slow[0].sendall(post_head("/v1/traces", 6 << 20, collector.token) + b"\x00" * (3 << 20))
        time.sleep(0.5)
        slow[1].sendall(post_head("/v1/logs", 6 << 20, collector.token))
        with contextlib.suppress(OSError):
            slow[1].sendall(b"\x00" * (3 << 20))
        second = read_response(slow[1])
        assert second.startswith(b"HTTP/1.1 429") and b"COLLECTOR_MAX_INFLIGHT_BYTES" in second, second[:300]
        # others still get their spans in, and read, about as fast as before, while the first is held
        assert_latency_kept(baseline, export_latency(collector, neighbour_writer))
        assert_latency_kept(read_baseline, read_latency(api, neighbour.auth()))
        first = read_response(slow[0])  # the deadline: 408 within HTTP_READ_TIMEOUT_SECONDS
        assert first.startswith(b"HTTP/1.1 408"), first[:300]
    finally:
        for sock in slow:
            sock.close()

    # one request over COLLECTOR_QUEUE_MAX_SPANS: 429 however idle the queue is
    spans = [{"trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}"} for i in range(1500)]
    response = http_export(collector.http_url, otlp_request(spans), collector.token)
    assert response.status_code == 429 and "COLLECTOR_QUEUE_MAX_SPANS" in response.text
    assert_latency_kept(read_baseline, read_latency(api, neighbour.auth()))

    # 4 million empty spans in one 8 MB gRPC message, sent over and over: each refused quickly,
    # and the neighbour's reads keep their latency meanwhile
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for _ in range(4_000_000):
        scope.spans.add()
    body = request.SerializeToString()
    del request, scope
    answers: list[tuple[object, str, float]] = []
    reads_done = threading.Event()

    def flood() -> None:
        while not reads_done.is_set() or not answers:
            started = time.monotonic()
            code, details, _ = grpc_export(collector.grpc_target, body, collector.token)
            answers.append((code, details, time.monotonic() - started))

    attacker = threading.Thread(target=flood)
    attacker.start()
    try:
        during = read_latency(api, neighbour.auth())
    finally:
        reads_done.set()
        attacker.join(timeout=120)
    assert answers and all(code == grpc.StatusCode.RESOURCE_EXHAUSTED for code, _, _ in answers), answers[:1]
    assert all("COLLECTOR_MAX_INFLIGHT_BYTES" in details and took < 10 for _, details, took in answers)
    assert_latency_kept(read_baseline, during)

    assert collector.proc.poll() is None
    assert collector.health() == (200, collector.health()[1]) and collector.health()[1]["database"] == "up"
    assert_latency_kept(baseline, export_latency(collector, neighbour_writer))
    assert_latency_kept(read_baseline, read_latency(api, neighbour.auth()))
    stored = admin_conn.execute("SELECT count(*) FROM spans WHERE name = 'probe' AND project_id = %s", (neighbour.id,))
    assert stored.fetchone()[0] > 0


def test_failed_authentications_are_rate_limited(start_collector):
    collector: RunningCollector = start_collector(AUTH_FAILURES_PER_MINUTE="5")
    body = otlp_request([{"trace_id": "ab" * 16, "span_id": "ab" * 8}])
    statuses = [http_export(collector.http_url, body, f"llmobs_bad_{i}").status_code for i in range(5)]
    assert statuses == [401] * 5
    refused = http_export(collector.http_url, body, "llmobs_bad_again")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    code, _, _ = grpc_export(collector.grpc_target, body, "llmobs_bad_grpc")
    assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_a_key_in_use_keeps_working_from_an_address_being_limited(start_collector, settings, admin_conn):
    """Clients behind one NAT share the failed-authentication limit. While a guesser at that
    address is refused, a key the server accepted lately (and, on the api, a JWT it signed) is
    still checked and served; a key it has not seen yet waits like the guesses (it cannot be told
    from one without a lookup); a revoked key is refused."""
    from llmobs.store import apikeys

    collector: RunningCollector = start_collector(AUTH_FAILURES_PER_MINUTE="5")
    office = make_project(settings, "office")  # a client behind the NAT, sending with its writer key
    writer = office.keys["writer"]

    def export(n: int, token: str) -> int:
        body = otlp_request([{"trace_id": f"{0xA0 + n:032x}", "span_id": f"{0xA0 + n:016x}", "name": "behind-nat"}])
        return http_export(collector.http_url, body, token).status_code

    assert export(0, writer) == 200
    assert [export(100 + i, f"llmobs_bad_{i}") for i in range(5)] == [401] * 5  # the guesser, same address
    assert export(105, "llmobs_bad_again") == 429
    assert export(1, writer) == 200  # the key in use goes on
    code, _, _ = grpc_export(
        collector.grpc_target, otlp_request([{"trace_id": "a2" * 16, "span_id": "a2" * 8}]), writer
    )
    assert code == grpc.StatusCode.OK
    assert export(106, "llmobs_bad_still") == 429  # guesses are still refused, without a lookup
    assert export(2, office.keys["admin"]) == 429  # valid, but never seen by this collector
    stored = admin_conn.execute("SELECT count(*) FROM spans WHERE project_id = %s", (office.id,)).fetchone()[0]
    assert stored == 3

    # revoked (the collector hears of it at once): refused, then counted as a guess like any other
    apikeys.revoke_key(admin_conn, writer.split("_")[1])
    deadline = time.monotonic() + 15
    while (status := export(3, writer)) == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status in (401, 429), status
    assert export(4, writer) == 429

    with api_client(settings.with_overrides(AUTH_FAILURES_PER_MINUTE="5")) as api:
        reader = office.auth("reader")
        assert api.get("/api/v1/traces", headers=reader).status_code == 200
        guesses = [api.get("/api/v1/traces", headers={"Authorization": f"Bearer llmobs_x_{i}"}) for i in range(6)]
        assert [r.status_code for r in guesses] == [401] * 5 + [429]
        assert guesses[-1].json()["error"]["code"] == "auth_rate_limited"
        assert api.get("/api/v1/traces", headers=reader).status_code == 200
        # a JWT issued now is signed by this API: no guess, served at once
        issued = api.post("/api/v1/auth/token", headers=reader)
        assert issued.status_code == 200, issued.text
        jwt_auth = {"Authorization": f"Bearer {issued.json()['access_token']}"}
        assert api.get("/api/v1/traces", headers=jwt_auth).status_code == 200
        for unknown in (office.keys["admin"], "a.b.c"):  # a key not seen yet, a forged token
            answer = api.get("/api/v1/traces", headers={"Authorization": f"Bearer {unknown}"})
            assert answer.status_code == 429 and int(answer.headers["retry-after"]) > 0


def test_api_checks_credentials_before_the_body_and_bounds_heads_and_slow_bodies(
    pg_server, redis_server, db_name, neighbour
):
    from helpers.api import start_api as _start
    from helpers.api import stop_api as _stop
    from helpers.common import settings_env

    env = settings_env(pg_server, redis_server, db_name, HTTP_READ_TIMEOUT_SECONDS="2", LLMOBS_LOG_LEVEL="warning")
    api = _start(env, 1)
    port = int(api.base.rsplit(":", 1)[1])
    client = httpx.Client(base_url=api.base, timeout=60)
    try:

        def reads() -> float:
            return read_latency(client, neighbour.auth())

        baseline = reads()
        # no key: 401 at once, the 15 MiB body never read
        for path in ("/api/v1/spans", "/api/v1/query", "/graphql"):
            answer, took = raw_request(port, post_head(path, 15 << 20), b"{" * 4096)
            assert answer.startswith(b"HTTP/1.1 401") and took < 5, answer[:200]
        # a 1 MiB header: 431
        answer, _ = raw_request(port, post_head("/graphql", 0, extra=b"x-junk: " + b"a" * (1 << 20) + b"\r\n"))
        assert answer.startswith(b"HTTP/1.1 431")
        # a body that never ends, with a valid key: 408 after HTTP_READ_TIMEOUT_SECONDS
        token = neighbour.keys["reader"]
        answer, took = raw_request(port, post_head("/graphql", 1000, token), b'{"query": "')
        assert answer.startswith(b"HTTP/1.1 408") and took < 15, answer[:200]
        assert_latency_kept(baseline, reads())
        assert httpx.get(f"{api.base}/health/ready", timeout=10).status_code == 200
    finally:
        client.close()
        _stop(api.proc)


def test_lone_surrogates_get_a_clean_400(settings, neighbour, caplog):
    import logging

    writer = make_project(settings, "surrogates")
    bodies = {
        "/api/v1/query": b'{"from": "2026-01-01T00:00:00Z", '
        b'"filters": [{"field": "model", "op": "eq", "value": "\\ud800"}]}',
        "/api/v1/spans": b'[{"trace_id": "'
        + b"ab" * 16
        + b'", "span_id": "'
        + b"ab" * 8
        + b'", "name": "\\ud800x", "start_time": "2026-01-01T00:00:00Z"}]',
        "/graphql": b'{"query": "query($m: String) { traces(filter: {model: $m}) { nextCursor } }", '
        b'"variables": {"m": "\\udfff"}}',
    }
    with caplog.at_level(logging.ERROR), api_client(settings) as api:
        for path, body in bodies.items():
            response = api.post(
                path, content=body, headers={**writer.auth("writer"), "content-type": "application/json"}
            )
            assert response.status_code == 400, (path, response.text)
            assert response.json()["error"]["code"] == "invalid_json" and "surrogate" in response.text
        assert read_latency(api, neighbour.auth()) < 5
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


SECRET = "sk-proj-" + "Z9" * 16


def test_redaction_covers_every_column_and_keeps_json_valid(start_collector, settings, admin_conn):
    import json

    collector: RunningCollector = start_collector(PII_DETECTORS="bearer_token,api_key,email")
    now_ns = time.time_ns()
    messages = json.dumps([{"role": "user", "content": "hi\njose@example.com and jos\u00e9@example.org"}])
    spans = [
        {
            "trace_id": "c1" * 16,
            "span_id": "c1" * 8,
            "name": f"chat {SECRET}",
            "start": now_ns,
            "attributes": {
                "gen_ai.request.model": SECRET,
                "gen_ai.system": f"openai {SECRET}",
                "gen_ai.response.finish_reasons": f"stop {SECRET}",
                "http.request.header.authorization": "x\tBearer\tabcdefghijklmnopqrstuvwxyz",
                "note": "Bearer\nabcdefghijklmnopqrstuvwxyz",
                "gen_ai.input.messages": messages,
                "user.email": "josé@example.com",
            },
        }
    ]
    response = http_export(collector.http_url, otlp_request(spans), collector.token)
    assert response.status_code == 200
    row = admin_conn.execute("SELECT * FROM spans WHERE span_id = %s", ("c1" * 8,)).fetchone()
    stored = json.dumps([str(v) for v in row], ensure_ascii=False)
    for leaked in (SECRET, "abcdefghijklmnopqrstuvwxyz", "jose@example.com", "josé@example.com", "\\u00e9@example"):
        assert leaked not in stored, leaked
    inputs = admin_conn.execute("SELECT input_messages FROM spans WHERE span_id = %s", ("c1" * 8,)).fetchone()[0]
    # the message array (moved from the attributes to input_messages) is still valid JSON, the
    # escape before the address kept
    assert inputs[0]["parts"][0]["content"].startswith("hi\n[REDACTED:email]")
    with api_client(settings) as api:  # the trace list of the default project
        from llmobs.store import apikeys
        from llmobs.store.db import connect

        with connect(settings, "admin", autocommit=True) as conn:
            token = apikeys.create_key(conn, project="default", role="reader", name="r", actor="test").token
        listing = api.get("/api/v1/traces?limit=5", headers={"Authorization": f"Bearer {token}"})
        assert listing.status_code == 200 and SECRET not in listing.text
        assert any("[REDACTED:api_key]" in m for t in listing.json()["traces"] for m in t["models"])

    # log records take the same care: every column taken from the record is scrubbed
    text = {"stringValue": f"x {SECRET}"}
    record = {
        "timeUnixNano": str(now_ns),
        "severityText": f"INFO {SECRET}",
        "eventName": f"gen_ai.choice {SECRET}",
        "attributes": [{"key": "note", "value": {"stringValue": "Bearer\tabcdefghijklmnopqrstuvwxyz"}}],
        "body": text,
    }
    logs = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": f"svc {SECRET}"}}]},
                "scopeLogs": [{"scope": {"name": f"scope {SECRET}"}, "logRecords": [record]}],
            }
        ]
    }
    response = http_export(
        collector.http_url, json.dumps(logs).encode(), collector.token, path="/v1/logs", content_type="application/json"
    )
    assert response.status_code == 200, response.text
    row = admin_conn.execute("SELECT * FROM log_records ORDER BY ingested_at DESC LIMIT 1").fetchone()
    stored = json.dumps([str(v) for v in row], ensure_ascii=False)
    assert "[REDACTED:api_key]" in stored
    for leaked in (SECRET, "abcdefghijklmnopqrstuvwxyz"):
        assert leaked not in stored, leaked


def bulk_spans(settings, project_id: int, count: int) -> None:
    """``count`` root spans of ``project_id`` over the last days, COPYed straight in (fast)."""
    from llmobs.store.db import connect
    from llmobs.store.spans import SpanRow, copy_spans

    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        start = now - timedelta(seconds=5 + i * 2)
        rows.append(
            SpanRow(
                project_id, f"{i + 1:032x}", f"{i + 1:016x}", None, f"svc-{i % 50}", None, None, f"op {i}",
                "server", start, start + timedelta(milliseconds=i % 997), float(i % 997), "ok", None,
                "openai", "gpt-4o", "gpt-4o", "chat", 10, 5, 15, None, None, 0.001, "client", None,
                f"user-{i % 300}", None, "{}", "[]", "{}",
            )
        )  # fmt: skip
    with connect(settings, "admin", autocommit=True) as conn, conn.transaction():
        copy_spans(conn, rows)
        conn.execute("ANALYZE spans")


def test_one_projects_slow_reads_do_not_starve_another(pg_server, redis_server, db_name, settings, neighbour):
    import threading

    from helpers.api import start_api as _start
    from helpers.api import stop_api as _stop
    from helpers.common import settings_env

    noisy = make_project(settings, "noisy")
    bulk_spans(settings, noisy.id, 200_000)
    env = settings_env(
        pg_server, redis_server, db_name, DB_POOL_SIZE="4", API_MAX_READS_PER_PROJECT="2", API_QUERY_TIMEOUT_MS="1500"
    )
    api = _start(env, 1)
    since = (datetime.now(UTC) - timedelta(days=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    slow_query = f"{api.base}/api/v1/traces?limit=200&sort=duration_ms&from={since}"
    stop = threading.Event()
    noisy_statuses: list[int] = []

    def hammer() -> None:
        with httpx.Client(timeout=60, headers=noisy.auth()) as client:
            while not stop.is_set():  # a different page size each time: never served from the cache
                limit = 100 + len(noisy_statuses) % 100
                noisy_statuses.append(client.get(slow_query.replace("limit=200", f"limit={limit}")).status_code)

    try:
        one = time.perf_counter()
        assert httpx.get(slow_query, headers=noisy.auth(), timeout=60).status_code == 200
        slow_seconds = time.perf_counter() - one

        def reads() -> float:
            with httpx.Client(base_url=api.base, timeout=60) as client:
                return read_latency(client, neighbour.auth())

        baseline = reads()
        threads = [threading.Thread(target=hammer) for _ in range(30)]
        for t in threads:
            t.start()
        time.sleep(max(1.0, 2 * slow_seconds))
        during = reads()
        stop.set()
        for t in threads:
            t.join(timeout=120)
        print(
            f"neighbour reads: {baseline:.3f}s alone, {during:.3f}s during 30 slow readers ({slow_seconds:.3f}s each)"
        )
        # the neighbour waits at most for one slow read (a connection the noisy project cannot take)
        assert during < max(5 * baseline, baseline + 0.5, 2 * slow_seconds), (baseline, during, slow_seconds)
        assert set(noisy_statuses) <= {200, 429} and 200 in noisy_statuses

        # one GraphQL request running 30 of those reads: cut off by its time budget
        # (API_QUERY_TIMEOUT_MS for all its queries together), not run for 30 x 0.3 s. A page size
        # of its own for each: identical ones would share one computation (and the cache).
        aliases = " ".join(
            f'a{i}: traces(first: {170 + i}, sort: DURATION_MS, filter: {{from: "{since}"}}) {{ nextCursor }}'
            for i in range(30)
        )
        started = time.monotonic()
        response = httpx.post(
            f"{api.base}/graphql", json={"query": f"{{ {aliases} }}"}, headers=noisy.auth(), timeout=60
        )
        took = time.monotonic() - started
        # On a quiet machine the 30 reads may all fit in the budget; they never run past it.
        if response.status_code == 200:
            assert took < 1.5 + 1.0, took
        else:
            assert response.status_code == 422 and "API_QUERY_TIMEOUT_MS" in response.text, response.text[:300]
            assert took < 5, took
    finally:
        stop.set()
        _stop(api.proc)


def test_local_runtime_keeps_data_and_logs_private(project):
    """Redis's AOF/RDB (every project's cached results) and the logs (request details): 0600
    files in 0700 directories (the log directory 0711 when PostgreSQL runs as its own OS user)."""
    import os
    import stat

    from helpers.common import run_cli

    up = run_cli("up", "--runtime", "local", project_dir=project)
    assert up.returncode == 0, up.stdout + up.stderr
    run_cli("status", project_dir=project)  # writes to llmobs.log too
    # the AOF rewrite / RDB save create new files: they must be private as well
    assert run_cli("down", project_dir=project, timeout=120).returncode == 0
    checked = []
    for top in (project / "data" / "redis", project / "logs"):
        assert top.is_dir(), top
        mode = stat.S_IMODE(top.stat().st_mode)
        assert mode in (0o700, 0o711), (top, oct(mode))
        for root, dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, (path, oct(os.stat(path).st_mode))
                checked.append(name)
            for name in dirs:
                path = os.path.join(root, name)
                assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, (path, oct(os.stat(path).st_mode))
    assert any(n.endswith((".aof", ".rdb")) or "appendonly" in n for n in checked), checked
    assert any(n.endswith(".log") for n in checked), checked


def test_health_and_status_tell_the_truth(project):
    from llmobs.config import Settings, read_env_file
    from llmobs.stack.local import LocalStack

    from helpers.common import run_cli
    from helpers.local import admin_conn as local_admin_conn
    from helpers.local import status_json

    env_file = project / ".env"
    env_file.write_text(env_file.read_text() + "MAINTAIN_INTERVAL_SECONDS=5\n")
    up = run_cli("up", "--runtime", "local", project_dir=project)
    assert up.returncode == 0, up.stdout + up.stderr
    env = read_env_file(env_file)

    def status() -> tuple[int, dict]:
        return status_json(project)

    assert status()[0] == 0
    # maintenance starts failing for everyone: status says so within a few passes
    with local_admin_conn(project) as conn:
        conn.execute("ALTER FUNCTION llmobs_refresh_rollups(timestamptz) RENAME TO llmobs_refresh_rollups_gone")
    deadline = time.monotonic() + 90
    warnings: list[str] = []
    while time.monotonic() < deadline:
        code, body = status()
        warnings = body.get("warnings") or body.get("facts", {}).get("warnings") or []
        if code != 0 and any("database maintenance" in w for w in warnings):
            break
        time.sleep(3)
    assert code != 0 and any("database maintenance" in w for w in warnings), (code, body)
    assert body["overall"] == "degraded"
    maintain = run_cli("db", "maintain", project_dir=project)
    assert maintain.returncode != 0 and "database maintenance failed" in maintain.stderr + maintain.stdout
    assert "Traceback" not in maintain.stderr + maintain.stdout

    # PostgreSQL stops: the collector's health says so within seconds, without any span sent
    health = f"http://127.0.0.1:{env['COLLECTOR_METRICS_PORT']}/health"
    assert httpx.get(health, timeout=5).json()["database"] == "up"
    LocalStack(Settings.load(project)).cluster.stop(mode="immediate")
    stopped = time.monotonic()
    answer = None
    while time.monotonic() - stopped < 15:
        answer = httpx.get(health, timeout=5)
        if answer.status_code == 503:
            break
        time.sleep(0.25)
    assert answer is not None and answer.status_code == 503 and answer.json()["database"] == "down"
    assert time.monotonic() - stopped < 10
    assert status()[0] != 0
