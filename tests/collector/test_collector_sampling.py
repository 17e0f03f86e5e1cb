"""Head and tail sampling: which traces end up stored."""

from __future__ import annotations

import time

import grpc

from llmobs.collector.sampling import head_keep

from helpers.collector import grpc_export, otlp_request


def stored_traces(admin_conn) -> dict[str, int]:
    return dict(admin_conn.execute("SELECT trace_id, count(*) FROM spans GROUP BY 1").fetchall())


def test_head_sampling_keeps_whole_traces_the_same_way_on_every_instance(start_collector, admin_conn):
    """Two collectors each get one span of every trace: a trace is kept whole or not at all, and
    exactly as OpenTelemetry's TraceIdRatioBased sampler at the same rate decides."""
    from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

    a = start_collector(SAMPLING_HEAD_RATE="0.5")
    b = start_collector(SAMPLING_HEAD_RATE="0.5")
    traces = [f"{(i * 0x9E3779B97F4A7C15) % 2**128:032x}" for i in range(1, 201)]
    for c, span_id in ((a, "01" * 8), (b, "02" * 8)):
        body = otlp_request([{"trace_id": t, "span_id": span_id} for t in traces])
        assert grpc_export(c.grpc_target, body, c.token)[0] == grpc.StatusCode.OK
    kept = stored_traces(admin_conn)
    assert set(kept.values()) == {2}
    sdk = TraceIdRatioBased(0.5)
    expected = {t for t in traces if sdk.should_sample(None, int(t, 16), "x").decision == Decision.RECORD_AND_SAMPLE}
    assert set(kept) == expected == {t for t in traces if head_keep(t, 0.5)}
    assert 60 < len(kept) < 140
    assert a.metric('llmobs_collector_spans_sampled_out_total{sampler="head"}') == 200 - len(kept)


def test_tail_sampling_keeps_errors_slow_costly_and_priority_traces(start_collector, admin_conn):
    c = start_collector(
        SAMPLING_TAIL_ENABLED="true",
        SAMPLING_TAIL_DECISION_WAIT_SECONDS="1",
        SAMPLING_TAIL_LATENCY_MS="1000",
        SAMPLING_TAIL_COST_USD="0.01",
        SAMPLING_TAIL_RATE="0",
    )
    now = time.time_ns()

    def trace(n: int, **child) -> list[dict]:
        t = f"{n:032x}"
        return [
            {"trace_id": t, "span_id": f"{n:08x}00000001", "start": now, "end": now + 10_000_000},
            {
                "trace_id": t,
                "span_id": f"{n:08x}00000002",
                "parent": f"{n:08x}00000001",
                "start": now,
                "end": now + 10_000_000,
                **child,
            },
        ]

    spans = (
        trace(1, status=2)  # error
        + trace(2, end=now + 2_000_000_000)  # slow
        + trace(
            3,
            attributes={
                "gen_ai.request.model": "gpt-4o",  # 0.025 USD
                "gen_ai.usage.input_tokens": 10_000,
            },
        )
        + trace(4, attributes={"sampling.priority": 1})  # marked by the app
        + [s for n in range(10, 15) for s in trace(n)]
    )  # ordinary: rate 0
    started = time.monotonic()
    assert grpc_export(c.grpc_target, otlp_request(spans), c.token)[0] == grpc.StatusCode.OK
    assert time.monotonic() - started < 1.0  # acknowledged before the decision wait is over
    assert stored_traces(admin_conn) == {}

    deadline = time.monotonic() + 10
    while len(stored_traces(admin_conn)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored_traces(admin_conn) == {f"{n:032x}": 2 for n in (1, 2, 3, 4)}

    late = [
        {"trace_id": f"{1:032x}", "span_id": f"{1:08x}00000009"},  # follows its trace: kept
        {"trace_id": f"{10:032x}", "span_id": f"{10:08x}00000009"},
    ]  # follows its trace: dropped
    assert grpc_export(c.grpc_target, otlp_request(late), c.token)[0] == grpc.StatusCode.OK
    time.sleep(0.5)
    assert stored_traces(admin_conn) == {f"{1:032x}": 3, **{f"{n:032x}": 2 for n in (2, 3, 4)}}
    assert c.metric('llmobs_collector_spans_sampled_out_total{sampler="tail"}') == 11


def test_tail_sampled_spans_are_written_on_sigterm(start_collector, admin_conn):
    c = start_collector(SAMPLING_TAIL_ENABLED="true", SAMPLING_TAIL_DECISION_WAIT_SECONDS="60", SAMPLING_TAIL_RATE="1")
    body = otlp_request([{"trace_id": "77" * 16, "span_id": "77" * 8}])
    assert grpc_export(c.grpc_target, body, c.token)[0] == grpc.StatusCode.OK
    assert stored_traces(admin_conn) == {}
    assert c.stop() == 0
    assert stored_traces(admin_conn) == {"77" * 16: 1}
