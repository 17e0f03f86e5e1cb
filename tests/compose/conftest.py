"""Markers of the compose tests (tests/compose): every test here drives a compose stack on the
real Docker engine (through the CLI, with the offline images of ``helpers.compose``), from a
fixture of its module or from its body, so every one is marked ``docker``."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.markers import apply_markers


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (helpers.markers)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    apply_markers(items, Path(__file__).parent, always=("docker",))
