"""Copies the top-level resource directories into the package when a wheel is built.

`compose/`, `init-sql/`, `grafana-provisioning/` and `monitoring/` stay at the top of the repository, where
operators look for them; the wheel carries them as `llmobs/resources/<name>/`.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCE_DIRS = ("compose", "init-sql", "grafana-provisioning", "monitoring")


class BuildPyWithResources(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "llmobs" / "resources"
        for name in RESOURCE_DIRS:
            src = root / name
            if src.is_dir():
                shutil.copytree(
                    src, target / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )


setup(cmdclass={"build_py": BuildPyWithResources})
