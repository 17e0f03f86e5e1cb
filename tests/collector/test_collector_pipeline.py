"""The span pipeline (normalization, cost, validation) against the real schema and seeded prices:
spans go through SpanPipeline, are COPYed into PostgreSQL as the app role, and are read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from llmobs.collector.pipeline import SpanPipeline

from helpers.pipeline import T0, make_pipeline, span, store, stored


def test_otel_genai_span_is_stored_with_model_provider_tokens_and_cost(settings, admin_conn, pipeline):
    s = span(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 200,
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.conversation.id": "conv-1",
            "gen_ai.request.temperature": 0.2,
        }
    )
    store(settings, pipeline, [s])
    row = stored(admin_conn, s.span_id)
    assert (row["provider"], row["request_model"], row["response_model"], row["operation"]) == (
        "openai",
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "chat",
    )
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (1000, 200, 1200)
    assert row["cost_usd"] == pytest.approx(1000 * 2.5e-6 + 200 * 10e-6)
    assert row["cost_source"] == "computed"
    assert row["finish_reasons"] == ["stop"]
    assert (row["session_id"], row["service_name"], row["environment"]) == ("conv-1", "svc", "prod")
    assert row["duration_ms"] == pytest.approx(1500)
    assert row["attributes"]["gen_ai.request.temperature"] == 0.2


def test_deprecated_otel_and_openllmetry_names(settings, admin_conn, pipeline):
    s = span(
        {
            "gen_ai.system": "OpenAI",
            "llm.request.type": "completion",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.prompt_tokens": 2000,
            "gen_ai.usage.completion_tokens": 100,
            "llm.usage.total_tokens": 2100,
            "llm.response.finish_reason": "length",
            "traceloop.association.properties.session_id": "s-9",
            "llm.user": "alice",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "hi",
        }
    )
    store(settings, pipeline, [s])
    row = stored(admin_conn, s.span_id)
    assert (row["provider"], row["operation"], row["request_model"]) == ("openai", "text_completion", "gpt-4o-mini")
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (2000, 100, 2100)
    assert row["cost_usd"] == pytest.approx(2000 * 0.15e-6 + 100 * 0.6e-6)
    assert (row["finish_reasons"], row["session_id"], row["user_id"]) == (["length"], "s-9", "alice")


def test_openinference_names(settings, admin_conn, pipeline):
    s = span(
        {
            "openinference.span.kind": "LLM",
            "llm.provider": "anthropic",
            "llm.system": "anthropic",
            "llm.model_name": "claude-3-5-sonnet-20241022",
            "llm.token_count.prompt": 10_000,
            "llm.token_count.completion": 500,
            "llm.token_count.total": 10_500,
            "llm.token_count.prompt_details.cache_read": 8_000,
            "session.id": "sess",
            "user.id": "u-7",
            "input.value": "question",
            "output.value": "answer",
            "llm.invocation_parameters": json.dumps({"temperature": 0, "model": "claude-3-5-sonnet-latest"}),
        }
    )
    store(settings, pipeline, [s])
    row = stored(admin_conn, s.span_id)
    # llm.model_name is the model that answered; the requested one is in the invocation parameters
    assert (row["provider"], row["operation"], row["request_model"], row["response_model"]) == (
        "anthropic",
        "chat",
        "claude-3-5-sonnet-latest",
        "claude-3-5-sonnet-20241022",
    )
    assert row["input_messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "question"}], "finish_reason": None}
    ]
    assert row["output_messages"][0]["parts"] == [{"type": "text", "content": "answer"}]
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (10_000, 8_000, 500)
    # input counts the cached tokens (OTel); cache reads cost 0.30/M, the rest 3/M, output 15/M
    assert row["cost_usd"] == pytest.approx(2_000 * 3e-6 + 8_000 * 0.3e-6 + 500 * 15e-6)
    assert (row["session_id"], row["user_id"]) == ("sess", "u-7")


def test_openlit_names_and_a_client_cost_wins(settings, admin_conn, pipeline):
    s = span(
        {
            "gen_ai.system": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 10,
            "gen_ai.usage.total_tokens": 110,
            "gen_ai.usage.cost": 0.1234,
            "gen_ai.request.user": "bob",
            "gen_ai.prompt": "hello",
        }
    )
    store(settings, pipeline, [s])
    row = stored(admin_conn, s.span_id)
    assert (row["cost_usd"], row["cost_source"], row["user_id"]) == (0.1234, "client", "bob")


def test_cache_writes_reasoning_and_disjoint_reporting(pipeline):
    claude = span(
        {
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-3-5-haiku-20241022",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 100,
            "gen_ai.usage.cache_read_input_tokens": 200,
            "gen_ai.usage.cache_creation_input_tokens": 300,
        }
    )
    # an SDK reporting cached tokens apart from input (cached > input): input is the uncached part
    disjoint = span(
        {
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 0,
            "gen_ai.usage.cache_read.input_tokens": 400,
        }
    )
    rows = pipeline.process([claude, disjoint], 1).rows
    assert rows[0].cost_usd == pytest.approx(500 * 0.8e-6 + 200 * 0.08e-6 + 300 * 1.0e-6 + 100 * 4e-6)
    assert rows[1].cost_usd == pytest.approx(100 * 2.5e-6 + 400 * 1.25e-6)


def test_unknown_model_gets_null_cost_and_is_counted(pipeline):
    result = pipeline.process(
        [
            span({"gen_ai.request.model": "my-finetune-v3", "gen_ai.usage.input_tokens": 5}),
            span({"gen_ai.request.model": "gpt-4o"}),  # no token counts: nothing to price, not "unknown"
            span({"http.route": "/health"}),
        ],
        1,
    )
    assert [r.cost_usd for r in result.rows] == [None, None, None]
    assert result.unknown_price == 1


def test_price_rules_by_provider_date_and_project(settings, admin_conn):
    from llmobs.collector.pricing import rule_from_fields, set_price
    from llmobs.store.apikeys import ensure_project

    acme, _ = ensure_project(admin_conn, "acme")
    set_price(
        admin_conn,
        rule_from_fields(
            {"model_pattern": "(^|/)gpt-4o$", "input_per_mtok": 1, "output_per_mtok": 1}, where="test", project_id=acme
        ),
    )
    pipeline = make_pipeline(settings, admin_conn)
    usage = {"gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.output_tokens": 0}
    before = int(datetime(2025, 5, 1, tzinfo=UTC).timestamp() * 1e9)
    spans = [
        span({"gen_ai.request.model": "llama-3.3-70b-versatile", "gen_ai.system": "groq", **usage}),
        span(
            {"gen_ai.request.model": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "gen_ai.system": "together_ai", **usage}
        ),
        span({"gen_ai.request.model": "llama-3.3-70b-versatile", **usage}),  # provider unknown: no price
        span({"gen_ai.request.model": "o3", **usage}, start=before),
        span({"gen_ai.request.model": "o3", **usage}),
        span({"gen_ai.request.model": "openrouter/openai/gpt-4o", **usage}),
    ]
    costs = [r.cost_usd for r in pipeline.process(spans, 1).rows]
    assert costs[2] is None
    assert [c for i, c in enumerate(costs) if i != 2] == pytest.approx([0.59, 0.88, 10.0, 2.0, 2.5])
    acme_costs = [r.cost_usd for r in pipeline.process([span({"gen_ai.request.model": "gpt-4o", **usage})], acme).rows]
    assert acme_costs == [1.0]


def test_invalid_spans_are_rejected_with_a_reason_and_the_rest_stored(settings, admin_conn, pipeline):
    good = span({})
    bad = [
        span({}, trace_id="abc"),
        span({}, span_id="0" * 16),
        span({}, parent_span_id="123"),
        span({}, start=0),
        span({}, trace_id="Z" * 32),
    ]
    result = store(settings, pipeline, [good, *bad])
    assert result.rejected == 5
    assert len(result.errors) == 5 and "trace id" in result.errors[0] and "start time" in result.errors[3]
    assert stored(admin_conn, good.span_id)["name"] == "chat"


def test_awkward_values_survive_the_round_trip(settings, admin_conn, pipeline):
    s = span(
        {
            "text": "tab\there\nnew line \\ backslash \x00 nul",
            "nested": {"list": [1, "two", None, True]},
            "big": 2**70,
            "emoji": "🦜",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": 'say "hi"\r\n\\ then \x00',
        },
        name="name with\ttab, \\ backslash\r\nand lines",
        status_code="error",
        status_message="boom\x00",
        events=[{"name": "exception", "time": T0 + 5, "attributes": {"exception.message": "bad\nthing"}}],
        end_time=T0 - 10,
    )
    store(settings, pipeline, [s])
    row = stored(admin_conn, s.span_id)
    assert row["attributes"]["text"] == "tab\there\nnew line \\ backslash \ufffd nul"
    assert row["attributes"]["nested"] == {"list": [1, "two", None, True]}
    assert row["attributes"]["big"] == 2**70
    assert row["attributes"]["emoji"] == "🦜"
    assert (row["name"], row["status_code"], row["status_message"]) == (
        "name with\ttab, \\ backslash\r\nand lines",
        "error",
        "boom\ufffd",
    )
    assert row["input_messages"][0]["parts"] == [{"type": "text", "content": 'say "hi"\r\n\\ then \ufffd'}]
    assert row["events"][0]["attributes"] == {"exception.message": "bad\nthing"}
    assert row["duration_ms"] == 0  # an end before the start is clamped


def test_error_type_marks_an_unset_status_as_error(pipeline):
    rows = pipeline.process([span({"error.type": "timeout"}), span({"error.type": "x"}, status_code="ok")], 1).rows
    assert [r.status_code for r in rows] == ["error", "ok"]


def test_ten_thousand_attributes_are_cut_to_the_limit_with_a_warning(settings, admin_conn, pipeline):
    s = span({f"attr.{i}": i for i in range(10_000)})
    result = store(settings, pipeline, [s])
    assert result.rejected == 0 and "attributes over the limit" in result.message
    attrs = stored(admin_conn, s.span_id)["attributes"]
    assert len(attrs) == 1001 and attrs["llmobs.dropped_attributes_count"] == 9000


def test_spans_outside_the_accepted_window_are_rejected(settings, admin_conn):
    pipeline = SpanPipeline.from_settings(settings.with_overrides(COLLECTOR_MAX_SPAN_FUTURE_MINUTES="10"))
    now = datetime.now(UTC)
    old = span({}, start=int(datetime(2001, 2, 3, tzinfo=UTC).timestamp() * 1e9))
    future = span({}, start=int((now + timedelta(minutes=30)).timestamp() * 1e9))
    recent = span({}, start=int((now - timedelta(days=2)).timestamp() * 1e9))
    result = pipeline.process([old, future, recent], 1)
    assert result.rejected == 2 and [r.span_id for r in result.rows] == [recent.span_id]
    assert "2001-02-03 00:00:00 UTC is outside the accepted window" in result.message


def test_mapping_fixes_of_openinference_openllmetry_and_openlit(settings, admin_conn, pipeline):
    embedding = span(
        {
            "openinference.span.kind": "EMBEDDING",
            "embedding.model_name": "text-embedding-3-small",
            "llm.token_count.prompt": 1000,
        }
    )
    failed = span(
        {"openinference.span.kind": "LLM", "llm.invocation_parameters": json.dumps({"model": "gpt-4o"})},
        status_code="error",
    )
    workflow = span({"traceloop.span.kind": "workflow", "traceloop.association.properties.user_id": "alice"})
    agent = span({"openinference.span.kind": "AGENT"})
    retriever = span({"openinference.span.kind": "RETRIEVER"})
    # OpenLIT sends cost 0 when it could not load its price list: the server price applies
    openlit = span(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 100,
            "gen_ai.usage.cost": 0,
            "gen_ai.server.time_to_first_token": 0.25,
        }
    )
    unpriced_zero = span(
        {"gen_ai.request.model": "house-model", "gen_ai.usage.input_tokens": 5, "gen_ai.usage.cost": 0}
    )
    store(settings, pipeline, [embedding, failed, workflow, agent, retriever, openlit, unpriced_zero])
    row = stored(admin_conn, embedding.span_id)
    assert (row["operation"], row["request_model"]) == ("embeddings", "text-embedding-3-small")
    assert row["cost_usd"] == pytest.approx(1000 * 0.02e-6) and row["cost_source"] == "computed"
    assert stored(admin_conn, failed.span_id)["request_model"] == "gpt-4o"
    row = stored(admin_conn, workflow.span_id)
    assert (row["operation"], row["user_id"]) == ("workflow", "alice")
    assert stored(admin_conn, agent.span_id)["operation"] == "invoke_agent"
    assert stored(admin_conn, retriever.span_id)["operation"] == "retrieval"
    row = stored(admin_conn, openlit.span_id)
    assert row["cost_usd"] == pytest.approx(1000 * 0.15e-6 + 100 * 0.6e-6) and row["cost_source"] == "computed"
    assert row["time_to_first_token_ms"] == pytest.approx(250)
    row = stored(admin_conn, unpriced_zero.span_id)
    assert (row["cost_usd"], row["cost_source"]) == (0, "client")


def test_messages_from_events_first_token_event_and_size_cap(settings, admin_conn):
    pipeline = make_pipeline(settings, admin_conn, COLLECTOR_MAX_MESSAGE_CHARS="2000")
    events = [
        {"name": "gen_ai.user.message", "time": T0 + 1, "attributes": {"content": "x" * 5000}},
        {"name": "First Token Stream Event", "time": T0 + 120_000_000, "attributes": {}},
        {
            "name": "gen_ai.choice",
            "time": T0 + 2,
            "attributes": {"finish_reason": "stop", "message": '{"content": "ok"}'},
        },
    ]
    s = span({"gen_ai.request.model": "gpt-4o"}, events=events)
    store(settings, pipeline, [s])
    row = stored(admin_conn, s.span_id)
    [message] = row["input_messages"]
    assert message["truncated"] is True and message["parts"][0]["content"].endswith("…[truncated]")
    assert len(json.dumps(row["input_messages"])) < 2500
    assert row["output_messages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "ok"}], "finish_reason": "stop"}
    ]
    assert row["time_to_first_token_ms"] == pytest.approx(120)
    assert len(row["events"][0]["attributes"]["content"]) == 5000  # the raw event is kept whole


def test_messages_are_redacted_like_the_attributes(settings, admin_conn):
    pipeline = make_pipeline(settings, admin_conn, PII_DETECTORS="email", PII_DROP_KEYS="gen_ai.completion.*")
    s = span(
        {
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "mail bob@example.com please"}]}]
            ),
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "secret answer",
        }
    )
    store(settings, pipeline, [s])
    row = stored(admin_conn, s.span_id)
    assert row["input_messages"][0]["parts"][0]["content"] == "mail [REDACTED:email] please"
    assert row["output_messages"] is None  # its only source was dropped by a key rule
    assert "bob@example.com" not in json.dumps(row, default=str)
