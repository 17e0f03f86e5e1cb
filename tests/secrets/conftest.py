"""Markers of the secrets tests (tests/secrets): the fixtures of its modules that start a stack
through the CLI (`llmobs up` of the local runtime, or of a compose project on Docker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.markers import apply_markers

FIXTURE_MARKERS = {
    "data_stack": ("local",),
    "stack": ("local",),
    "api_stack": ("local",),
    "compose_project": ("docker",),
}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (helpers.markers)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    apply_markers(items, Path(__file__).parent, fixtures=FIXTURE_MARKERS)
