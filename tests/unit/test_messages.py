"""The message model: every convention's span attributes and GenAI events to one shape (no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmobs.collector.messages import (
    TRUNCATION_MARKER,
    cap_messages,
    message_text,
    messages_from_attributes,
    messages_from_event,
    messages_from_events,
    read_attributes,
)


def text(role: str, content: str, finish_reason: str | None = None) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": content}], "finish_reason": finish_reason}


CALL = {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}

ATTRIBUTE_CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]] = [
    ("none", {"gen_ai.request.model": "gpt-4o"}, [], []),
    (
        "semconv current, JSON strings, system instructions first",
        {
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "stop"}]
            ),
        },
        [text("system", "Be brief."), text("user", "Hi")],
        [text("assistant", "Hello", "stop")],
    ),
    (
        "semconv current, tool call and response, decoded values",
        {
            "gen_ai.input.messages": [
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "21C"}]}
            ],
            "gen_ai.output.messages": [
                {
                    "role": "assistant",
                    "parts": [
                        {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
                    ],
                    "finish_reason": "tool_call",
                }
            ],
        },
        [
            {
                "role": "tool",
                "parts": [{"type": "tool_call_response", "id": "call_1", "response": "21C"}],
                "finish_reason": None,
            }
        ],
        [{"role": "assistant", "parts": [CALL], "finish_reason": "tool_call"}],
    ),
    (
        "OpenLLMetry gen_ai.prompt.N / gen_ai.completion.N with tool calls",
        {
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "Be brief.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "Weather?",
            "gen_ai.prompt.2.role": "user",
            "gen_ai.prompt.2.content": "third",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "call_1",
            "gen_ai.completion.0.tool_calls.0.name": "get_weather",
            "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Paris"}',
        },
        [text("system", "Be brief."), text("user", "Weather?"), text("user", "third")],
        [{"role": "assistant", "parts": [CALL], "finish_reason": "tool_calls"}],
    ),
    (
        "OpenLLMetry tool result message",
        {"gen_ai.prompt.0.role": "tool", "gen_ai.prompt.0.content": "21C", "gen_ai.prompt.0.tool_call_id": "call_1"},
        [
            {
                "role": "tool",
                "parts": [{"type": "tool_call_response", "id": "call_1", "response": "21C"}],
                "finish_reason": None,
            }
        ],
        [],
    ),
    (
        "OpenInference llm.input_messages / llm.output_messages with tool calls and contents",
        {
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.contents.0.message_content.type": "text",
            "llm.input_messages.0.message.contents.0.message_content.text": "Weather?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
            "input.value": '{"messages": [{"role": "user", "content": "ignored: llm.input_messages wins"}]}',
        },
        [text("user", "Weather?")],
        [{"role": "assistant", "parts": [CALL], "finish_reason": None}],
    ),
    (
        "OpenInference input.value / output.value as OpenAI request and response",
        {
            "input.value": json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}),
            "input.mime_type": "application/json",
            "output.value": json.dumps(
                {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Yo"}}]}
            ),
        },
        [text("user", "Hi")],
        [text("assistant", "Yo", "stop")],
    ),
    (
        "OpenInference plain-text input.value / output.value",
        {"input.value": "What is 2+2?", "output.value": "4"},
        [text("user", "What is 2+2?")],
        [text("assistant", "4")],
    ),
    (
        "traceloop.entity.input / output",
        {
            "traceloop.entity.input": json.dumps({"inputs": {"question": "Why?"}, "tags": []}),
            "traceloop.entity.output": json.dumps({"outputs": "Because."}),
        },
        [text("user", '{"question":"Why?"}')],
        [text("assistant", "Because.")],
    ),
    (
        "OpenLIT gen_ai.prompt / gen_ai.completion strings",
        {"gen_ai.prompt": "user: Hi", "gen_ai.completion": "Hello there"},
        [text("user", "user: Hi")],
        [text("assistant", "Hello there")],
    ),
    (
        "OpenAI content blocks inside semconv-shaped input",
        {"gen_ai.input.messages": [{"role": "user", "content": [{"type": "text", "text": "Look"}]}]},
        [text("user", "Look")],
        [],
    ),
]


@pytest.mark.parametrize(
    ("attributes", "inputs", "outputs"), [c[1:] for c in ATTRIBUTE_CASES], ids=[c[0] for c in ATTRIBUTE_CASES]
)
def test_messages_from_attributes(attributes: dict[str, Any], inputs: list, outputs: list) -> None:
    assert messages_from_attributes(attributes) == (inputs, outputs)


EVENT_CASES: list[tuple[str, str, dict[str, Any], Any, list, list]] = [
    (
        "user message log record body",
        "gen_ai.user.message",
        {"gen_ai.system": "openai"},
        {"content": "Hi"},
        [text("user", "Hi")],
        [],
    ),
    (
        "system message, body a plain string",
        "gen_ai.system.message",
        {},
        "Be brief.",
        [text("system", "Be brief.")],
        [],
    ),
    (
        "assistant message with tool calls",
        "gen_ai.assistant.message",
        {},
        {
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ]
        },
        [{"role": "assistant", "parts": [CALL], "finish_reason": None}],
        [],
    ),
    (
        "tool message",
        "gen_ai.tool.message",
        {},
        {"content": "21C", "id": "call_1"},
        [
            {
                "role": "tool",
                "parts": [{"type": "tool_call_response", "id": "call_1", "response": "21C"}],
                "finish_reason": None,
            }
        ],
        [],
    ),
    (
        "choice log record",
        "gen_ai.choice",
        {},
        {"index": 0, "finish_reason": "stop", "message": {"content": "Hello"}},
        [],
        [text("assistant", "Hello", "stop")],
    ),
    (
        "choice span event, body JSON-encoded in gen_ai.event.content",
        "gen_ai.choice",
        {"gen_ai.event.content": json.dumps({"index": 0, "finish_reason": "length", "message": {"content": "He"}})},
        None,
        [],
        [text("assistant", "He", "length")],
    ),
    (
        "user message span event, fields as attributes",
        "gen_ai.user.message",
        {"gen_ai.system": "openai", "content": "Hi"},
        None,
        [text("user", "Hi")],
        [],
    ),
    (
        "inference operation details (current semconv event)",
        "gen_ai.client.inference.operation.details",
        {
            "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}],
            "gen_ai.output.messages": [
                {"role": "assistant", "parts": [{"type": "text", "content": "Yo"}], "finish_reason": "stop"}
            ],
        },
        None,
        [text("user", "Hi")],
        [text("assistant", "Yo", "stop")],
    ),
    (
        "OpenLIT prompt event",
        "gen_ai.content.prompt",
        {"gen_ai.prompt": "user: Hi"},
        None,
        [text("user", "user: Hi")],
        [],
    ),
    (
        "OpenLIT completion event",
        "gen_ai.content.completion",
        {"gen_ai.completion": "Hello"},
        None,
        [],
        [text("assistant", "Hello")],
    ),
    ("unrelated event", "exception", {"exception.message": "boom"}, None, [], []),
]


@pytest.mark.parametrize(
    ("name", "attributes", "body", "inputs", "outputs"), [c[1:] for c in EVENT_CASES], ids=[c[0] for c in EVENT_CASES]
)
def test_messages_from_event(name: str, attributes: dict[str, Any], body: Any, inputs: list, outputs: list) -> None:
    assert messages_from_event(name, attributes, body) == (inputs, outputs)


def test_messages_from_events_keeps_order() -> None:
    events = [
        {"name": "gen_ai.system.message", "attributes": {"content": "Be brief."}},
        {"name": "gen_ai.user.message", "attributes": {"content": "Hi"}},
        {"name": "exception", "attributes": {}},
        {"name": "gen_ai.choice", "attributes": {"message": {"content": "Yo"}, "finish_reason": "stop"}},
    ]
    assert messages_from_events(events) == (
        [text("system", "Be brief."), text("user", "Hi")],
        [text("assistant", "Yo", "stop")],
    )


def test_cap_messages_marks_truncation() -> None:
    long = [text("user", "a" * 5000), text("assistant", "b" * 10)]
    capped = cap_messages(long, 1000)
    assert len(capped) == 1 and capped[0]["truncated"] is True
    content = capped[0]["parts"][0]["content"]
    assert content.endswith(TRUNCATION_MARKER) and len(content) < 1000
    short = [text("user", "hi")]
    assert cap_messages(short, 1000) is short
    assert list(message_text([*short, {"role": "assistant", "parts": [CALL]}])) == ["hi"]


def test_read_attributes_names_the_keys_held_whole() -> None:
    attributes = {
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "Hi",
        "gen_ai.prompt.0.unknown_field": "kept",
        "gen_ai.completion.0.content": "Yo",
        "gen_ai.completion.0.tool_calls.0.name": "f",
        "gen_ai.request.model": "gpt-4o",
        "input.value": "Hi",
    }
    found = read_attributes(attributes)
    assert found is not None
    _, _, input_keys, output_keys = found
    assert sorted(input_keys) == ["gen_ai.prompt.0.content", "gen_ai.prompt.0.role"]
    assert sorted(output_keys) == ["gen_ai.completion.0.content", "gen_ai.completion.0.tool_calls.0.name"]
    semconv = read_attributes({"gen_ai.input.messages": "[]", "output.value": '{"choices": []}'})
    assert semconv is not None and (semconv[2], semconv[3]) == (["gen_ai.input.messages"], [])
    openlit = read_attributes({"gen_ai.prompt": "user: Hi", "gen_ai.completion": '{"a": 1}'})
    assert openlit is not None and (openlit[2], openlit[3]) == (["gen_ai.prompt"], [])
    assert read_attributes({"gen_ai.request.model": "gpt-4o", "http.route": "/chat"}) is None
