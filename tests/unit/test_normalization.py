"""Normalization: every instrumentation family's attribute names land in the same columns; the
best-ranked key wins; values of the wrong type are dropped, not guessed."""

from __future__ import annotations

from typing import Any

import pytest

from llmobs.collector.normalize import OutOfRange, normalize


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 20,
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.conversation.id": "conv-1",
            },
            {
                "operation": "chat",
                "provider": "openai",
                "model": "gpt-4o-2024-08-06",
                "input_tokens": 100,
                "output_tokens": 20,
                "total_tokens": 120,
                "finish_reasons": ["stop"],
                "session_id": "conv-1",
            },
            id="otel-genai-current",
        ),
        pytest.param(
            {
                "llm.request.type": "completion",
                "gen_ai.system": "MistralAI",
                "gen_ai.request.model": "mistral-large",
                "gen_ai.usage.prompt_tokens": "7",
                "gen_ai.usage.completion_tokens": 3.0,
                "llm.usage.total_tokens": 11,
                "llm.user": "u-9",
            },
            {
                "operation": "text_completion",
                "provider": "mistral_ai",
                "model": "mistral-large",
                "input_tokens": 7,
                "output_tokens": 3,
                "total_tokens": 11,  # a total sent by the client is kept as sent
                "user_id": "u-9",
            },
            id="openllmetry-deprecated",
        ),
        pytest.param(
            {
                "openinference.span.kind": "LLM",
                "llm.provider": "anthropic",
                "llm.model_name": "claude-3-5-haiku",
                "llm.token_count.prompt": 50,
                "llm.token_count.completion": 5,
                "llm.token_count.prompt_details.cache_read": 40,
                "llm.cost.prompt": 0.25,
                "llm.cost.completion": 0.5,
                "session.id": "s-1",
            },
            {
                "operation": "chat",
                "provider": "anthropic",
                "model": "claude-3-5-haiku",
                "input_tokens": 50,
                "output_tokens": 5,
                "cached_input_tokens": 40,
                "client_cost": 0.75,  # prompt + completion when no total is sent
                "session_id": "s-1",
            },
            id="openinference",
        ),
        pytest.param(
            {"openinference.span.kind": "TOOL", "error.type": "TimeoutError"},
            {"operation": "execute_tool", "error_type": "TimeoutError", "model": None, "total_tokens": None},
            id="tool-span-without-tokens",
        ),
        pytest.param({"http.method": "GET"}, {"operation": None, "provider": None, "model": None}, id="not-llm"),
    ],
)
def test_each_family_maps_to_the_same_columns(attributes: dict[str, Any], expected: dict[str, Any]) -> None:
    n = normalize(attributes)
    assert {column: getattr(n, column) for column in expected} == expected


@pytest.mark.parametrize(
    ("attributes", "column", "expected"),
    [
        # the current name wins over the deprecated one, whatever the order
        ({"gen_ai.usage.prompt_tokens": 1, "gen_ai.usage.input_tokens": 2}, "input_tokens", 2),
        ({"gen_ai.system": "a", "gen_ai.provider.name": "b"}, "provider", "b"),
        # the response model prices a span; the request model when there is no response model
        ({"gen_ai.request.model": "req"}, "model", "req"),
        ({"gen_ai.request.model": "req", "gen_ai.response.model": "resp"}, "model", "resp"),
        # a total the client did not send is the sum
        ({"gen_ai.usage.output_tokens": 4}, "total_tokens", 4),
    ],
)
def test_the_best_ranked_key_wins(attributes: dict[str, Any], column: str, expected: Any) -> None:
    assert getattr(normalize(attributes), column) == expected


@pytest.mark.parametrize(
    ("key", "value", "column", "expected"),
    [
        ("gen_ai.usage.input_tokens", True, "input_tokens", None),
        ("gen_ai.usage.input_tokens", "many", "input_tokens", None),
        ("gen_ai.usage.input_tokens", "12.0", "input_tokens", 12),
        ("gen_ai.usage.cost", float("nan"), "client_cost", None),
        ("gen_ai.usage.cost", "0.01", "client_cost", 0.01),
        ("gen_ai.request.model", ["a", "list"], "request_model", None),
        ("gen_ai.request.model", "", "request_model", None),
        ("gen_ai.response.finish_reasons", "length", "finish_reasons", ["length"]),
        ("gen_ai.response.finish_reasons", ["stop", None, 3], "finish_reasons", ["stop", "3"]),
        ("gen_ai.response.finish_reasons", [], "finish_reasons", None),
        ("gen_ai.provider.name", " OpenAI ", "provider", "openai"),
        ("gen_ai.provider.name", "bedrock", "provider", "aws.bedrock"),
        ("gen_ai.operation.name", "Embedding", "operation", "embeddings"),
    ],
)
def test_values_are_checked_per_column(key: str, value: Any, column: str, expected: Any) -> None:
    assert getattr(normalize({key: value}), column) == expected


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gen_ai.usage.input_tokens", -1),
        ("gen_ai.usage.output_tokens", 10**13),
        ("gen_ai.usage.cost", -0.5),
        ("gen_ai.usage.cost", 1.7e308),
    ],
)
def test_numbers_out_of_range_reject_the_span(key: str, value: Any) -> None:
    with pytest.raises(OutOfRange, match=key):
        normalize({key: value})
