"""The real GenAI instrumentation libraries drive the real ``openai`` SDK against the fake OpenAI
server (tests/helpers/fake_openai.py) and export to a real collector; each call is read back through REST
and GraphQL: model, tokens, cost, messages, time to first token and the error.

Each library patches ``openai`` and sets global providers, so each runs in its own process
(tests/helpers/genai_driver.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.api import api_client
from helpers.common import require
from helpers.fake_openai import COMPLETION_TOKENS, EMBEDDING_TOKENS, MODEL_SUFFIX, PROMPT_TOKENS
from helpers.genai_driver import USER_TEXT

DRIVER = Path(__file__).parents[1] / "helpers" / "genai_driver.py"
#: module each library needs
MODULES = {
    "openai-v2": "opentelemetry.instrumentation.openai_v2",
    "traceloop": "traceloop.sdk",
    "openinference": "openinference.instrumentation.openai",
    "openlit": "openlit",
}
#: USD per token, from the seeded price table
GPT_4O_MINI = (0.15e-6, 0.6e-6)
EMBEDDING_PRICE = 0.02e-6
#: libraries that report the time to the first streamed token on the span (OpenLIT: an attribute,
#: OpenInference: an event); openai-v2 and traceloop report it only as a metric
SENDS_FIRST_TOKEN = {"openinference", "openlit"}
CHAT_COST = PROMPT_TOKENS * GPT_4O_MINI[0] + COMPLETION_TOKENS * GPT_4O_MINI[1]

SPAN_QUERY = """query($id: String!) { trace(traceId: $id) { inputTokens outputTokens totalTokens costUsd
  spans { spanId name statusCode requestModel responseModel operation inputTokens outputTokens costUsd costSource
          scopeName ingestedAt inputMessages outputMessages timeToFirstTokenMs } } }"""


def run_driver(library: str, base_url: str, collector_url: str, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_", "TRACELOOP_"))}
    env.update(OPENAI_BASE_URL=base_url, COLLECTOR_URL=collector_url, COLLECTOR_TOKEN=token)
    proc = subprocess.run([sys.executable, str(DRIVER), library], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def llm_span(client: Any, headers: dict[str, str], trace_id: str) -> tuple[dict, dict]:
    """(trace, the LLM span of it): waits for the instrumentation's span to be stored."""
    deadline = time.monotonic() + 30
    while True:
        response = client.get(f"/api/v1/traces/{trace_id}", headers=headers)
        if response.status_code == 200:
            body = response.json()
            spans = _flatten(body["roots"])
            llm = [s for s in spans if not s["name"].startswith("case:")]
            if llm:
                return body, llm[0]
        assert time.monotonic() < deadline, f"trace {trace_id}: no LLM span ({response.status_code})"
        time.sleep(0.2)


def _flatten(nodes: list[dict]) -> list[dict]:
    out = []
    for node in nodes:
        out.append(node)
        out += _flatten(node["children"])
    return out


def texts(messages: list[dict]) -> str:
    return " ".join(str(p.get("content", "")) for m in messages for p in m["parts"])


@pytest.mark.parametrize("library", list(MODULES))
def test_instrumented_openai_calls_read_back_whole(library, fake_openai, start_collector, settings, tmp_path):
    require(importlib.util.find_spec(MODULES[library].split(".")[0]) is not None, f"{library} not installed")
    collector = start_collector()
    trace_ids = run_driver(library, fake_openai.base_url, collector.http_url, collector.token)
    headers = {"Authorization": f"Bearer {collector.env['LLMOBS_ADMIN_API_KEY']}"}
    with api_client(settings) as client:
        found = {case: llm_span(client, headers, trace_id) for case, trace_id in trace_ids.items()}
        graphql = {
            case: client.post("/graphql", json={"query": SPAN_QUERY, "variables": {"id": tid}}, headers=headers)
            for case, tid in trace_ids.items()
        }
    # -- chat
    trace, span = found["chat"]
    assert span["request_model"] == "gpt-4o-mini"
    assert span["response_model"] == f"gpt-4o-mini{MODEL_SUFFIX}"
    assert (span["input_tokens"], span["output_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert span["cost_usd"] == pytest.approx(CHAT_COST) and span["cost_source"] == "computed"
    assert USER_TEXT in texts(span["input_messages"])
    assert f"Hello from fake: {USER_TEXT}" in texts(span["output_messages"])
    assert trace["input_tokens"] == PROMPT_TOKENS and trace["cost_usd"] == pytest.approx(CHAT_COST)
    if library == "traceloop":  # Traceloop.set_association_properties in the driver
        assert (span["user_id"], span["session_id"]) == ("alice", "sess-traceloop")
    # -- streaming with usage
    _, span = found["stream"]
    assert span["request_model"] == "gpt-4o-mini"
    assert (span["input_tokens"], span["output_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert f"Hello from fake: {USER_TEXT}" in texts(span["output_messages"])
    if library in SENDS_FIRST_TOKEN:
        assert span["time_to_first_token_ms"] > 0
    # -- embeddings
    _, span = found["embeddings"]
    assert span["operation"] == "embeddings" and span["request_model"] == "text-embedding-3-small"
    assert span["input_tokens"] == EMBEDDING_TOKENS
    assert span["cost_usd"] == pytest.approx(EMBEDDING_TOKENS * EMBEDDING_PRICE)
    assert span["time_to_first_token_ms"] is None  # OpenLIT sends one for embeddings too: meaningless
    # -- error
    _, span = found["error"]
    assert span["status_code"] == "error" and span["request_model"] == "fake-error-400"
    # -- GraphQL serves the same spans
    for case, (_, rest_span) in found.items():
        assert graphql[case].status_code == 200, graphql[case].text
        data = graphql[case].json()["data"]["trace"]
        [gql] = [s for s in data["spans"] if s["spanId"] == rest_span["span_id"]]
        assert gql["inputMessages"] == rest_span["input_messages"]
        assert gql["outputMessages"] == rest_span["output_messages"]
        assert (gql["costUsd"], gql["costSource"], gql["scopeName"]) == (
            rest_span["cost_usd"],
            rest_span["cost_source"],
            rest_span["scope_name"],
        )
        assert gql["timeToFirstTokenMs"] == rest_span["time_to_first_token_ms"]
