"""The CLI as operators and scripts use it: fast help, clean errors, doctor."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import run_cli

HEAVY = (
    "psycopg",
    "grpc",
    "boto3",
    "botocore",
    "python_on_whales",
    "fastapi",
    "starlette",
    "redis",
    "uvicorn",
    "strawberry",
    "apscheduler",
    "google.protobuf",
    "opentelemetry",
)


def test_help_imports_no_heavy_library():
    """`llmobs --help` must stay fast: server and client libraries load only in the commands using them."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['llmobs', '--help']\n"
        "try:\n    runpy.run_module('llmobs', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"heavy = {HEAVY!r}\n"
        "print('LOADED', sorted({m.split('.')[0] for m in sys.modules if m.startswith(heavy)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LOADED []" in out, out.splitlines()[-1]


def test_every_command_group_has_help():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("init", "up", "down", "status", "logs", "scale", "doctor", "db", "serve"):
        assert command in proc.stdout
        assert run_cli(command, "--help").returncode == 0


def test_unknown_command_is_a_usage_error():
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_doctor_reports_local_runtime_prerequisites_as_json(workdir):
    run_cli("init", str(workdir))
    proc = run_cli("doctor", "--json", project_dir=workdir)
    data = json.loads(proc.stdout)
    names = {c["name"]: c for c in data["checks"]}
    assert names["postgresql"]["verdict"] == "ok"
    assert names["redis-server"]["verdict"] == "ok"
    assert "port DB_PORT" in names
    assert data["ready"]["local"] is True
    assert proc.returncode == 0


def test_doctor_names_a_missing_binary_with_a_fix(workdir):
    run_cli("init", str(workdir))
    proc = run_cli("doctor", "--json", project_dir=workdir, env={"PG_BIN_DIR": str(workdir / "nope")})
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["postgresql"]["verdict"] == "fail"
    assert "PG_BIN_DIR" in checks["postgresql"]["hint"]


def test_doctor_warns_when_the_monitoring_binaries_are_missing(workdir):
    run_cli("init", str(workdir))
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(shutil.which("redis-server"))  # everything else off PATH
    proc = run_cli("doctor", "--json", project_dir=workdir, env={"PATH": str(bin_dir)})
    data = json.loads(proc.stdout)
    check = {c["name"]: c for c in data["checks"]}["monitoring profile"]
    assert check["verdict"] == "warn" and "apt-get install prometheus " in check["hint"]
    assert data["ready"]["local"] is True  # optional: the stack runs without it
