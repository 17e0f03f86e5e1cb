"""Fixtures of the API and web UI tests (tests/api): the API in-process on the test's database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmobs.config import Settings

from helpers.api import Seeded, api_client, seed
from helpers.markers import apply_markers


@pytest.fixture
def seeded(settings: Settings) -> Seeded:
    """Two projects A and B with traces (see ``helpers.api.seed``)."""
    return seed(settings)


@pytest.fixture
def client(settings: Settings) -> Iterator[Any]:
    """The API in-process (a starlette TestClient, its lifespan run)."""
    with api_client(settings) as c:
        yield c


#: ``browser`` (tests/api/test_ui_browser.py) launches Debian's chromium.
FIXTURE_MARKERS = {"browser": ("browser",)}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (helpers.markers)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    apply_markers(items, Path(__file__).parent, fixtures=FIXTURE_MARKERS)
