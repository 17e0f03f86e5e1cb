"""Fixtures of the collector tests (tests/collector). Collectors as subprocesses come from
``start_collector`` in tests/conftest.py (the API and local tests start them too)."""

from __future__ import annotations

import psycopg
import pytest

from llmobs.collector.pipeline import SpanPipeline
from llmobs.config import Settings

from helpers.pipeline import make_pipeline


@pytest.fixture
def pipeline(settings: Settings, admin_conn: psycopg.Connection) -> SpanPipeline:
    """The collector's span pipeline in-process, its prices loaded, its time window wide enough
    for spans of fixed past dates."""
    return make_pipeline(settings, admin_conn)
