"""The pieces of secret rotation that need no running stack: staging and swapping values in
.env and *_FILE files, the journal lock, the rotation log, `secrets status`, and the CLI's
refusals (nothing changes when the stack is down or confirmation is missing)."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmobs.config import read_env_file
from llmobs.errors import AlreadyRunning, ConfigError, UsageError
from llmobs.secrets import history
from llmobs.secrets.catalog import SECRETS, expand_targets
from llmobs.secrets.journal import RotationJournal, rotation_lock
from llmobs.secrets.status import secrets_status
from llmobs.secrets.store import SecretStore

from helpers.common import free_ports_env, run_cli


@pytest.fixture
def project(workdir: Path) -> Path:
    proj = workdir / "proj"
    assert run_cli("init", str(proj)).returncode == 0
    env_file = proj / ".env"
    ports = free_ports_env()
    env_file.write_text(
        env_file.read_text() + "".join(f"{k}={v}\n" for k, v in ports.items()) + "LLMOBS_RUNTIME=local\n"
    )
    return proj


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_stage_then_swap_keeps_old_value_aside_until_forgotten(project: Path):
    store = SecretStore(project, environ={})
    old = store.current("REDIS_PASSWORD")
    store.stage({"REDIS_PASSWORD": "new-one"})
    store.stage({"REDIS_PASSWORD": "another"})  # a rerun keeps the value staged first
    assert store.staged("REDIS_PASSWORD") == "new-one"
    assert store.current("REDIS_PASSWORD") == old
    assert mode(project / ".env") == 0o600

    assert store.swap("REDIS_PASSWORD", extra={"REDIS_USER": "llmobs"})
    values = read_env_file(project / ".env")
    assert values["REDIS_PASSWORD"] == "new-one"
    assert values["REDIS_PASSWORD_RETIRED"] == old
    assert "REDIS_PASSWORD_NEXT" not in values
    assert not store.swap("REDIS_PASSWORD"), "a second swap (rerun after a crash) must change nothing"
    assert store.current("REDIS_PASSWORD") == "new-one"

    store.forget_retired(["REDIS_PASSWORD"])
    assert store.retired("REDIS_PASSWORD") is None
    assert mode(project / ".env") == 0o600


def test_file_backed_secret_is_staged_and_swapped_in_its_own_file(project: Path):
    secret_file = project / "secrets" / "db_app_password"
    secret_file.parent.mkdir()
    secret_file.write_text("old-value\n")
    env = read_env_file(project / ".env")
    env["DB_APP_PASSWORD"] = ""
    env["DB_APP_PASSWORD_FILE"] = "secrets/db_app_password"
    from llmobs.config import render_env_file, write_private_file

    write_private_file(project / ".env", render_env_file(env))
    store = SecretStore(project, environ={})
    assert store.current("DB_APP_PASSWORD") == "old-value"

    store.stage({"DB_APP_PASSWORD": "new-value"})
    staged = secret_file.with_name("db_app_password.next")
    assert staged.read_text().strip() == "new-value" and mode(staged) == 0o600
    assert "new-value" not in (project / ".env").read_text(), "a file-backed secret never goes into .env"

    assert store.swap("DB_APP_PASSWORD", extra={"DB_APP_USER": "llmobs_app_b"})
    assert secret_file.read_text().strip() == "new-value" and mode(secret_file) == 0o600
    assert store.retired("DB_APP_PASSWORD") == "old-value"
    assert read_env_file(project / ".env")["DB_APP_USER"] == "llmobs_app_b"
    assert not staged.exists()
    store.forget_retired(["DB_APP_PASSWORD"])
    assert not secret_file.with_name("db_app_password.retired").exists()


def test_a_staged_file_backed_jwt_key_is_what_the_api_accepts_as_next(project: Path):
    """The api reads the staged key as the setting SECRET_KEY_NEXT (two-phase JWT rotation); with
    SECRET_KEY in a file, it comes from the staged file named in .env."""
    from llmobs.config import Settings, update_env_file

    key_file = project / "secrets" / "secret_key"
    key_file.parent.mkdir()
    key_file.write_text("current-signing-key-" + "x" * 40 + "\n")
    update_env_file(project / ".env", {"SECRET_KEY": "", "SECRET_KEY_FILE": "secrets/secret_key"})
    SecretStore(project, environ={}).stage({"SECRET_KEY": "staged-signing-key-" + "y" * 40})
    settings = Settings.load(project, environ={})
    assert settings.secret("SECRET_KEY") == "current-signing-key-" + "x" * 40
    assert settings.secret("SECRET_KEY_NEXT") == "staged-signing-key-" + "y" * 40
    assert "staged-signing-key" not in (project / ".env").read_text()


def test_a_secret_set_in_the_environment_cannot_be_rotated_and_its_value_is_not_shown():
    store = SecretStore(Path("/nonexistent"), environ={"REDIS_PASSWORD": "s3cret-in-env"})
    with pytest.raises(ConfigError) as info:
        store.check_rotatable(["DB_PASSWORD", "REDIS_PASSWORD"])
    assert info.value.key == "REDIS_PASSWORD"
    assert "s3cret-in-env" not in str(info.value) + (info.value.hint or "")
    with pytest.raises(ConfigError):
        SecretStore(Path("/nonexistent"), environ={"SECRET_KEY_FILE": "/x"}).check_rotatable(["SECRET_KEY"])


def test_targets_expand_in_rotation_order():
    assert expand_targets(["jwt", "db"]) == ["db", "jwt"]
    assert expand_targets(["all"]) == ["db", "redis", "jwt", "grafana", "ha"]
    with pytest.raises(UsageError):
        expand_targets(["ssh"])


def test_one_rotation_at_a_time(project: Path):
    with rotation_lock(project), pytest.raises(AlreadyRunning) as info, rotation_lock(project):
        pass
    assert f"pid {os.getpid()}" in info.value.message
    with rotation_lock(project):  # released
        pass


def test_journal_round_trip_is_private(project: Path):
    journal = RotationJournal(
        id="abc",
        started_at="2024-01-01T00:00:00+00:00",
        runtime="local",
        targets=["db"],
        secrets=["DB_PASSWORD"],
        project_dir=str(project),
    )
    journal.mark("stage")
    path = project / "run" / "rotation.json"
    assert mode(path) == 0o600
    again = RotationJournal.read(project)
    assert again is not None and again.done == ["stage"] and again.targets == ["db"]
    again.remove()
    assert RotationJournal.read(project) is None


def test_rotation_log_baseline_then_rotations_once_per_run(project: Path):
    env_time = datetime.now(UTC) - timedelta(days=200)
    os.utime(project / ".env", (env_time.timestamp(), env_time.timestamp()))
    history.ensure_baseline(project)
    history.ensure_baseline(project)  # only once
    entries = history.entries(project)
    assert len(entries) == len(SECRETS) and all(e.event == "baseline" for e in entries)
    assert abs((entries[0].at - env_time).total_seconds()) < 2

    history.record_rotated(project, "r1", {"REDIS_PASSWORD": datetime.now(UTC).isoformat()}, "cli:test")
    history.record_rotated(project, "r1", {"REDIS_PASSWORD": datetime.now(UTC).isoformat()}, "cli:test")
    rotated = [e for e in history.entries(project) if e.event == "rotated"]
    assert [e.secret for e in rotated] == ["REDIS_PASSWORD"]
    assert history.last_change(project)["REDIS_PASSWORD"].event == "rotated"
    assert mode(history.log_path(project)) == 0o600

    status = secrets_status(project, runtime="local", max_age_days=90)
    by_name = {s.name: s for s in status.secrets}
    assert by_name["REDIS_PASSWORD"].warning is None
    assert by_name["DB_PASSWORD"].warning and "200 days" in by_name["DB_PASSWORD"].warning
    for unused in ("GRAFANA_ADMIN_PASSWORD", "DB_REPLICATION_PASSWORD", "PATRONI_REST_PASSWORD"):
        assert by_name[unused].warning is None and not by_name[unused].in_use, unused
    assert status.exit_code == 1


def test_status_cli_reports_ages_and_warns_with_exit_code_1(project: Path):
    proc = run_cli("secrets", "status", "--json", project_dir=project)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] and {s["name"] for s in data["secrets"]} == {s.name for s in SECRETS}
    assert all(s["source"] == "estimated" and s["age_days"] < 1 for s in data["secrets"])

    old = (datetime.now(UTC) - timedelta(days=120)).timestamp()
    os.utime(project / ".env", (old, old))
    proc = run_cli("secrets", "status", project_dir=project)
    assert proc.returncode == 1
    assert "older than SECRETS_MAX_AGE_DAYS=90" in proc.stdout
    assert "llmobs secrets rotate db" in proc.stdout
    env = read_env_file(project / ".env")
    for s in SECRETS:
        assert env[s.name] not in proc.stdout


def test_rotate_needs_confirmation_without_a_terminal(project: Path):
    before = (project / ".env").read_text()
    proc = run_cli("secrets", "rotate", "db", project_dir=project)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "--yes" in proc.stderr
    assert (project / ".env").read_text() == before


def test_rotate_with_the_stack_down_changes_nothing(project: Path):
    before = (project / ".env").read_text()
    proc = run_cli("secrets", "rotate", "all", "--yes", project_dir=project, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the stack must be up" in proc.stderr
    assert "Grafana does not run in the local runtime" in proc.stdout
    assert (project / ".env").read_text() == before
    assert not (project / "run" / "rotation.json").exists()


def test_rotate_grafana_alone_in_the_local_runtime_is_skipped(project: Path):
    proc = run_cli("secrets", "rotate", "grafana", "--yes", "--json", project_dir=project)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rotation_ids"] == [] and "grafana" in result["skipped"]
    assert "Grafana does not run in the local runtime" in proc.stderr


def test_the_docs_name_every_rotation_step():
    from llmobs.secrets.rotate import rotation_steps

    docs = (Path(__file__).resolve().parents[2] / "docs" / "secrets.md").read_text()
    for step in rotation_steps(["db", "redis", "jwt", "grafana", "ha"], ha_profile=True):
        assert f"`{step.name}`" in docs, step.name


def test_under_the_ha_profile_patroni_takes_the_superuser_password_right_after_env_has_it():
    from llmobs.secrets.rotate import rotation_steps

    names = [s.name for s in rotation_steps(["db"], ha_profile=True)]
    assert names[names.index("db.superuser.commit") + 1] == "db.superuser.patroni"
    assert "db.superuser.patroni" not in [s.name for s in rotation_steps(["db"])]
