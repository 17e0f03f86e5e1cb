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

from collections.abc import Collection, Iterable, Mapping
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

_OPENLLMETRY_INPUT = frozenset({"gen_ai.prompt.0.role", "gen_ai.prompt.0.content"})
_OPENLLMETRY_OUTPUT = frozenset(
    {
        "gen_ai.completion.0.role",
        "gen_ai.completion.0.content",
        "gen_ai.completion.0.finish_reason",
        "gen_ai.completion.0.tool_calls.0.name",
        "gen_ai.completion.0.function_call.name",
    }
)
_OPENINFERENCE_INPUT = frozenset(
    {
        "llm.input_messages.0.message.role",
        "llm.input_messages.0.message.content",
        "llm.input_messages.0.message.contents.0.message_content.text",
    }
)
_OPENINFERENCE_OUTPUT = frozenset(
    {
        "llm.output_messages.0.message.role",
        "llm.output_messages.0.message.content",
        "llm.output_messages.0.message.contents.0.message_content.text",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name",
    }
)

#: Attribute keys whose presence means a span may carry messages: one set lookup decides
#: whether the (slower) extraction runs at all. Indexed families are found by their index 0.
MESSAGE_MARKER_KEYS: frozenset[str] = (
    _OPENLLMETRY_INPUT
    | _OPENLLMETRY_OUTPUT
    | _OPENINFERENCE_INPUT
    | _OPENINFERENCE_OUTPUT
    | {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
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
    if type(content) is str and content[:1] not in ("[", "{"):  # the common case, first
        return [{"type": "text", "content": content}] if content else []
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
            nested = call.get("function")
            function = nested if isinstance(nested, dict) else call
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
    out: list[Message] = []
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


class _Probe:
    """Reads ``prefix.N.field`` attributes by looking each key up (indexes are dense from 0), and
    remembers every key it found: the keys the messages hold in full."""

    __slots__ = ("attributes", "found")

    def __init__(self, attributes: Mapping[str, Any], found: list[str] | None = None) -> None:
        self.attributes = attributes
        self.found: list[str] = [] if found is None else found

    def get(self, key: str) -> Any:
        value = self.attributes.get(key)
        if value is not None:
            self.found.append(key)
        return value

    def has(self, key: str) -> bool:
        return key in self.attributes


def _openllmetry_keys(prefix: str, i: int) -> tuple[str, str, str, str, str, str, str]:
    """The keys of message ``i``: role, content, tool_call_id, finish_reason, the first tool
    call's name, function_call.name, and the message's own prefix."""
    at = f"{prefix}{i}."
    return (
        at + "role",
        at + "content",
        at + "tool_call_id",
        at + "finish_reason",
        at + "tool_calls.0.name",
        at + "function_call.name",
        at,
    )


#: The keys of the first messages of each OpenLLMetry prefix, built once (not per span).
_OPENLLMETRY_KEYS: dict[str, tuple[tuple[str, str, str, str, str, str, str], ...]] = {
    prefix: tuple(_openllmetry_keys(prefix, i) for i in range(16))
    for prefix in ("gen_ai.prompt.", "gen_ai.completion.")
}


def _openllmetry(attributes: Mapping[str, Any], found: list[str], prefix: str, default_role: str) -> list[Message]:
    """``gen_ai.prompt.N.role/content/tool_call_id/tool_calls.M.*`` and ``gen_ai.completion.N.*``
    (with ``finish_reason`` and the older ``function_call.*``), N from 0 to the first gap; the keys
    read are appended to ``found``. Runs for every such span: plain dict lookups, the tool fields
    only where they can be."""
    completion = default_role == "assistant"
    first_keys = _OPENLLMETRY_KEYS[prefix]
    get = attributes.get
    out: list[Message] = []
    i = 0
    while True:
        role_key, content_key, call_id_key, finish_key, first_call_key, function_key, at = (
            first_keys[i] if i < 16 else _openllmetry_keys(prefix, i)
        )
        role_value, content = get(role_key), get(content_key)
        if role_value is None and content is None:
            return out
        if role_value is not None:
            found.append(role_key)
        if content is not None:
            found.append(content_key)
        role = role_value if type(role_value) is str and role_value else (_str(role_value) or default_role)
        call_id = None
        if role == "tool" or role == "function" or role_value is None:
            call_id = get(call_id_key)
            if call_id is not None:
                found.append(call_id_key)
        if role == "tool" or call_id is not None:
            parts: list[Part] = [{"type": "tool_call_response", "id": _str(call_id), "response": content}]
        elif type(content) is str and content and content[0] not in "[{":
            parts = [{"type": "text", "content": content}]
        else:
            parts = _content_parts(content)
        finish_reason = None
        if completion or role == "assistant":
            if first_call_key in attributes or function_key in attributes:
                probe = _Probe(attributes, found)
                j = 0
                while f"{at}tool_calls.{j}.name" in attributes:
                    call = f"{at}tool_calls.{j}."
                    parts.append(
                        _tool_call(probe.get(call + "id"), probe.get(call + "name"), probe.get(call + "arguments"))
                    )
                    j += 1
                if function_key in attributes:
                    parts.append(_tool_call(None, probe.get(function_key), probe.get(at + "function_call.arguments")))
            if completion:
                finish_reason = get(finish_key)
                if finish_reason is not None:
                    found.append(finish_key)
                    if type(finish_reason) is not str:
                        finish_reason = _str(finish_reason)
        out.append({"role": role, "parts": parts, "finish_reason": finish_reason})
        i += 1


def _openinference(probe: _Probe, prefix: str, default_role: str) -> list[Message]:
    """``llm.input_messages.N.message.role/content/contents.M.message_content.*/tool_calls.M.tool_call.*``,
    N from 0 to the first gap."""
    out: list[Message] = []
    i = 0
    while (
        probe.has(f"{prefix}{i}.message.role")
        or probe.has(f"{prefix}{i}.message.content")
        or probe.has(f"{prefix}{i}.message.contents.0.message_content.type")
    ):
        at = f"{prefix}{i}.message."
        role = _str(probe.get(at + "role")) or default_role
        content = probe.get(at + "content")
        call_id = probe.get(at + "tool_call_id")
        if role == "tool" or call_id is not None:
            parts: list[Part] = [{"type": "tool_call_response", "id": _str(call_id), "response": content}]
        else:
            parts = _content_parts(content)
        j = 0
        while probe.has(f"{at}contents.{j}.message_content.type") or probe.has(
            f"{at}contents.{j}.message_content.text"
        ):
            block = f"{at}contents.{j}.message_content."
            kind = _str(probe.get(block + "type")) or "text"
            if kind == "text":
                parts.append(text_part(_str(probe.get(block + "text")) or ""))
            else:
                fields = [k for k in probe.attributes if k.startswith(block)]
                parts.append({"type": kind, **{k[len(block) :]: probe.get(k) for k in fields if k != block + "type"}})
            j += 1
        j = 0
        while probe.has(f"{at}tool_calls.{j}.tool_call.function.name"):
            call = f"{at}tool_calls.{j}.tool_call."
            parts.append(
                _tool_call(
                    probe.get(call + "id"), probe.get(call + "function.name"), probe.get(call + "function.arguments")
                )
            )
            j += 1
        out.append(message(role, parts, _str(probe.get(at + "finish_reason"))))
        i += 1
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
    out: list[Message] = []
    for choice in choices:
        if isinstance(choice, dict):
            nested = choice.get("message")
            body = nested if isinstance(nested, dict) else {"content": choice.get("text")}
            out.append(_openai_message(body, "assistant", choice.get("finish_reason")))
    return out


def _system_instructions(value: Any) -> list[Message]:
    parts = _content_parts(value)
    return [message("system", parts)] if parts else []


def _input_source(attributes: Collection[str]) -> str | None:
    """The convention a span's input messages are read from (the first present), or None.
    ``attributes``: the attribute keys, or only those of them in MESSAGE_MARKER_KEYS."""
    if "gen_ai.input.messages" in attributes or "gen_ai.system_instructions" in attributes:
        return "semconv"
    if not _OPENLLMETRY_INPUT.isdisjoint(attributes):
        return "openllmetry"
    if not _OPENINFERENCE_INPUT.isdisjoint(attributes):
        return "openinference"
    return next((k for k in ("input.value", "traceloop.entity.input", "gen_ai.prompt") if k in attributes), None)


def _output_source(attributes: Collection[str]) -> str | None:
    if "gen_ai.output.messages" in attributes:
        return "semconv"
    if not _OPENLLMETRY_OUTPUT.isdisjoint(attributes):
        return "openllmetry"
    if not _OPENINFERENCE_OUTPUT.isdisjoint(attributes):
        return "openinference"
    return next((k for k in ("output.value", "traceloop.entity.output", "gen_ai.completion") if k in attributes), None)


_PREFIXES = {
    ("openllmetry", "input"): "gen_ai.prompt.",
    ("openllmetry", "output"): "gen_ai.completion.",
    ("openinference", "input"): "llm.input_messages.",
    ("openinference", "output"): "llm.output_messages.",
}


def _read_side(attributes: Mapping[str, Any], source: str | None, side: str) -> tuple[list[Message], list[str]]:
    """One side's messages from ``source``, and the attribute keys they hold in full (what a caller
    may store only as messages): not ``input.value``/``output.value``/``traceloop.entity.*`` (a
    whole request or function call, of which messages are a part) nor JSON text in OpenLIT's keys."""
    role = "user" if side == "input" else "assistant"
    if source is None:
        return [], []
    if source == "openllmetry":
        found: list[str] = []
        return _openllmetry(attributes, found, _PREFIXES[source, side], role), found
    if source == "semconv":
        if side == "input":
            keys = [k for k in ("gen_ai.input.messages", "gen_ai.system_instructions") if k in attributes]
            messages = _system_instructions(attributes.get("gen_ai.system_instructions")) + _semconv_messages(
                attributes.get("gen_ai.input.messages"), role
            )
            return messages, keys
        return _semconv_messages(attributes.get("gen_ai.output.messages"), role), ["gen_ai.output.messages"]
    if source == "openinference":
        probe = _Probe(attributes)
        return _openinference(probe, _PREFIXES[source, side], role), probe.found
    value = attributes[source]
    plain_openlit = (
        source in ("gen_ai.prompt", "gen_ai.completion") and isinstance(value, str) and value[:1] not in "[{"
    )
    return _io_value(value, side), [source] if plain_openlit else []


def _input_from_attributes(attributes: Mapping[str, Any]) -> list[Message]:
    return _read_side(attributes, _input_source(attributes), "input")[0]


def _output_from_attributes(attributes: Mapping[str, Any]) -> list[Message]:
    return _read_side(attributes, _output_source(attributes), "output")[0]


def has_messages(attributes: Mapping[str, Any]) -> bool:
    """Whether ``attributes`` may carry messages (one set intersection: cheap for every span)."""
    return not MESSAGE_MARKER_KEYS.isdisjoint(attributes)


#: A span's attribute messages: (inputs, outputs, input keys, output keys), the keys being those
#: each side was read from in full.
AttributeMessages = tuple[list[Message], list[Message], list[str], list[str]]
#: marker keys present -> (input source, output source): spans of one library share a few shapes
_SOURCES: dict[frozenset[str], tuple[str | None, str | None]] = {}


def read_attributes(attributes: Mapping[str, Any]) -> AttributeMessages | None:
    """:func:`messages_from_attributes` with the keys each side was read from in full; None when
    no attribute of any convention is present (the common case of a span that is no LLM call,
    decided by one set intersection)."""
    present = MESSAGE_MARKER_KEYS.intersection(attributes)
    if not present:
        return None
    sources = _SOURCES.get(present)
    if sources is None:
        # Every key the sources are chosen by is a marker key: the few present decide.
        sources = (_input_source(present), _output_source(present))
        if len(_SOURCES) < 1024:
            _SOURCES[present] = sources
    inputs, input_keys = _read_side(attributes, sources[0], "input")
    outputs, output_keys = _read_side(attributes, sources[1], "output")
    return inputs, outputs, input_keys, output_keys


def messages_from_attributes(attributes: Mapping[str, Any]) -> tuple[list[Message], list[Message]]:
    """The (input, output) messages a span's attributes carry, from the first convention present
    on each side (order in the module docstring); ``([], [])`` when none is."""
    found = read_attributes(attributes)
    return ([], []) if found is None else (found[0], found[1])


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
