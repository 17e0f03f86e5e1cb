"""Files that ship inside the wheel: compose files, migrations, Grafana provisioning and the
monitoring profile's configuration (alert rules, exporter queries).

In a checkout they live at the top of the repository; in an installed wheel, the build copies
them into ``llmobs/resources/`` (see ``setup.py``). Callers never care which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

ResourceName = Literal["compose", "init-sql", "grafana-provisioning", "monitoring"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: ResourceName) -> Path:
    for candidate in (_PACKAGE_DIR / "resources" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ files are missing from this installation of llmobs")
