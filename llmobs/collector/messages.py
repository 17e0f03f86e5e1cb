"""One model of the LLM messages of a span, filled from every instrumentation convention.

A message is ``{"role": str, "parts": [part, ...], "finish_reason": str | None}`` (plus
``"truncated": True`` when :func:`cap_messages` cut it). A part follows the OTel GenAI semconv
message schema: ``{"type": "text", "content": str}``, ``{"type": "tool_call", "id", "name",
"arguments"}``, ``{"type": "tool_call_response", "id", "response"}`` or any other
``{"type": "<name>", ...}`` passed through as sent.

Sources, each turned into that model by a pure function here:

* span attributes (:func:`messages_from_attributes`), first convention present wins per side:
  current semconv ``gen_ai.input.messages`` / ``gen_ai.output.messages`` /
  ``gen_ai.system_instructions``; OpenLLMetry ``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*``;
  OpenInference ``llm.input_messages.N.message.*`` / ``llm.output_messages.N.message.*``, then
  ``input.value`` / ``output.value``; ``traceloop.entity.input`` / ``traceloop.entity.output``;
  OpenLIT ``gen_ai.prompt`` / ``gen_ai.completion``.
* GenAI events (:func:`messages_from_event`), as span events (body ``None``, fields in the
  attributes) or OTLP log records (fields in the body): ``gen_ai.system.message``,
  ``gen_ai.user.message``, ``gen_ai.assistant.message``, ``gen_ai.tool.message``,
  ``gen_ai.choice``, ``gen_ai.client.inference.operation.details`` and OpenLIT's
  ``gen_ai.content.prompt`` / ``gen_ai.content.completion``.

Nothing here raises on odd input: what cannot be read as messages yields no messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

Message = dict[str, Any]
Part = dict[str, Any]

#: Event names that carry messages (deprecated per-message events, the current semconv event,
#: OpenLIT's content events).
MESSAGE_EVENTS: frozenset[str] = frozenset(
    {
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
        "gen_ai.choice",
        "gen_ai.client.inference.operation.details",
        "gen_ai.content.prompt",
        "gen_ai.content.completion",
    }
)

_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}

#: Attribute keys whose presence means a span may carry messages: one set lookup decides
#: whether the (slower) extraction runs at all. Indexed families are found by their index 0.
MESSAGE_MARKER_KEYS: frozenset[str] = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.prompt.0.role",
        "gen_ai.prompt.0.content",
        "gen_ai.completion.0.role",
        "gen_ai.completion.0.content",
        "gen_ai.completion.0.finish_reason",
        "gen_ai.completion.0.tool_calls.0.name",
        "llm.input_messages.0.message.role",
        "llm.input_messages.0.message.content",
        "llm.output_messages.0.message.role",
        "llm.output_messages.0.message.content",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name",
        "input.value",
        "output.value",
        "traceloop.entity.input",
        "traceloop.entity.output",
        "gen_ai.prompt",
        "gen_ai.completion",
    }
)

TRUNCATION_MARKER = "…[truncated]"


# -- building blocks ---------------------------------------------------------------------------


def text_part(content: str) -> Part:
    return {"type": "text", "content": content}


def message(role: str, parts: list[Part], finish_reason: str | None = None) -> Message:
    return {"role": role, "parts": parts, "finish_reason": finish_reason}


def _decode(value: Any) -> Any:
    """A JSON-encoded string decoded; anything else (or text that is not JSON) as it is."""
    if isinstance(value, (str, bytes)) and value[:1] in ("[", "{", b"[", b"{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return orjson.dumps(value).decode()
    return str(value)


def _content_parts(content: Any) -> list[Part]:
    """OpenAI-style content (a string, or a list of ``{"type": "text", "text": ...}`` items, or
    semconv parts) as parts."""
    content = _decode(content)
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [text_part(content)]
    if isinstance(content, list):
        parts: list[Part] = []
        for item in content:
            if isinstance(item, str):
                parts.append(text_part(item))
            elif isinstance(item, dict):
                parts.append(_part(item))
        return parts
    if isinstance(content, dict):
        return [_part(content)]
    return [text_part(_str(content) or "")]


def _part(item: Mapping[str, Any]) -> Part:
    """One content item (semconv part or OpenAI content block) as a part."""
    kind = item.get("type")
    if kind == "text" or (kind is None and ("text" in item or "content" in item)):
        return text_part(_str(item.get("content", item.get("text"))) or "")
    if kind == "tool_call":
        return _tool_call(item.get("id"), item.get("name"), item.get("arguments"))
    if kind == "tool_call_response":
        return {"type": "tool_call_response", "id": _str(item.get("id")), "response": item.get("response")}
    out = dict(item)
    out["type"] = _str(kind) or "unknown"
    return out


def _tool_call(call_id: Any, name: Any, arguments: Any) -> Part:
    return {"type": "tool_call", "id": _str(call_id), "name": _str(name) or "", "arguments": _decode(arguments)}


def _openai_tool_calls(calls: Any) -> list[Part]:
    """OpenAI ``tool_calls`` (``[{id, type, function: {name, arguments}}]``) as tool_call parts."""
    calls = _decode(calls)
    if not isinstance(calls, list):
        return []
    parts = []
    for call in calls:
        if isinstance(call, dict):
            inner = call.get("function")
            function: dict[str, Any] = inner if isinstance(inner, dict) else call
            parts.append(_tool_call(call.get("id"), function.get("name"), function.get("arguments")))
    return parts


def _openai_message(item: Mapping[str, Any], default_role: str, finish_reason: Any = None) -> Message:
    """An OpenAI chat message (``role``, ``content``, ``tool_calls``, ``tool_call_id``)."""
    role = _str(item.get("role")) or default_role
    if role == "tool" or "tool_call_id" in item:
        response = item.get("content")
        parts: list[Part] = [
            {"type": "tool_call_response", "id": _str(item.get("tool_call_id", item.get("id"))), "response": response}
        ]
    else:
        parts = _content_parts(item.get("content"))
    parts += _openai_tool_calls(item.get("tool_calls"))
    return message(role, parts, _str(finish_reason if finish_reason is not None else item.get("finish_reason")))


def _semconv_messages(value: Any, default_role: str) -> list[Message]:
    """Current semconv messages (``[{role, parts, finish_reason?}]``); OpenAI-shaped items too."""
    value = _decode(value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return [message(default_role, _content_parts(value))] if value not in (None, "") else []
    out = []
    for item in value:
        if not isinstance(item, dict):
            parts = _content_parts(item)
            if parts:
                out.append(message(default_role, parts))
        elif "parts" in item:
            parts = _content_parts(item.get("parts"))
            out.append(message(_str(item.get("role")) or default_role, parts, _str(item.get("finish_reason"))))
        else:
            out.append(_openai_message(item, default_role))
    return out


# -- span attributes ---------------------------------------------------------------------------

_INDEXED = re.compile(r"(\d+)\.(.+)")


def _indexed(attributes: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """``prefix.N.rest = v`` attributes grouped into one dict per N (``{rest: v}``), by N."""
    groups: dict[int, dict[str, Any]] = {}
    cut = len(prefix)
    for key, value in attributes.items():
        if key.startswith(prefix):
            m = _INDEXED.fullmatch(key, cut)
            if m is not None:
                groups.setdefault(int(m.group(1)), {})[m.group(2)] = value
    return [groups[i] for i in sorted(groups)]


def _openllmetry(attributes: Mapping[str, Any], prefix: str, default_role: str) -> list[Message]:
    """``gen_ai.prompt.N.role/content/tool_call_id/tool_calls.M.*`` and ``gen_ai.completion.N.*``
    (with ``finish_reason`` and the older ``function_call.*``)."""
    out = []
    for fields in _indexed(attributes, prefix):
        role = _str(fields.get("role")) or default_role
        if role == "tool" or "tool_call_id" in fields:
            parts: list[Part] = [
                {
                    "type": "tool_call_response",
                    "id": _str(fields.get("tool_call_id")),
                    "response": fields.get("content"),
                }
            ]
        else:
            parts = _content_parts(fields.get("content"))
        for call in _indexed(fields, "tool_calls."):
            parts.append(_tool_call(call.get("id"), call.get("name"), call.get("arguments")))
        if "function_call.name" in fields:
            parts.append(_tool_call(None, fields["function_call.name"], fields.get("function_call.arguments")))
        out.append(message(role, parts, _str(fields.get("finish_reason"))))
    return out


def _openinference(attributes: Mapping[str, Any], prefix: str, default_role: str) -> list[Message]:
    """``llm.input_messages.N.message.role/content/contents.M.message_content.*/tool_calls.M.tool_call.*``."""
    out = []
    for fields in _indexed(attributes, prefix):
        role = _str(fields.get("message.role")) or default_role
        if role == "tool" or "message.tool_call_id" in fields:
            parts: list[Part] = [
                {
                    "type": "tool_call_response",
                    "id": _str(fields.get("message.tool_call_id")),
                    "response": fields.get("message.content"),
                }
            ]
        else:
            parts = _content_parts(fields.get("message.content"))
        for block in _indexed(fields, "message.contents."):
            kind = _str(block.get("message_content.type")) or "text"
            if kind == "text":
                parts.append(text_part(_str(block.get("message_content.text")) or ""))
            else:
                parts.append({"type": kind, **{k.rsplit(".", 1)[-1]: v for k, v in block.items()}})
        for call in _indexed(fields, "message.tool_calls."):
            parts.append(
                _tool_call(
                    call.get("tool_call.id"),
                    call.get("tool_call.function.name"),
                    call.get("tool_call.function.arguments"),
                )
            )
        out.append(message(role, parts, _str(fields.get("message.finish_reason"))))
    return out


def _io_value(value: Any, side: str) -> list[Message]:
    """OpenInference ``input.value`` / ``output.value`` (and ``traceloop.entity.*``): a request
    with ``messages``, a response with ``choices``, or anything else as one text message."""
    role = "user" if side == "input" else "assistant"
    decoded = _decode(value)
    if isinstance(decoded, dict):
        if isinstance(decoded.get("messages"), list):
            return _semconv_messages(decoded["messages"], role)
        if isinstance(decoded.get("choices"), list):
            return _choices(decoded["choices"])
        # traceloop.entity.* wraps the function's arguments: {"inputs": ..., "outputs": ...}
        for key in ("inputs", "outputs", "input", "output"):
            if key in decoded and len(decoded) <= 2:
                return _io_value(decoded[key], side)
    text = _str(value)
    return [message(role, [text_part(text)])] if text else []


def _choices(choices: Iterable[Any]) -> list[Message]:
    out = []
    for choice in choices:
        if isinstance(choice, dict):
            inner = choice.get("message")
            body: dict[str, Any] = inner if isinstance(inner, dict) else {"content": choice.get("text")}
            out.append(_openai_message(body, "assistant", choice.get("finish_reason")))
    return out


def _system_instructions(value: Any) -> list[Message]:
    parts = _content_parts(value)
    return [message("system", parts)] if parts else []


def _input_source(attributes: Mapping[str, Any]) -> str | None:
    """The convention a span's input messages are read from (the first present), or None."""
    if "gen_ai.input.messages" in attributes or "gen_ai.system_instructions" in attributes:
        return "semconv"
    if "gen_ai.prompt.0.role" in attributes or "gen_ai.prompt.0.content" in attributes:
        return "openllmetry"
    if "llm.input_messages.0.message.role" in attributes or "llm.input_messages.0.message.content" in attributes:
        return "openinference"
    return next((k for k in ("input.value", "traceloop.entity.input", "gen_ai.prompt") if k in attributes), None)


def _output_source(attributes: Mapping[str, Any]) -> str | None:
    if "gen_ai.output.messages" in attributes:
        return "semconv"
    if any(k.startswith("gen_ai.completion.0.") for k in attributes):
        return "openllmetry"
    if any(k.startswith("llm.output_messages.0.") for k in attributes):
        return "openinference"
    return next((k for k in ("output.value", "traceloop.entity.output", "gen_ai.completion") if k in attributes), None)


_PREFIXES = {
    ("openllmetry", "input"): "gen_ai.prompt.",
    ("openllmetry", "output"): "gen_ai.completion.",
    ("openinference", "input"): "llm.input_messages.",
    ("openinference", "output"): "llm.output_messages.",
}
#: The indexed keys (after the prefix) each indexed convention's messages are read from in full.
_MESSAGE_FIELDS = {
    "openllmetry": re.compile(
        r"\d+\.(?:role|content|tool_call_id|finish_reason|function_call\.(?:name|arguments)"
        r"|tool_calls\.\d+\.(?:id|name|arguments))"
    ),
    "openinference": re.compile(
        r"\d+\.message\.(?:role|content|tool_call_id|finish_reason|contents\.\d+\.message_content\.[a-z_.]+"
        r"|tool_calls\.\d+\.tool_call\.(?:id|function\.name|function\.arguments))"
    ),
}


def _read(attributes: Mapping[str, Any], source: str | None, side: str) -> list[Message]:
    role = "user" if side == "input" else "assistant"
    if source is None:
        return []
    if source == "semconv":
        if side == "input":
            return _system_instructions(attributes.get("gen_ai.system_instructions")) + _semconv_messages(
                attributes.get("gen_ai.input.messages"), role
            )
        return _semconv_messages(attributes.get("gen_ai.output.messages"), role)
    if source == "openllmetry":
        return _openllmetry(attributes, _PREFIXES[source, side], role)
    if source == "openinference":
        return _openinference(attributes, _PREFIXES[source, side], role)
    return _io_value(attributes[source], side)


def _source_keys(attributes: Mapping[str, Any], source: str | None, side: str) -> list[str]:
    """The attribute keys whose whole content the side's messages hold (what a caller may store
    only as messages): not ``input.value``/``output.value``/``traceloop.entity.*`` (a whole request
    or function call, of which messages are a part) nor JSON text of OpenLIT's keys."""
    if source == "semconv":
        keys = (
            ("gen_ai.input.messages", "gen_ai.system_instructions") if side == "input" else ("gen_ai.output.messages",)
        )
        return [k for k in keys if k in attributes]
    if source in _MESSAGE_FIELDS:
        prefix, pattern = _PREFIXES[source, side], _MESSAGE_FIELDS[source]
        return [k for k in attributes if k.startswith(prefix) and pattern.fullmatch(k, len(prefix))]
    if source in ("gen_ai.prompt", "gen_ai.completion"):
        value = attributes[source]
        return [source] if isinstance(value, str) and value[:1] not in ("[", "{") else []
    return []


def _input_from_attributes(attributes: Mapping[str, Any]) -> list[Message]:
    return _read(attributes, _input_source(attributes), "input")


def _output_from_attributes(attributes: Mapping[str, Any]) -> list[Message]:
    return _read(attributes, _output_source(attributes), "output")


def has_messages(attributes: Mapping[str, Any]) -> bool:
    """Whether ``attributes`` may carry messages (one set intersection: cheap for every span)."""
    return not MESSAGE_MARKER_KEYS.isdisjoint(attributes)


@dataclass(slots=True)
class AttributeMessages:
    """The messages of a span's attributes, and for each side the attribute keys they hold whole."""

    inputs: list[Message] = field(default_factory=list)
    outputs: list[Message] = field(default_factory=list)
    input_keys: list[str] = field(default_factory=list)
    output_keys: list[str] = field(default_factory=list)


def read_attributes(attributes: Mapping[str, Any]) -> AttributeMessages:
    """:func:`messages_from_attributes` with the keys each side was read from in full."""
    if not has_messages(attributes):
        return AttributeMessages()
    in_source, out_source = _input_source(attributes), _output_source(attributes)
    return AttributeMessages(
        _read(attributes, in_source, "input"),
        _read(attributes, out_source, "output"),
        _source_keys(attributes, in_source, "input"),
        _source_keys(attributes, out_source, "output"),
    )


def messages_from_attributes(attributes: Mapping[str, Any]) -> tuple[list[Message], list[Message]]:
    """The (input, output) messages a span's attributes carry, from the first convention present
    on each side (order in the module docstring); ``([], [])`` when none is."""
    found = read_attributes(attributes)
    return found.inputs, found.outputs


# -- GenAI events ------------------------------------------------------------------------------


def _event_fields(attributes: Mapping[str, Any], body: Any) -> dict[str, Any]:
    """The fields of a deprecated per-message event: the log record's body, else (span events)
    the attributes, where some libraries put the whole body JSON-encoded under
    ``gen_ai.event.content``."""
    decoded = _decode(body)
    if isinstance(decoded, dict):
        return decoded
    if body is not None and not isinstance(decoded, dict):
        return {"content": decoded}
    content = _decode(attributes.get("gen_ai.event.content"))
    if isinstance(content, dict):
        return content
    return {k: v for k, v in attributes.items() if not k.startswith("gen_ai.")}


def messages_from_event(name: str, attributes: Mapping[str, Any], body: Any) -> tuple[list[Message], list[Message]]:
    """The (input, output) messages one GenAI event carries: a span event (``body`` None) or an
    OTLP log record (``body`` its decoded body). Events of other names give ``([], [])``."""
    if name in _EVENT_ROLES:
        fields = _event_fields(attributes, body)
        return [_openai_message(fields, _EVENT_ROLES[name])], []
    if name == "gen_ai.choice":
        fields = _event_fields(attributes, body)
        inner = _decode(fields.get("message"))
        body_message = inner if isinstance(inner, dict) else fields
        return [], [_openai_message(body_message, "assistant", fields.get("finish_reason"))]
    if name == "gen_ai.client.inference.operation.details":
        source = dict(attributes)
        if isinstance(_decode(body), dict):
            source.update(_decode(body))
        return _input_from_attributes(source), _output_from_attributes(source)
    if name == "gen_ai.content.prompt":
        value = attributes.get("gen_ai.prompt", body)
        return (_io_value(value, "input") if value is not None else []), []
    if name == "gen_ai.content.completion":
        value = attributes.get("gen_ai.completion", body)
        return [], (_io_value(value, "output") if value is not None else [])
    return [], []


def messages_from_events(events: Iterable[Mapping[str, Any]]) -> tuple[list[Message], list[Message]]:
    """All messages of a span's events (``{"name", "attributes"}`` dicts), in event order."""
    inputs: list[Message] = []
    outputs: list[Message] = []
    for event in events:
        name = event.get("name")
        if name in MESSAGE_EVENTS:
            i, o = messages_from_event(name, event.get("attributes") or {}, None)
            inputs += i
            outputs += o
    return inputs, outputs


# -- size cap ----------------------------------------------------------------------------------


def _part_size(part: Part) -> int:
    return len(orjson.dumps(part))


def cap_messages(messages: list[Message], max_chars: int) -> list[Message]:
    """``messages`` cut to about ``max_chars`` characters of JSON: text parts past the budget are
    shortened and end with :data:`TRUNCATION_MARKER`, later parts and messages are dropped, and the
    last message kept gets ``"truncated": true``. Unchanged (same list) when within the cap."""
    if max_chars <= 0 or len(orjson.dumps(messages)) <= max_chars:
        return messages
    budget = max_chars
    out: list[Message] = []
    for msg in messages:
        budget -= 64  # role, finish reason and the JSON around them
        parts: list[Part] = []
        cut = False
        for part in msg["parts"]:
            size = _part_size(part)
            if size <= budget:
                parts.append(part)
                budget -= size
                continue
            cut = True
            if part.get("type") == "text" and budget > 0:
                parts.append(text_part(str(part.get("content", ""))[:budget] + TRUNCATION_MARKER))
            elif part.get("type") == "tool_call" and budget > 0:
                text = _str(part.get("arguments")) or ""
                parts.append({**part, "arguments": text[:budget] + TRUNCATION_MARKER})
            budget = 0
            break
        kept = {**msg, "parts": parts}
        if cut or budget <= 0:
            kept["truncated"] = True
            out.append(kept)
            break
        out.append(kept)
    return out


def message_text(messages: Iterable[Message]) -> Iterable[str]:
    """The text of the messages' text parts (what full-text search indexes)."""
    for msg in messages:
        for part in msg.get("parts", ()):
            if part.get("type") == "text" and isinstance(part.get("content"), str):
                yield part["content"]
