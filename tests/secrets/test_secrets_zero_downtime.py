"""`llmobs secrets rotate all` on a full local stack (PostgreSQL, Redis, api and collector with two
replicas each) while real clients keep working: an OpenTelemetry SDK exporter sends spans over
OTLP/gRPC and a reader lists traces through the API with a JWT issued before the rotation.

Zero failed requests, zero lost spans (every acknowledged span is in the database), the old
credentials refused afterwards (the old JWT once its grace period is over), no secret in any
process's arguments during the run nor in any log, and a rotation killed at any step finished
by the next run while the clients keep working. And while the JWT key rotates under two api
replicas, a client that fetches a fresh token and uses it at once never gets a 401.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmobs.config import read_env_file, update_env_file
from llmobs.secrets.rotate import FAILPOINT_ENV, rotation_steps

from helpers.common import free_ports_env, make_workdir, run_cli
from helpers.rotation import (
    FreshTokenUser,
    ProcessArgsSampler,
    api_status,
    assert_no_secret_in,
    assert_nothing_failed_or_lost,
    issue_jwt,
    load_clients,
    pg_refuses,
    redis_refuses,
    secret_values,
    wait_for_load_to_go_on,
)

pytestmark = pytest.mark.slow

JWT_GRACE_SECONDS = 45


@pytest.fixture(scope="module")
def stack() -> Iterator[Path]:
    """The full stack with two api and two collector replicas, shared by the two tests that rotate
    everything (starting it is a good part of either's time). The first, in file order, needs a
    stack whose secrets were never rotated; the second rotates it again at every step."""
    workdir = make_workdir("llmobs-test-")
    proj = workdir / "proj"
    assert run_cli("init", str(proj)).returncode == 0
    extra = {
        **free_ports_env(),
        "LLMOBS_RUNTIME": "local",
        "SECRETS_JWT_GRACE_SECONDS": str(JWT_GRACE_SECONDS),
        # Redis trouble must show as failed reads, not be served around.
        "API_RATE_LIMIT_FAIL_OPEN": "false",
        "API_RATE_LIMIT_PER_MINUTE": "100000",
        "API_RATE_LIMIT_BURST": "10000",
        "COLLECTOR_PUBLISH_TRACES": "true",
    }
    env_file = proj / ".env"
    env_file.write_text(env_file.read_text() + "".join(f"{k}={v}\n" for k, v in extra.items()))
    proc = run_cli("up", "--runtime", "local", project_dir=proj, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli("scale", "api=2", "collector=2", project_dir=proj, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield proj
    finally:
        run_cli("down", project_dir=proj, timeout=180)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def api_stack(workdir: Path):
    """PostgreSQL, Redis and two api replicas: what a JWT rotation involves."""
    proj = workdir / "proj"
    assert run_cli("init", str(proj)).returncode == 0
    extra = {
        **free_ports_env(),
        "LLMOBS_RUNTIME": "local",
        "API_RATE_LIMIT_PER_MINUTE": "100000",
        "API_RATE_LIMIT_BURST": "10000",
    }
    env_file = proj / ".env"
    env_file.write_text(env_file.read_text() + "".join(f"{k}={v}\n" for k, v in extra.items()))
    proc = run_cli("up", "--runtime", "local", "timescaledb", "redis", "api", project_dir=proj, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli("scale", "api=2", project_dir=proj, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield proj
    run_cli("down", project_dir=proj, timeout=180)


def assert_no_outage(project: Path, sender, reader) -> None:  # type: ignore[no-untyped-def]
    """Nothing failed or lost, and no running collector lost its database. A replacement collector
    reports ready once it listens, and may refuse a request (retryable UNAVAILABLE, which the
    exporter retries) in the instant before its first database connection: tolerated here; a
    running collector that loses its database logs "database unavailable" and fails this."""
    assert_nothing_failed_or_lost(project, sender, reader, allow_retries=True)
    log = (project / "logs" / "collector.log").read_text(errors="replace")
    outages = [line for line in log.splitlines() if "database unavailable" in line]
    assert not outages, outages[:5]


# -- tests -----------------------------------------------------------------------------------------


def test_rotate_all_under_load_fails_no_request_and_loses_no_span(stack: Path):
    before = read_env_file(stack / ".env")
    status_before = json.loads(run_cli("secrets", "status", "--json", project_dir=stack).stdout)
    sender, reader, old_token = load_clients(stack)
    try:
        with ProcessArgsSampler() as ps:
            started = time.monotonic()
            proc = run_cli("secrets", "rotate", "all", "--yes", "--json", project_dir=stack, timeout=600)
            took = time.monotonic() - started
        time.sleep(1)  # a little more load on the new replicas
    finally:
        reader.stop()
        sender.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    print(
        f"rotate all took {took:.1f} s; {len(sender.acked)} spans acknowledged, {reader.ok} reads, "
        f"{len(ps.samples)} ps samples"
    )
    assert result["restarted"] == ["api", "collector"] and "grafana" in result["skipped"]
    assert_no_outage(stack, sender, reader)

    after = read_env_file(stack / ".env")
    assert after["DB_APP_USER"] != before["DB_APP_USER"]
    assert pg_refuses(after, "postgres", before["DB_PASSWORD"])
    assert pg_refuses(after, before["DB_APP_USER"], before["DB_APP_PASSWORD"])
    assert pg_refuses(after, "llmobs_readonly", before["DB_READONLY_PASSWORD"])
    assert redis_refuses(after, before["REDIS_PASSWORD"])

    secrets = secret_values(before, after)
    assert_no_secret_in(ps.samples, secrets, "a process's arguments")
    assert_no_secret_in([proc.stdout, proc.stderr], secrets, "the rotation's output")
    assert_no_secret_in(
        [f.read_text(errors="replace") for f in (stack / "logs").iterdir()]
        + [(stack / "secrets-rotation.log").read_text()],
        secrets,
        "the logs",
    )

    # The JWT issued before the rotation works until the grace period ends, then not.
    new_token = issue_jwt(after)
    assert api_status(after, new_token) == 200
    until = datetime.fromisoformat(after["SECRET_KEY_PREVIOUS_UNTIL"])
    assert api_status(after, old_token) == 200
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1)
    assert api_status(after, old_token) == 401
    assert api_status(after, new_token) == 200

    status_after = json.loads(run_cli("secrets", "status", "--json", project_dir=stack).stdout)
    ages_before = {s["name"]: s for s in status_before["secrets"]}
    ages_after = {s["name"]: s for s in status_after["secrets"]}
    for name in ("DB_PASSWORD", "DB_APP_PASSWORD", "DB_READONLY_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY"):
        assert ages_before[name]["source"] == "estimated" and ages_after[name]["source"] == "rotated"
        assert ages_after[name]["since"] > ages_before[name]["since"]


def test_rotation_killed_at_every_step_finishes_on_rerun_while_clients_keep_working(stack: Path):
    # The reader's token, issued before each rotation, must outlive that rotation's crash and rerun:
    # after a kill at `restart` that is two rolling restarts past the key switch, more than the
    # 45 s grace the test above waits out when the machine is loaded.
    update_env_file(stack / ".env", {"SECRETS_JWT_GRACE_SECONDS": "900"})
    steps = [s.name for s in rotation_steps(["db", "redis", "jwt"])]
    sender, reader, _ = load_clients(stack)
    try:
        for step in steps:
            before = read_env_file(stack / ".env")
            reader.token = issue_jwt(before)  # each rotation meets a token issued before it
            killed = run_cli(
                "secrets",
                "rotate",
                "all",
                "--yes",
                project_dir=stack,
                timeout=600,
                env={FAILPOINT_ENV: f"secrets:{step}"},
            )
            assert killed.returncode == -9, f"{step}: {killed.stdout}{killed.stderr}"
            wait_for_load_to_go_on(sender, reader, f"after a kill at {step}")  # as the crash left it
            rerun = run_cli("secrets", "rotate", "all", "--yes", project_dir=stack, timeout=600)
            assert rerun.returncode == 0, f"{step}: {rerun.stdout}{rerun.stderr}"
            assert "finishing the rotation" in rerun.stdout
            after = read_env_file(stack / ".env")
            assert not [k for k, v in after.items() if k.endswith(("_NEXT", "_RETIRED")) and v]
            assert pg_refuses(after, before["DB_APP_USER"], before["DB_APP_PASSWORD"]), step
            assert redis_refuses(after, before["REDIS_PASSWORD"]), step
    finally:
        reader.stop()
        sender.stop()
    assert_no_outage(stack, sender, reader)


def test_fresh_tokens_work_on_every_replica_while_the_jwt_key_rotates(api_stack: Path):
    """Each replica is replaced twice: first to accept the staged key, then to sign with it. A token
    from a switched replica is therefore good on one not switched yet, and the other way round."""
    from llmobs.api.tokens import kid_for

    before = read_env_file(api_stack / ".env")
    with FreshTokenUser(int(before["API_PORT"]), before["LLMOBS_ADMIN_API_KEY"]) as user:
        deadline = time.monotonic() + 30
        while not user.used and not user.failures and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.monotonic()
        proc = run_cli("secrets", "rotate", "jwt", "--yes", "--json", project_dir=api_stack, timeout=300)
        took = time.monotonic() - started
        time.sleep(1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    after = read_env_file(api_stack / ".env")
    print(f"rotate jwt took {took:.1f} s; {user.used} fresh tokens used, {len(user.failures)} failures")
    assert user.failures == [], f"{len(user.failures)} failures, e.g. {user.failures[:5]}"
    assert user.kids == {kid_for(before["SECRET_KEY"]), kid_for(after["SECRET_KEY"])}, (
        "the client must have been issued tokens with both keys during the run"
    )
    assert result["warnings"] == []
    assert any("before signing with it" in check for check in result["checks"])
    assert not after.get("SECRET_KEY_NEXT") and "SECRET_KEY_NEXT_FILE" not in after
