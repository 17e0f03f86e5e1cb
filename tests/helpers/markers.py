"""Markers from the fixtures a test uses and from its area folder, so that tiers select on them
(`scripts/test --fast` is ``-m "not docker and not slow"``). Called from the
``pytest_collection_modifyitems`` hook of tests/conftest.py and of each area's conftest.py: pytest
calls every conftest's hook with all collected items, so each limits itself to its own folder.
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
