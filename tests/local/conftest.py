"""Fixtures of the local-runtime tests (tests/local): a fresh project on free ports whose stack
the test starts with `llmobs up` and that is stopped afterwards.

Tests here that use a ``project`` fixture (this one or a module's own) are marked ``local``:
they start PostgreSQL, Redis, the api and the collector as processes through the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.common import free_ports_env, run_cli
from helpers.markers import apply_markers

HERE = Path(__file__).parent


@pytest.fixture
def project(workdir: Path) -> Iterator[Path]:
    """A fresh project on free ports; whatever it started is stopped afterwards."""
    proj = workdir / "proj"
    ports = free_ports_env()
    assert run_cli("init", str(proj)).returncode == 0
    env_file = proj / ".env"
    env_file.write_text(env_file.read_text() + "".join(f"{k}={v}\n" for k, v in ports.items()))
    yield proj
    run_cli("down", project_dir=proj, timeout=120)


#: ``project`` here (this fixture or a module's own of the same name) is a stack that the test
#: starts; building the wheel is slow.
FIXTURE_MARKERS = {"project": ("local",), "wheel": ("slow",)}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (helpers.markers)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    apply_markers(items, HERE, fixtures=FIXTURE_MARKERS)
