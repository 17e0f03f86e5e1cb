"""Settings: each kind of value parses, or fails with an error naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmobs.config import ConfigError, Settings, read_env_file, render_env_file


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("DB_PORT", "6543", 6543),
        ("DB_PORT", " 6543 ", 6543),
        ("DB_POOL_SIZE", "1", 1),
        ("SAMPLING_HEAD_RATE", "0.25", 0.25),
        ("SAMPLING_HEAD_RATE", "0", 0.0),
        ("API_RATE_LIMIT_FAIL_OPEN", "false", False),
        ("API_RATE_LIMIT_FAIL_OPEN", "TRUE", True),
        ("API_RATE_LIMIT_FAIL_OPEN", "0", False),
        ("API_RATE_LIMIT_FAIL_OPEN", "yes", True),
        ("LLMOBS_RUNTIME", "local", "local"),
        ("BIND_ADDRESS", "0.0.0.0", "0.0.0.0"),
        ("BIND_ADDRESS", "::1", "::1"),
        ("BIND_ADDRESS", "db.internal", "db.internal"),
        ("COMPOSE_PROJECT_NAME", "other", "other"),
    ],
)
def test_a_valid_value_parses_to_its_kind(name: str, raw: str, expected: object) -> None:
    assert Settings.load(None, environ={name: raw}).get(name) == expected


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("DB_PORT", "0", "is not a port number"),
        ("DB_PORT", "65536", "is not a port number"),
        ("DB_PORT", "http", "is not a port number"),
        ("DB_POOL_SIZE", "ten", "is not an integer"),
        ("DB_POOL_SIZE", "0", "below the minimum 1"),
        ("SAMPLING_HEAD_RATE", "half", "is not a number"),
        ("SAMPLING_HEAD_RATE", "-0.5", "below the minimum 0"),
        ("API_RATE_LIMIT_FAIL_OPEN", "maybe", "is not a boolean"),
        ("LLMOBS_RUNTIME", "kubernetes", "is not one of: auto, compose, local"),
        ("BIND_ADDRESS", "not a host!", "is not an IP address or host name"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(name: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(None, environ={name: raw})
    assert name in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize(
    ("file_values", "environ", "expected"),
    [
        ({"DB_PORT": "7000"}, {}, 7000),  # .env alone
        ({"DB_PORT": "7000"}, {"DB_PORT": "7001"}, 7001),  # the environment wins over .env
        ({}, {}, 5432),  # the default
    ],
)
def test_environment_then_env_file_then_default(
    tmp_path: Path, file_values: dict[str, str], environ: dict[str, str], expected: int
) -> None:
    (tmp_path / ".env").write_text(render_env_file(file_values))
    assert Settings.load(tmp_path, environ=environ).get_int("DB_PORT") == expected


@pytest.mark.parametrize(
    ("env_file", "file_content", "expected"),
    [
        ({"REDIS_PASSWORD": "inline"}, None, "inline"),
        ({"REDIS_PASSWORD_FILE": "secret.txt"}, "from-file\n", "from-file"),
        # `init` writes every key: an empty value yields to the NAME_FILE beside it
        ({"REDIS_PASSWORD": "", "REDIS_PASSWORD_FILE": "secret.txt"}, "from-file", "from-file"),
    ],
)
def test_a_secret_comes_from_its_value_or_its_file(
    tmp_path: Path, env_file: dict[str, str], file_content: str | None, expected: str
) -> None:
    if file_content is not None:
        (tmp_path / "secret.txt").write_text(file_content)
    (tmp_path / ".env").write_text(render_env_file(env_file))
    assert Settings.load(tmp_path, environ={}).secret("REDIS_PASSWORD") == expected


@pytest.mark.parametrize(
    ("env_file", "message"),
    [
        ({}, "is not set"),
        ({"REDIS_PASSWORD_FILE": "missing.txt"}, "cannot read REDIS_PASSWORD_FILE"),
        ({"REDIS_PASSWORD_FILE": "empty.txt"}, "is empty"),
    ],
)
def test_a_missing_secret_is_an_error_without_its_value(tmp_path: Path, env_file: dict[str, str], message: str) -> None:
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / ".env").write_text(render_env_file(env_file))
    with pytest.raises(ConfigError) as caught:
        Settings.load(tmp_path, environ={}).secret("REDIS_PASSWORD")
    assert "REDIS_PASSWORD" in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize(
    "values",
    [
        {"A": "plain"},
        {"A": "with space", "B": "with # hash"},
        {"A": "quote ' and \" both", "B": ""},
        {"A": "dollar $HOME stays literal"},
    ],
)
def test_env_file_round_trips_any_value(tmp_path: Path, values: dict[str, str]) -> None:
    path = tmp_path / ".env"
    path.write_text(render_env_file(values))  # also writes every known setting's default
    parsed = read_env_file(path)
    assert {key: parsed[key] for key in values} == values
