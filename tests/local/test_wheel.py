"""The wheel is what operators install (`pipx install llmobs`): it must work outside a checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers.common import free_ports_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("llmobs-*.whl")
    return found


def test_wheel_ships_compose_files_migrations_grafana_provisioning_and_monitoring(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    for top in ("compose", "init-sql", "grafana-provisioning", "monitoring"):
        shipped = {n.split(f"llmobs/resources/{top}/", 1)[1] for n in names if f"llmobs/resources/{top}/" in n}
        in_repo = {str(p.relative_to(REPO / top)) for p in (REPO / top).rglob("*") if p.is_file()}
        assert in_repo and in_repo <= shipped, f"{top}/ missing from the wheel: {sorted(in_repo - shipped)}"


def test_wheel_ships_the_web_ui_assets(wheel: Path):
    """The UI has no build step: its templates, scripts, styles and vendored chart library are
    package data, and a wheel without them serves blank pages."""
    names = set(zipfile.ZipFile(wheel).namelist())
    ui = REPO / "llmobs" / "api" / "ui"
    in_repo = {
        f"llmobs/api/ui/{p.relative_to(ui)}"
        for p in ui.rglob("*")
        if p.is_file() and p.suffix in (".html", ".js", ".css", ".LICENSE")
    }
    assert "llmobs/api/ui/static/vendor/uPlot.iife.min.js" in in_repo
    assert in_repo <= names, f"missing from the wheel: {sorted(in_repo - names)}"


@pytest.mark.slow
def test_installed_wheel_runs_init_and_local_up_outside_the_checkout(wheel: Path, workdir: Path):
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    llmobs = venv / "bin" / "llmobs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOBS_", "DB_", "REDIS_"))}
    env.pop("PYTHONPATH", None)
    project = workdir / "site"

    def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(llmobs), "--project-dir", str(project), *args],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import llmobs, sys; print(llmobs.__file__)"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(REPO) not in where and str(venv) in where
    assert subprocess.run([str(llmobs), "init", str(project)], cwd=workdir, env=env).returncode == 0
    with (project / ".env").open("a") as fh:
        fh.writelines(f"{k}={v}\n" for k, v in free_ports_env().items())
    try:
        up = cli("up", "--runtime", "local")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        status = cli("status", "--json")
        assert status.returncode == 0, status.stdout
        assert json.loads(status.stdout)["overall"] == "healthy"
    finally:
        down = cli("down")
        assert down.returncode == 0, down.stderr
