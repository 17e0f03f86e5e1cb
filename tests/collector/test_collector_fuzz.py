"""Fuzzing the OTLP receivers: a few thousand mutated protobuf and JSON requests (fixed seed)
against one real collector. Every answer must be a 2xx or a 4xx (gRPC: OK or a client-side
code), and the collector must neither crash nor restart."""

from __future__ import annotations

import json
import random
import time

import grpc
import httpx

from helpers.collector import RunningCollector, grpc_export, otlp_request

SEED = 17
CASES = 3000
GRPC_EVERY = 10  # one case in ten also goes over gRPC

#: gRPC codes that mean the server failed, not the request
SERVER_FAULTS = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}

WEIRD_VALUES: list[object] = [
    "",
    "\x00",
    "\ud7ff\ue000",
    "é" * 300,
    "Bearer\tabcdefghijklmnop",
    "sk-" + "a" * 40,
    "x@y.zz",
    0,
    -1,
    2**63 - 1,
    -(2**63),
    1.7e308,
    -1.7e308,
    float("nan"),
    float("inf"),
    True,
    b"\xff\xfe",
    "1e400",
    "-5",
]

NUMERIC_KEYS = [
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cost",
    "llm.cost.prompt",
    "gen_ai.request.model",
    "gen_ai.response.finish_reasons",
    "gen_ai.input.messages",
    "sampling.priority",
]


def base_spans(rng: random.Random) -> list[dict]:
    now = time.time_ns()
    spans = []
    for _ in range(rng.randint(1, 5)):
        attrs = {rng.choice(NUMERIC_KEYS): rng.choice(WEIRD_VALUES) for _n in range(rng.randint(0, 4))}
        start = rng.choice([now, now - 10**9 * rng.randint(0, 10**6), rng.randint(0, 2**63 - 1), 0])
        spans.append(
            {
                "trace_id": rng.randbytes(16).hex(),
                "span_id": rng.randbytes(8).hex(),
                "parent": rng.choice([None, rng.randbytes(8).hex()]),
                "name": rng.choice(["chat", "", "é" * 50, "x" * 2000]),
                "kind": rng.randint(0, 7),
                "status": rng.randint(0, 4),
                "start": start,
                "end": start + rng.choice([0, 10**6, -(10**6), 10**18]),
                "attributes": {k: v for k, v in attrs.items() if not isinstance(v, float) or v == v},
            }
        )
    return spans


def safe_otlp(spans: list[dict]) -> bytes:
    """otlp_request with values protobuf cannot hold clamped (the mutations break them later)."""
    for s in spans:
        s["start"] = max(0, min(s["start"], 2**64 - 1))
        s["end"] = max(0, min(s["end"], 2**64 - 1))
        s["attributes"] = {k: v for k, v in s["attributes"].items() if not isinstance(v, int) or -(2**63) <= v < 2**63}
    return otlp_request(spans)


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(5)
        if not data:
            data += rng.randbytes(rng.randint(1, 16))
        elif op == 0:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 2:
            pos = rng.randrange(len(data))
            data[pos:pos] = rng.randbytes(rng.randint(1, 32))
        elif op == 3:
            pos = rng.randrange(len(data))
            del data[pos : pos + rng.randint(1, 32)]
        else:
            pos = rng.randrange(len(data))
            data[pos:pos] = data[pos : pos + rng.randint(1, 64)] * rng.randint(2, 50)  # repeated fields
    return bytes(data)


def otlp_json(rng: random.Random, spans: list[dict]) -> dict:
    def value(v: object) -> dict:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v) if rng.random() < 0.5 else v}
        if isinstance(v, float):
            return {"doubleValue": v if v == v and abs(v) != float("inf") else str(v)}
        if isinstance(v, bytes):
            return {"bytesValue": "!!notbase64"}
        return {"stringValue": v}

    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "fuzz"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "fuzz"},
                        "spans": [
                            {
                                "traceId": s["trace_id"],
                                "spanId": s["span_id"],
                                "parentSpanId": s["parent"] or "",
                                "name": s["name"],
                                "kind": s["kind"],
                                "startTimeUnixNano": str(s["start"]),
                                "endTimeUnixNano": str(s["end"]),
                                "status": {"code": s["status"]},
                                "attributes": [{"key": k, "value": value(v)} for k, v in s["attributes"].items()],
                            }
                            for s in spans
                        ],
                    }
                ],
            }
        ]
    }


def mutate_json(rng: random.Random, doc: object, depth: int = 0) -> object:
    """Replace, drop or retype parts of a JSON document."""
    replacements: list[object] = [None, 0, -1, 2**70, 1e308, "", "zz", [], {}, [[[]]], "\\ud800", True, "9" * 40]
    if rng.random() < 0.08 or depth > 8:
        return rng.choice(replacements)
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if rng.random() < 0.05:
                continue
            out[k] = mutate_json(rng, v, depth + 1)
        if rng.random() < 0.05:
            out[rng.choice(["traceId", "spans", "attributes", "value", "x"])] = rng.choice(replacements)
        return out
    if isinstance(doc, list):
        items = [mutate_json(rng, v, depth + 1) for v in doc]
        if items and rng.random() < 0.05:
            items = items * rng.randint(2, 20)
        return items
    return doc


def json_body(rng: random.Random, doc: object) -> bytes:
    text = json.dumps(doc, allow_nan=True)
    if rng.random() < 0.3:  # break the text itself now and then
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 4)):
            if raw:
                raw[rng.randrange(len(raw))] = rng.choice(b'{}[]",:\\\x00\xff0a')
        return bytes(raw)
    return text.encode()


def test_mutated_otlp_requests_never_get_a_server_error(start_collector):
    collector: RunningCollector = start_collector(AUTH_FAILURES_PER_MINUTE="100000")
    pid = collector.proc.pid
    rng = random.Random(SEED)
    failures = []
    statuses: dict[int, int] = {}
    started = time.monotonic()
    headers = {"authorization": f"Bearer {collector.token}"}
    with httpx.Client(base_url=collector.http_url, timeout=30, headers=headers) as client:
        for case in range(CASES):
            spans = base_spans(rng)
            if case % 2:
                body = mutate_bytes(rng, safe_otlp(spans))
                response = client.post("/v1/traces", content=body, headers={"content-type": "application/x-protobuf"})
            else:
                body = json_body(rng, mutate_json(rng, otlp_json(rng, spans)))
                response = client.post("/v1/traces", content=body, headers={"content-type": "application/json"})
            statuses[response.status_code // 100] = statuses.get(response.status_code // 100, 0) + 1
            if response.status_code >= 500:
                failures.append((case, "http", response.status_code, response.text[:200]))
            if case % GRPC_EVERY == 1:
                code, details, _ = grpc_export(collector.grpc_target, body, collector.token)
                if code in SERVER_FAULTS:
                    failures.append((case, "grpc", code, str(details)[:200]))
            assert collector.proc.poll() is None, f"collector died at case {case}:\n{collector.logs()[-3000:]}"
    elapsed = time.monotonic() - started
    assert not failures, failures[:10]
    assert statuses.get(2, 0) > CASES // 20 and statuses.get(4, 0) > CASES // 20, statuses  # both paths exercised
    assert collector.proc.poll() is None and collector.proc.pid == pid
    code, body = collector.health()
    assert code == 200 and body["database"] == "up"
    assert "Traceback" not in collector.logs()
    print(f"{CASES} fuzz cases in {elapsed:.1f} s: {statuses}")
