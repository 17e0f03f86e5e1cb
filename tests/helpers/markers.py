"""Markers from the fixtures a test uses and from its area folder, so that tiers select on them
(`scripts/test --fast` is ``-m "not docker and not slow"``). Called from the
``pytest_collection_modifyitems`` hook of tests/conftest.py and of each area's conftest.py: pytest
calls every conftest's hook with all collected items, so each limits itself to its own folder.

The same pass puts tests into pytest-xdist groups (the full run is ``-n 2 --dist loadgroup``):
tests that share a module-scoped fixture run on one worker, so its stack starts once, and every
``docker`` test runs on one worker, one after the other: they share the one Docker engine, and
some (swarm) require that no other project's containers exist. xdist reads the groups in its own
``pytest_collection_modifyitems``, so every conftest's hook that calls this is ``tryfirst``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest


def apply_markers(
    items: Sequence[pytest.Item],
    folder: Path,
    *,
    fixtures: Mapping[str, Sequence[str]] | None = None,
    always: Sequence[str] = (),
) -> None:
    """Mark each item under ``folder`` with ``always``, and with ``fixtures[name]`` for every
    fixture ``name`` it uses (directly or through other fixtures: ``item.fixturenames`` is the
    closure). An undeclared marker name fails the run (``--strict-markers``)."""
    for item in items:
        if folder not in item.path.parents:
            continue
        for marker in always:
            item.add_marker(marker)
        for name in getattr(item, "fixturenames", ()):
            for marker in (fixtures or {}).get(name, ()):
                item.add_marker(marker)
        _apply_group(item)


#: The xdist group of every test that needs the Docker engine.
DOCKER_GROUP = "docker"


def _apply_group(item: pytest.Item) -> None:
    """Give ``item`` its xdist group, once: ``docker``, else its module's when it uses a
    module-scoped fixture, else none (xdist sends it to whichever worker is free)."""
    if item.get_closest_marker("xdist_group") is not None:
        return
    if item.get_closest_marker("docker") is not None:
        item.add_marker(pytest.mark.xdist_group(DOCKER_GROUP))
        return
    # _fixtureinfo is pytest's own record of the fixtures a test resolves (no public accessor).
    definitions = getattr(item, "_fixtureinfo", None)
    for defs in definitions.name2fixturedefs.values() if definitions else ():
        if defs and defs[-1].scope == "module":
            item.add_marker(pytest.mark.xdist_group(item.path.name))
            return
