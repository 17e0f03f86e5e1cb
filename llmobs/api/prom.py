"""Prometheus metrics of the API process, served at ``GET /metrics``.

With several workers (``llmobs serve api --workers N``) each worker writes its samples to
``PROMETHEUS_MULTIPROC_DIR`` (set by :func:`llmobs.api.server.serve`) and any worker answers a
scrape with the sum over all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "llmobs_api_requests_total", "HTTP requests answered, by route template and status.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "llmobs_api_request_duration_seconds",
    "Time to answer a request (to the first byte for streams).",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CACHE = Counter(
    "llmobs_api_cache_requests_total", "Result cache lookups: hit, miss, or error (Redis unreachable).", ["result"]
)
RATE_LIMITED = Counter("llmobs_api_rate_limited_total", "Requests refused with 429.")
AUTH_FAILURES = Counter("llmobs_api_auth_failures_total", "Requests refused with 401.")


def scrape_registry() -> CollectorRegistry:
    """What a scrape reads: this process's registry, or the sum over the workers' files."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    """The current samples in the text exposition format, and its content type."""
    return generate_latest(scrape_registry()), CONTENT_TYPE_LATEST
