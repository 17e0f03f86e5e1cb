"""Refused requests leave one log line each in the collector's log (rate-limited): reason,
transport, remote address and key id, never the key."""

from __future__ import annotations

import time

import grpc
import httpx

from llmobs.collector.refusals import RefusalLog
from llmobs.store import apikeys
from llmobs.store.db import connect

from helpers.collector import grpc_export, http_export, otlp_request

SECRET = "S" * 32
FORGED = f"llmobs_abcdefghijkl_{SECRET}"  # well formed, unknown: 401 naming key abcdefghijkl


def wait_for(collector, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while text not in collector.logs():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{collector.logs()[-3000:]}"
        time.sleep(0.1)
    return collector.logs()


def test_each_refusal_is_logged_without_the_key(start_collector, settings):
    collector = start_collector()
    with connect(settings, "admin", autocommit=True) as conn:
        reader = apikeys.create_key(conn, project="default", role="reader", name="ro", actor="test").token
    body = otlp_request([{"trace_id": "ab" * 16, "span_id": "cd" * 8}])
    assert http_export(collector.http_url, body, None).status_code == 401
    assert http_export(collector.http_url, body, FORGED).status_code == 401
    assert http_export(collector.http_url, body, reader).status_code == 403
    assert http_export(collector.http_url, b"\xff not protobuf", collector.token).status_code == 400
    assert httpx.post(f"{collector.http_url}/v1/nope", content=body).status_code == 404
    code, _, _ = grpc_export(collector.grpc_target, body, FORGED)
    assert code == grpc.StatusCode.UNAUTHENTICATED

    logs = wait_for(collector, "refused grpc request: unauthenticated")
    lines = [line for line in logs.splitlines() if "refused " in line]
    assert any("http request: unauthenticated (401) from 127.0.0.1:" in line and "key none" in line for line in lines)
    # one line per reason and transport in a window: the forged key's 401 is left out, counted next time
    assert any(
        "http request: permission_denied (403)" in line and f"key {reader.split('_')[1]}" in line for line in lines
    )
    assert any(
        "http request: invalid (400)" in line and f"key {collector.token.split('_')[1]}" in line for line in lines
    )
    assert any("http request: not_found (404)" in line and "/v1/nope" in line for line in lines)
    assert any(
        "grpc request: unauthenticated (401) from ipv4:127.0.0.1:" in line and "key abcdefghijkl" in line
        for line in lines
    )
    for secret in (SECRET, reader.split("_")[2], collector.token.split("_")[2]):
        assert secret not in logs


def test_a_flood_of_refusals_is_logged_once_per_window():
    now = [0.0]
    refusals = RefusalLog(window=10, clock=lambda: now[0])
    args = {"status": 401, "transport": "http", "remote": "10.0.0.1:5", "key_id": None, "message": "no key"}
    assert refusals.refused(reason="unauthenticated", **args)
    assert not any(refusals.refused(reason="unauthenticated", **args) for _ in range(1000))
    assert refusals.refused(reason="invalid", **args)  # another reason has its own window
    now[0] = 10.5
    assert refusals.refused(reason="unauthenticated", **args)
