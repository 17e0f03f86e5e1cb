"""Secret rotation against a real local stack (PostgreSQL and redis-server started by `llmobs up`),
through the real CLI: credentials change, old ones are refused, and a rotation killed at any
step is finished by the next run while the credentials in .env keep working."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from llmobs.config import read_env_file
from llmobs.secrets.catalog import SECRETS
from llmobs.secrets.rotate import FAILPOINT_ENV, rotation_steps

from helpers.common import free_ports_env, run_cli
from helpers.rotation import pg_accepts, redis_accepts

TRACKED = [s.name for s in SECRETS]


@pytest.fixture
def data_stack(workdir: Path):
    """A project whose PostgreSQL and Redis run (no api/collector): enough for the credentials."""
    proj = workdir / "proj"
    assert run_cli("init", str(proj)).returncode == 0
    env_file = proj / ".env"
    env_file.write_text(
        env_file.read_text() + "".join(f"{k}={v}\n" for k, v in free_ports_env().items()) + "LLMOBS_RUNTIME=local\n"
    )
    proc = run_cli("up", "--runtime", "local", "timescaledb", "redis", project_dir=proj)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield proj
    run_cli("down", project_dir=proj, timeout=120)


def assert_service_credentials_work(env: dict[str, str]) -> None:
    """What the api and collector would log in with, from .env as it is now."""
    assert pg_accepts(env, env["DB_APP_USER"], env["DB_APP_PASSWORD"])
    assert redis_accepts(env, env["REDIS_PASSWORD"])


def assert_rotated(before: dict[str, str], after: dict[str, str]) -> None:
    for name in ("DB_PASSWORD", "DB_READONLY_PASSWORD", "DB_APP_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY"):
        assert after[name] != before[name], name
    assert after["DB_APP_USER"] != before["DB_APP_USER"]
    assert after["SECRET_KEY_PREVIOUS"] == before["SECRET_KEY"]
    assert not [k for k, v in after.items() if k.endswith(("_NEXT", "_RETIRED")) and v], (
        "staged or retired values left in .env"
    )
    assert pg_accepts(after, "postgres", after["DB_PASSWORD"])
    assert not pg_accepts(after, "postgres", before["DB_PASSWORD"])
    assert pg_accepts(after, "llmobs_readonly", after["DB_READONLY_PASSWORD"])
    assert not pg_accepts(after, "llmobs_readonly", before["DB_READONLY_PASSWORD"])
    assert pg_accepts(after, after["DB_APP_USER"], after["DB_APP_PASSWORD"])
    assert not pg_accepts(after, before["DB_APP_USER"], before["DB_APP_PASSWORD"])
    assert redis_accepts(after, after["REDIS_PASSWORD"])
    assert not redis_accepts(after, before["REDIS_PASSWORD"])


def test_rotation_changes_every_credential_and_refuses_the_old_ones(data_stack: Path):
    before = read_env_file(data_stack / ".env")
    status_before = json.loads(run_cli("secrets", "status", "--json", project_dir=data_stack).stdout)
    proc = run_cli("secrets", "rotate", "db", "redis", "jwt", "--yes", "--json", project_dir=data_stack)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["secrets"] == [
        "DB_PASSWORD",
        "DB_READONLY_PASSWORD",
        "DB_APP_PASSWORD",
        "REDIS_PASSWORD",
        "SECRET_KEY",
    ]
    assert any("old one is refused" in c for c in result["checks"])
    after = read_env_file(data_stack / ".env")
    assert_rotated(before, after)
    # the local redis.conf holds only the new password (a Redis restart keeps the rotation)
    conf = (data_stack / "run" / "redis.conf").read_text()
    assert after["REDIS_PASSWORD"] in conf and before["REDIS_PASSWORD"] not in conf

    secret_values = [v for k, v in {**before, **after}.items() if k in TRACKED or k == "SECRET_KEY_PREVIOUS" if v]
    log_text = (data_stack / "secrets-rotation.log").read_text()
    output = proc.stdout + proc.stderr
    for value in secret_values:
        assert value not in log_text and value not in output
        for f in (data_stack / "logs").iterdir():
            assert value not in f.read_text(errors="replace"), f"secret in {f.name}"

    status_after = json.loads(run_cli("secrets", "status", "--json", project_dir=data_stack).stdout)
    old = {s["name"]: s for s in status_before["secrets"]}
    new = {s["name"]: s for s in status_after["secrets"]}
    for name in ("DB_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY"):
        assert old[name]["source"] == "estimated" and new[name]["source"] == "rotated"
    assert new["GRAFANA_ADMIN_PASSWORD"]["source"] == "baseline"
    assert status_after["jwt_previous_until"]

    with psycopg.connect(
        host="127.0.0.1",
        port=int(after["DB_PORT"]),
        dbname=after["DB_NAME"],
        user="postgres",
        password=after["DB_PASSWORD"],
    ) as conn:
        rows = conn.execute("SELECT actor, target, details FROM audit_log WHERE action = 'secrets.rotate'").fetchall()
    assert len(rows) == 1 and rows[0][1].startswith("DB_PASSWORD") and rows[0][2]["app_user"] == after["DB_APP_USER"]
    assert not any(v in json.dumps(rows[0][2]) for v in secret_values)


ROTATION_STEPS = [s.name for s in rotation_steps(["db", "redis", "jwt"])]


def test_a_rotation_killed_at_any_step_is_finished_by_the_next_run(data_stack: Path):
    for step in ROTATION_STEPS:
        before = read_env_file(data_stack / ".env")
        killed = run_cli(
            "secrets",
            "rotate",
            "db",
            "redis",
            "jwt",
            "--yes",
            project_dir=data_stack,
            env={FAILPOINT_ENV: f"secrets:{step}"},
        )
        assert killed.returncode == -9, f"{step}: {killed.stdout}{killed.stderr}"
        assert (data_stack / "run" / "rotation.json").exists(), step
        # In between, what the services log in with (.env as the crash left it) still works.
        assert_service_credentials_work(read_env_file(data_stack / ".env"))
        status = run_cli("secrets", "status", "--json", project_dir=data_stack)
        assert status.returncode == 1 and json.loads(status.stdout)["pending_rotation"], step

        rerun = run_cli("secrets", "rotate", "db", "redis", "jwt", "--yes", project_dir=data_stack)
        assert rerun.returncode == 0, f"{step}: {rerun.stdout}{rerun.stderr}"
        assert "finishing the rotation" in rerun.stdout
        assert not (data_stack / "run" / "rotation.json").exists()
        assert_rotated(before, read_env_file(data_stack / ".env"))
    entries = [json.loads(line) for line in (data_stack / "secrets-rotation.log").read_text().splitlines()]
    rotated = [e for e in entries if e["event"] == "rotated" and e["secret"] == "DB_PASSWORD"]
    assert len(rotated) == len(ROTATION_STEPS), "each rotation is logged exactly once"


def test_redis_restarted_in_the_middle_of_a_rotation_does_not_strand_it(data_stack: Path):
    """Redis rewrites its configuration from .env when it starts. A rotation killed after switching
    .env, then a Redis restart: the rerun still finishes, and only the new password works."""
    from llmobs.config import Settings
    from llmobs.progress import SilentProgress
    from llmobs.secrets.store import redis_passwords_in_play
    from llmobs.stack.local import LocalStack

    before = read_env_file(data_stack / ".env")
    killed = run_cli(
        "secrets", "rotate", "redis", "--yes", project_dir=data_stack, env={FAILPOINT_ENV: "secrets:redis.commit"}
    )
    assert killed.returncode == -9
    stack = LocalStack(Settings.load(data_stack, environ={}), redis_passwords=redis_passwords_in_play)  # as `up`
    stack.stop(["redis"])
    stack.start(["redis"], SilentProgress())
    assert_service_credentials_work(read_env_file(data_stack / ".env"))

    rerun = run_cli("secrets", "rotate", "redis", "--yes", project_dir=data_stack)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = read_env_file(data_stack / ".env")
    assert redis_accepts(after, after["REDIS_PASSWORD"])
    assert not redis_accepts(after, before["REDIS_PASSWORD"])


def test_a_later_rotation_drops_a_previous_jwt_key_whose_grace_is_over(data_stack: Path):
    from llmobs.config import update_env_file

    assert run_cli("secrets", "rotate", "jwt", "--yes", project_dir=data_stack).returncode == 0
    assert read_env_file(data_stack / ".env")["SECRET_KEY_PREVIOUS"]
    update_env_file(data_stack / ".env", {"SECRET_KEY_PREVIOUS_UNTIL": "2020-01-01T00:00:00+00:00"})
    proc = run_cli("secrets", "rotate", "redis", "--yes", project_dir=data_stack)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dropped the previous JWT key" in proc.stdout
    env = read_env_file(data_stack / ".env")
    assert env["SECRET_KEY_PREVIOUS"] == "" and env["SECRET_KEY_PREVIOUS_UNTIL"] == ""
