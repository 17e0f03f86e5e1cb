"""The collector's Prometheus metrics (served on COLLECTOR_METRICS_PORT with /health).

With several worker processes, prometheus_client's multiprocess mode sums the workers' values
(``PROMETHEUS_MULTIPROC_DIR`` is set by the supervisor before any worker imports the client);
the gauges say how each is combined.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_P = "llmobs_collector_"
#: The ``reason`` label values of ``spans_refused_total``: 429 for a full queue or memory budget,
#: 503 while PostgreSQL is unavailable, and spans PostgreSQL refused to store.
SPAN_REFUSAL_REASONS = ("queue_full", "memory_full", "db_unavailable", "database_refused")


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY

        r = registry or REGISTRY
        self.spans_received = Counter(
            _P + "spans_received", "Spans received in OTLP requests.", ["transport"], registry=r
        )
        self.spans_accepted = Counter(
            _P + "spans_accepted",
            "Spans acknowledged to clients (committed, or held for a tail-sampling decision).",
            ["transport"],
            registry=r,
        )
        self.spans_rejected = Counter(
            _P + "spans_rejected", "Invalid spans rejected (OTLP partial success).", registry=r
        )
        self.spans_refused = Counter(
            _P + "spans_refused",
            "Spans of requests answered with a retryable or permanent error, by reason.",
            ["reason"],
            registry=r,
        )
        # Every reason is exported at 0 from the start: a series born at its first refusal shows
        # rate() no increase, so refusals within one scrape of a fresh process would never alert.
        for reason in SPAN_REFUSAL_REASONS:
            self.spans_refused.labels(reason=reason)
        self.requests = Counter(
            _P + "requests", "OTLP export requests by transport and outcome.", ["transport", "outcome"], registry=r
        )
        self.signal_items = Counter(
            _P + "signal_items",
            "OTLP log records and metric data points by outcome: stored, rejected (partial success), "
            "refused (retryable error: queue full, database down), "
            "not_stored (metrics other than gen_ai.*, exponential histograms, summaries: accepted, not kept).",
            ["signal", "outcome"],
            registry=r,
        )
        self.spans_sampled_out = Counter(
            _P + "spans_sampled_out", "Spans dropped by sampling.", ["sampler"], registry=r
        )
        self.spans_written = Counter(_P + "spans_written", "Spans committed to PostgreSQL.", registry=r)
        self.unknown_price = Counter(
            _P + "spans_unknown_model_price",
            "LLM spans whose model has no price (cost left NULL): add one with `llmobs prices set`.",
            registry=r,
        )
        self.redactions = Counter(_P + "redactions", "Values redacted (PII and secrets).", registry=r)
        self.batch_spans = Histogram(
            _P + "batch_spans",
            "Spans per COPY batch (group commit).",
            registry=r,
            buckets=(1, 8, 32, 128, 512, 1024, 2048, 4096, 8192, 16384),
        )
        self.commit_seconds = Histogram(
            _P + "commit_seconds",
            "Time to COPY and commit one batch.",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.queue_spans = Gauge(
            _P + "queue_spans", "Spans admitted but not yet committed.", registry=r, multiprocess_mode="livesum"
        )
        self.tail_held_spans = Gauge(
            _P + "tail_held_spans", "Spans held for a tail-sampling decision.", registry=r, multiprocess_mode="livesum"
        )
        self.database_up = Gauge(
            _P + "database_up", "1 when PostgreSQL accepts writes.", registry=r, multiprocess_mode="livemin"
        )
        self.traces_published = Counter(_P + "traces_published", "New-trace messages published on Redis.", registry=r)
        self.publish_errors = Counter(_P + "publish_errors", "Failed Redis publishes (messages dropped).", registry=r)

    def observe_commit(self, spans: int, seconds: float) -> None:
        self.spans_written.inc(spans)
        self.batch_spans.observe(spans)
        self.commit_seconds.observe(seconds)
