"""The CLI as operators and scripts use it: fast help, clean errors, doctor."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from helpers.common import run_cli

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
    for command in ("init", "up", "down", "status", "logs", "scale", "switchover", "failover", "doctor", "db", "serve"):
        assert command in proc.stdout
        assert run_cli(command, "--help").returncode == 0


def test_unknown_command_is_a_usage_error():
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_switchover_and_failover_without_the_ha_profile_say_how_to_get_it(workdir):
    run_cli("init", str(workdir))
    for args in (("switchover",), ("failover", "--to", "db-2")):
        proc = run_cli(*args, "--runtime", "local", project_dir=workdir)
        assert proc.returncode == 2, proc.stderr
        assert "`ha` profile" in proc.stderr and "--profile ha" in proc.stderr
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


def test_cli_edges_for_scripts_exit_codes_json_errors_and_settings(workdir):
    """Issue 18 item 10: not a project is a usage error (2, like every configuration error);
    with --json the error is JSON on stdout; messages are never wrapped without a terminal; a
    misspelt .env key is named with a guess; two services on one port are refused at once."""
    import time

    from helpers.common import free_ports_env

    deep = workdir / ("a-rather-long-directory-name-" * 3) / "not-a-project"
    deep.mkdir(parents=True)
    for args in (("status",), ("up", "--runtime", "local"), ("backup", "list")):
        proc = run_cli(*args, project_dir=deep)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        first_line = proc.stderr.splitlines()[0]  # one line, though longer than 80 columns
        assert first_line == f"error: {deep} (from --project-dir) is not a project directory: it has no .env"
    proc = run_cli("status", "--json", project_dir=deep)
    assert proc.returncode == 2 and proc.stderr == ""
    error = json.loads(proc.stdout)["error"]
    assert error["exit_code"] == 2 and "is not a project directory" in error["message"]

    project = workdir / "proj"
    assert run_cli("init", str(project)).returncode == 0
    ports = free_ports_env()
    env_file = project / ".env"
    env_file.write_text(
        env_file.read_text() + "".join(f"{k}={v}\n" for k, v in ports.items()) + "COLECTOR_GRPC_PORT=4444\n"
    )
    proc = run_cli("status", "--json", "--runtime", "local", project_dir=project)
    json.loads(proc.stdout)  # warnings stay off stdout
    assert "COLECTOR_GRPC_PORT is not a setting and is ignored (did you mean COLLECTOR_GRPC_PORT?)" in proc.stderr

    started = time.monotonic()
    proc = run_cli("up", "--runtime", "local", project_dir=project, env={"API_PORT": ports["DB_PORT"]})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"API_PORT: port {ports['DB_PORT']} is also DB_PORT's" in proc.stderr
    assert time.monotonic() - started < 30
    assert not (project / "data" / "postgres").exists()  # nothing was started


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
