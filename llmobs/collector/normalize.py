"""One mapping table from the attribute names of every instrumentation family to span columns.

Families: OTel GenAI semantic conventions (current and deprecated names), OpenLLMetry
(Traceloop), OpenInference (Arize Phoenix) and OpenLIT. For each column the table lists the
attribute keys that carry it, best first; the first key present on a span wins. The raw
attributes are always stored as well, so nothing is lost by choosing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

#: column -> attribute keys, in order of preference. docs/collector.md shows this table.
COLUMN_SOURCES: dict[str, tuple[str, ...]] = {
    "operation": ("gen_ai.operation.name", "llm.request.type", "openinference.span.kind", "traceloop.span.kind"),
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
    "request_model": ("gen_ai.request.model", "llm.request.model_name", "embedding.model_name"),
    # OpenInference's llm.model_name is the model that answered (the requested one sits in
    # llm.invocation_parameters, below)
    "response_model": ("gen_ai.response.model", "llm.response.model_name", "llm.model_name"),
    "invocation_model": ("llm.invocation_parameters",),
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"),
    "total_tokens": ("gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total"),
    "cached_input_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ),
    "cache_write_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ),
    "reasoning_tokens": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
    ),
    "finish_reasons": ("gen_ai.response.finish_reasons", "llm.response.finish_reason", "llm.finish_reason"),
    "session_id": ("gen_ai.conversation.id", "session.id", "traceloop.association.properties.session_id"),
    "user_id": ("user.id", "enduser.id", "llm.user", "gen_ai.request.user", "traceloop.association.properties.user_id"),
    "client_cost": ("gen_ai.usage.cost", "llm.cost.total"),
    "client_cost_prompt": ("llm.cost.prompt",),
    "client_cost_completion": ("llm.cost.completion",),
    "error_type": ("error.type",),
    "environment": ("deployment.environment.name", "deployment.environment"),
    "time_to_first_token_ms": ("gen_ai.server.time_to_first_token",),
}

#: Largest token count one span may report (a trillion): far above any real call, far below the
#: point where sums over a rollup bucket could overflow.
MAX_TOKENS = 10**12
#: Largest cost in USD one span may carry, sent by the client or computed.
MAX_COST_USD = 1_000_000.0


class OutOfRange(ValueError):
    """A numeric attribute outside its accepted range: the span is rejected with this message."""


#: attribute key -> (column, rank): the table above turned inside out for one lookup per attribute.
ATTRIBUTE_COLUMNS: dict[str, tuple[str, int]] = {
    key: (column, rank) for column, keys in COLUMN_SOURCES.items() for rank, key in enumerate(keys)
}

_KNOWN_KEYS = frozenset(ATTRIBUTE_COLUMNS)

#: Operation names of the other families mapped onto the GenAI names (others are lowercased).
OPERATION_ALIASES: dict[str, str] = {
    # OpenInference span kinds
    "llm": "chat",
    "embedding": "embeddings",
    "tool": "execute_tool",
    "agent": "invoke_agent",
    "retriever": "retrieval",
    "reranker": "rerank",
    # chain, guardrail, evaluator (OpenInference) and workflow, task (traceloop.span.kind) are kept
    # as they are, lowercased
    # OpenLLMetry llm.request.type
    "completion": "text_completion",
    "rerank": "rerank",
}

#: Provider spellings of the families mapped onto the OTel GenAI well-known values.
PROVIDER_ALIASES: dict[str, str] = {
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "google": "gcp.gen_ai",
    "gemini": "gcp.gemini",
    "google_genai": "gcp.gen_ai",
    "googlegenai": "gcp.gen_ai",
    "vertexai": "gcp.vertex_ai",
    "vertex_ai": "gcp.vertex_ai",
    "google_vertexai": "gcp.vertex_ai",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "az.ai.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "aws": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "aws_bedrock": "aws.bedrock",
    "together": "together_ai",
    "togetherai": "together_ai",
    "together.ai": "together_ai",
    "fireworks": "fireworks_ai",
    "fireworksai": "fireworks_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}


@dataclass(slots=True)
class Normalized:
    """The columns one span's attributes yield (before cost and redaction)."""

    operation: str | None = None
    provider: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reasons: list[str] | None = None
    session_id: str | None = None
    user_id: str | None = None
    client_cost: float | None = None
    error_type: str | None = None
    environment: str | None = None
    time_to_first_token_ms: float | None = None
    #: attribute key each of session_id / user_id came from (redaction applies key rules to them)
    session_key: str | None = None
    user_key: str | None = None

    @property
    def model(self) -> str | None:
        """The model a span is priced by: the response model, else the request model."""
        return self.response_model or self.request_model


def normalize(attributes: dict[str, Any]) -> Normalized:
    """Pick the columns out of a span's attributes using :data:`ATTRIBUTE_COLUMNS`; OutOfRange
    (naming the key) when a number is out of range."""
    out = Normalized()
    keys = _KNOWN_KEYS.intersection(attributes)  # in C: most attributes (content, params) map to nothing
    if not keys:
        return out
    # column -> (rank, key, converter, upper bound) of the best key present for it
    found: dict[str, tuple[int, str, Callable[[Any], Any] | None, float | None]] = {}
    for key in keys:
        column, rank, convert, limit = _KEY_SPECS[key]
        held = found.get(column)
        if held is None or rank < held[0]:
            found[column] = (rank, key, convert, limit)
    for column, (_, key, convert, limit) in found.items():
        if convert is not None:
            try:
                value = convert(attributes[key])
            except OutOfRange as exc:
                raise OutOfRange(f"{key}: {exc}") from None
            if limit is not None and value is not None and value > limit:
                raise OutOfRange(f"{key}: {value:g} is out of range (0 to {limit:g})")
            setattr(out, column, value)
        elif column == "session_id":
            out.session_id, out.session_key = _text(attributes[key]), key
        elif column == "user_id":
            out.user_id, out.user_key = _text(attributes[key]), key
    if out.client_cost is None and ("client_cost_prompt" in found or "client_cost_completion" in found):
        parts = [
            _number(attributes[found[c][1]]) for c in ("client_cost_prompt", "client_cost_completion") if c in found
        ]
        if all(p is not None for p in parts):
            out.client_cost = sum(parts)  # type: ignore[arg-type]
            check_cost("llm.cost.prompt + llm.cost.completion", out.client_cost)
    if out.request_model is None and "invocation_model" in found:
        out.request_model = _invocation_model(attributes[found["invocation_model"][1]])
    if out.total_tokens is None and (out.input_tokens is not None or out.output_tokens is not None):
        out.total_tokens = (out.input_tokens or 0) + (out.output_tokens or 0)
    return out


def check_cost(source: str, cost: float | None) -> None:
    """OutOfRange when a span's cost (the client's or the computed one) exceeds MAX_COST_USD."""
    if cost is not None and cost > MAX_COST_USD:
        raise OutOfRange(f"{source}: {cost:g} is out of range (0 to {MAX_COST_USD:g})")


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        return None
    return str(value)


def _count(value: Any) -> int | None:
    """A token count: a non-negative integer (numbers sent as strings or floats are accepted);
    None when it is not a number; OutOfRange when it is negative or infinite."""
    if isinstance(value, bool):
        return None
    if type(value) is not int:
        try:
            value = int(float(value))
        except OverflowError:
            raise OutOfRange(f"{value} is out of range (0 to {MAX_TOKENS:g})") from None
        except (TypeError, ValueError):
            return None
    if value < 0:
        raise OutOfRange(f"{value} is out of range (0 to {MAX_TOKENS:g})")
    return value


def _number(value: Any) -> float | None:
    """A cost: a finite non-negative number; None when it is not a number (or NaN); OutOfRange
    when it is negative or infinite."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if number != number:
        return None
    if number < 0 or number == float("inf"):
        raise OutOfRange(f"{value} is out of range (0 to {MAX_COST_USD:g})")
    return number


def _invocation_model(value: Any) -> str | None:
    """The ``model`` of OpenInference's ``llm.invocation_parameters`` (a JSON object as text)."""
    if isinstance(value, str) and '"model"' in value:
        try:
            params = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        return _text(params.get("model")) if isinstance(params, dict) else None
    return None


def _seconds_as_ms(value: Any) -> float | None:
    """A duration sent in seconds (OTel GenAI's unit) in milliseconds."""
    seconds = _number(value)
    return None if seconds is None else seconds * 1000.0


def _operation(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    low = text.lower()
    return OPERATION_ALIASES.get(low, low)


def provider_name(value: Any) -> str | None:
    """A provider spelled the OTel GenAI way (``OpenAI`` -> ``openai``, ``mistralai`` -> ``mistral_ai``)."""
    text = _text(value)
    if text is None:
        return None
    low = text.strip().lower()
    return PROVIDER_ALIASES.get(low, low)


def _finish_reasons(value: Any) -> list[str] | None:
    if type(value) is list and len(value) == 1 and type(value[0]) is str:
        return value
    if isinstance(value, str):
        return [value] if value else None
    if isinstance(value, list):
        reasons = [str(v) for v in value if v is not None and not isinstance(v, (list, dict))]
        return reasons or None
    return None


#: Upper bounds of the numeric columns (lower bound 0 is checked by the converters).
_RANGES: dict[str, float] = {
    "input_tokens": MAX_TOKENS,
    "output_tokens": MAX_TOKENS,
    "total_tokens": MAX_TOKENS,
    "cached_input_tokens": MAX_TOKENS,
    "cache_write_tokens": MAX_TOKENS,
    "reasoning_tokens": MAX_TOKENS,
    "client_cost": MAX_COST_USD,
}

_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "operation": _operation,
    "provider": provider_name,
    "request_model": _text,
    "response_model": _text,
    "input_tokens": _count,
    "output_tokens": _count,
    "total_tokens": _count,
    "cached_input_tokens": _count,
    "cache_write_tokens": _count,
    "reasoning_tokens": _count,
    "finish_reasons": _finish_reasons,
    "client_cost": _number,
    "error_type": _text,
    "environment": _text,
    "time_to_first_token_ms": _seconds_as_ms,
}

#: attribute key -> (column, rank, converter, upper bound): what :func:`normalize` needs of a key
#: in one lookup (converter None: session_id, user_id and the parts combined afterwards).
_KEY_SPECS: dict[str, tuple[str, int, Callable[[Any], Any] | None, float | None]] = {
    key: (column, rank, _CONVERTERS.get(column), _RANGES.get(column))
    for key, (column, rank) in ATTRIBUTE_COLUMNS.items()
}
