"""Project creation and settings: what an operator sees when configuring llmobs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from llmobs.config import (
    SECRET_NAMES,
    SETTINGS,
    Settings,
    find_project_dir,
    init_project,
    read_env_file,
    render_configuration_doc,
    update_env_file,
)
from llmobs.errors import ConfigError, LlmobsError

from helpers.common import run_cli

REPO = Path(__file__).resolve().parents[2]


def test_init_writes_private_env_with_every_setting_and_strong_distinct_secrets(workdir):
    proc = run_cli("init", str(workdir / "proj"))
    assert proc.returncode == 0, proc.stderr
    env_file = workdir / "proj" / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = read_env_file(env_file)
    assert {s.name for s in SETTINGS} <= set(values)
    secrets = [values[s.name] for s in SETTINGS if s.secret and s.generate]
    assert all(len(v) >= 32 for v in secrets)
    assert len(set(secrets)) == len(secrets)
    for value in secrets:  # the output never shows a secret
        assert value not in proc.stdout + proc.stderr
    # a second project gets different secrets
    run_cli("init", str(workdir / "other"))
    assert read_env_file(workdir / "other" / ".env")["DB_PASSWORD"] != values["DB_PASSWORD"]


def test_init_refuses_to_overwrite_without_force_and_force_keeps_values(workdir):
    init_project(workdir)
    before = read_env_file(workdir / ".env")
    proc = run_cli("init", str(workdir))
    assert proc.returncode != 0
    assert "already exists" in proc.stderr and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr
    # --force rewrites but keeps existing values, and fills in a secret that went missing
    text = (workdir / ".env").read_text().replace(f"REDIS_PASSWORD={before['REDIS_PASSWORD']}", "REDIS_PASSWORD=")
    (workdir / ".env").write_text(text)
    assert run_cli("init", "--force", str(workdir)).returncode == 0
    after = read_env_file(workdir / ".env")
    assert after["DB_PASSWORD"] == before["DB_PASSWORD"]
    assert after["REDIS_PASSWORD"] and after["REDIS_PASSWORD"] != before["REDIS_PASSWORD"]
    assert stat.S_IMODE((workdir / ".env").stat().st_mode) == 0o600


def test_project_dir_is_found_from_option_then_env_then_parents(workdir):
    a, b = workdir / "a", workdir / "b"
    init_project(a)
    init_project(b)
    nested = a / "x" / "y"
    nested.mkdir(parents=True)
    assert find_project_dir(None, cwd=nested, environ={}) == a.resolve()
    assert find_project_dir(None, cwd=nested, environ={"LLMOBS_PROJECT_DIR": str(b)}) == b.resolve()
    assert find_project_dir(str(a), cwd=nested, environ={"LLMOBS_PROJECT_DIR": str(b)}) == a.resolve()
    with pytest.raises(LlmobsError, match="no LLM Observatory project"):
        find_project_dir(None, cwd=workdir, environ={})
    proc = run_cli("db", "status", cwd=workdir)
    assert proc.returncode != 0 and "llmobs init" in proc.stderr


def test_environment_overrides_env_file_and_file_variants_hold_secrets(workdir):
    init_project(workdir)
    secret_file = workdir / "redis_password"
    secret_file.write_text("from-a-docker-secret\n")
    settings = Settings.load(workdir, environ={"API_PORT": "9999", "REDIS_PASSWORD_FILE": str(secret_file)})
    assert settings.get_int("API_PORT") == 9999
    assert settings.get_int("DB_PORT") == 5432
    assert settings.secret("REDIS_PASSWORD") == "from-a-docker-secret"
    # a plain value in the environment wins over a *_FILE one
    settings = Settings.load(workdir, environ={"REDIS_PASSWORD": "plain", "REDIS_PASSWORD_FILE": str(secret_file)})
    assert settings.secret("REDIS_PASSWORD") == "plain"
    # in .env, where `init` wrote every key, a *_FILE replaces the empty placeholder of its secret
    update_env_file(workdir / ".env", {"REDIS_PASSWORD": "", "REDIS_PASSWORD_FILE": str(secret_file)})
    assert Settings.load(workdir, environ={}).secret("REDIS_PASSWORD") == "from-a-docker-secret"


def test_missing_secret_names_the_key():
    settings = Settings({}, None)
    with pytest.raises(ConfigError) as err:
        settings.secret("DB_PASSWORD")
    assert err.value.key == "DB_PASSWORD" and "DB_PASSWORD" in str(err.value)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("DB_PORT", "abc", "DB_PORT: 'abc' is not a port number"),
        ("API_PORT", "70000", "API_PORT: '70000' is not a port number"),
        ("LLMOBS_RUNTIME", "kubernetes", "LLMOBS_RUNTIME: 'kubernetes' is not one of"),
    ],
)
def test_invalid_values_stop_the_command_naming_the_key(workdir, key, value, expected):
    init_project(workdir)
    proc = run_cli("status", project_dir=workdir, env={key: value})
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_secret_stops_up_without_revealing_other_secrets(workdir):
    init_project(workdir)
    values = read_env_file(workdir / ".env")
    (workdir / ".env").write_text(
        (workdir / ".env").read_text().replace(f"DB_APP_PASSWORD={values['DB_APP_PASSWORD']}", "DB_APP_PASSWORD=")
    )
    proc = run_cli("up", "--runtime", "local", project_dir=workdir)
    assert proc.returncode == 2
    assert "DB_APP_PASSWORD: is not set" in proc.stderr
    for name in SECRET_NAMES:
        if values.get(name):
            assert values[name] not in proc.stdout + proc.stderr
    assert not (workdir / "data").exists()


def test_configuration_doc_lists_every_key():
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == render_configuration_doc(), "docs/configuration.md is stale: run scripts/gen-docs"
    for s in SETTINGS:
        assert f"`{s.name}`" in doc
