"""Drive the real ``openai`` SDK under one GenAI instrumentation library, exporting to our collector.

    python tests/helpers/genai_driver.py LIBRARY

LIBRARY: ``openai-v2`` (opentelemetry-instrumentation-openai-v2, latest semconv, content on
spans), ``traceloop`` (traceloop-sdk with opentelemetry-instrumentation-openai),
``openinference`` (openinference-instrumentation-openai) or ``openlit``.

Environment: ``OPENAI_BASE_URL`` (the fake server), ``COLLECTOR_URL`` (OTLP/HTTP base URL) and
``COLLECTOR_TOKEN`` (ingest key). Each library patches ``openai`` and sets global providers, so
each runs in a process of its own. Every call runs inside a root span ``case:<name>`` of the
same tracer provider; the script prints ``{"case": trace_id, ...}`` as JSON on its last line.

Calls: ``chat`` (one completion), ``stream`` (streamed, with usage), ``embeddings``, ``error``
(model ``fake-error-400``: the fake answers 400).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

USER_TEXT = "Say hi to the observatory"
EMBED_TEXT = "observatory embeddings"


def _otlp_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {os.environ['COLLECTOR_TOKEN']}"}


def _sdk_provider() -> Any:
    """A tracer provider exporting each span as it ends to the collector (OTLP/HTTP)."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"driver-{sys.argv[1]}"}))
    exporter = OTLPSpanExporter(endpoint=f"{os.environ['COLLECTOR_URL']}/v1/traces", headers=_otlp_headers())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def setup_openai_v2() -> Any:
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_ONLY"
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    provider = _sdk_provider()
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    return provider


def setup_openinference() -> Any:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    provider = _sdk_provider()
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    return provider


def setup_traceloop() -> Any:
    os.environ["TRACELOOP_TELEMETRY"] = "false"
    os.environ["TRACELOOP_METRICS_ENABLED"] = "false"
    os.environ["TRACELOOP_LOGGING_ENABLED"] = "false"
    from opentelemetry import trace
    from traceloop.sdk import Traceloop

    Traceloop.init(
        app_name="driver-traceloop",
        api_endpoint=os.environ["COLLECTOR_URL"],
        headers=_otlp_headers(),
        disable_batch=True,
        telemetry_enabled=False,
    )
    Traceloop.set_association_properties({"user_id": "alice", "session_id": "sess-traceloop"})
    return trace.get_tracer_provider()


def setup_openlit() -> Any:
    import tempfile

    import openlit
    from opentelemetry import trace

    # OpenLIT downloads its price list at start; offline it cannot, so give it an empty one: it
    # then sends gen_ai.usage.cost = 0, which the collector must not take for a real cost.
    prices = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115 - read by openlit later
    prices.write("{}")
    prices.close()
    openlit.init(
        otlp_endpoint=os.environ["COLLECTOR_URL"],
        otlp_headers=_otlp_headers(),
        application_name="driver-openlit",
        disable_batch=True,
        disable_metrics=True,
        pricing_json=prices.name,
    )
    return trace.get_tracer_provider()


SETUPS: dict[str, Callable[[], Any]] = {
    "openai-v2": setup_openai_v2,
    "openinference": setup_openinference,
    "traceloop": setup_traceloop,
    "openlit": setup_openlit,
}


def run_calls(provider: Any) -> dict[str, str]:
    import openai

    client = openai.OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="sk-test", max_retries=0)
    tracer = provider.get_tracer("genai-driver")
    messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": USER_TEXT}]

    def chat() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)

    def stream() -> None:
        chunks = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        for _ in chunks:
            pass

    def embeddings() -> None:
        client.embeddings.create(model="text-embedding-3-small", input=EMBED_TEXT)

    def error() -> None:
        try:
            client.chat.completions.create(model="fake-error-400", messages=messages)
        except openai.BadRequestError:
            return
        raise AssertionError("the fake did not answer 400")

    trace_ids: dict[str, str] = {}
    for name, call in (("chat", chat), ("stream", stream), ("embeddings", embeddings), ("error", error)):
        with tracer.start_as_current_span(f"case:{name}") as root:
            call()
            trace_ids[name] = format(root.get_span_context().trace_id, "032x")
    return trace_ids


def main() -> None:
    provider = SETUPS[sys.argv[1]]()
    trace_ids = run_calls(provider)
    provider.force_flush()
    print(json.dumps(trace_ids), flush=True)


if __name__ == "__main__":
    main()
