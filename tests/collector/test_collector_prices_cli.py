"""`llmobs prices list|set|import` against a real database, as an operator runs them."""

from __future__ import annotations

import json

import pytest

from helpers.common import run_cli, settings_env


@pytest.fixture
def project(pg_server, redis_server, db_name, workdir):
    (workdir / ".env").write_text("LLMOBS_RUNTIME=local\n")
    return workdir, settings_env(pg_server, redis_server, db_name)


def prices(project, *args: str):
    workdir, env = project
    return run_cli("prices", *args, project_dir=workdir, env=env)


def test_seeded_prices_are_listed_and_matched(project):
    proc = prices(project, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rules = json.loads(proc.stdout)
    providers = {r["provider"] for r in rules}
    assert {None, "groq", "together_ai", "fireworks_ai", "aws.bedrock"} <= providers
    patterns = " ".join(r["model_pattern"] for r in rules)
    for family in ("gpt-4o", "claude", "gemini", "mistral", "llama", "command-r", "deepseek"):
        assert family in patterns

    match = json.loads(prices(project, "list", "--model", "gpt-4o-mini-2024-07-18", "--json").stdout)
    assert (match["input_per_mtok"], match["output_per_mtok"]) == (0.15, 0.6)
    proc = prices(project, "list", "--model", "no-such-model")
    assert proc.returncode == 1 and "no price applies" in proc.stdout


def test_table_output_shows_the_seeded_patterns_as_written(project):
    """The seeded patterns hold ``[/.]``: printed as a table they must show as such, not crash as markup."""
    proc = prices(project, "list")
    assert proc.returncode == 0, proc.stderr
    assert "[/.]" in proc.stdout and "claude" in proc.stdout
    proc = prices(project, "list", "--model", "claude-3-5-sonnet-20241022")
    assert proc.returncode == 0, proc.stderr
    assert "claude-3-5-sonnet-20241022" in proc.stdout and "3" in proc.stdout and "15" in proc.stdout


def test_set_adds_a_price_updates_it_and_is_audited(project, admin_conn):
    args = ("set", "(^|/)house-model$", "--input", "1.5", "--output", "3", "--cached-input", "0.5", "--json")
    first = json.loads(prices(project, *args).stdout)
    assert (first["input_per_mtok"], first["cached_input_per_mtok"], first["source"]) == (1.5, 0.5, "cli")
    second = json.loads(prices(project, "set", "(^|/)house-model$", "--input", "2", "--output", "3", "--json").stdout)
    assert second["id"] == first["id"] and second["input_per_mtok"] == 2
    match = json.loads(prices(project, "list", "--model", "acme/house-model", "--json").stdout)
    assert match["id"] == first["id"]
    actions = [r[0] for r in admin_conn.execute("SELECT action FROM audit_log WHERE target = '(^|/)house-model$'")]
    assert actions == ["price.set", "price.set"]


def test_a_project_override_wins_for_that_project_only(project):
    proc = prices(project, "set", "(^|/)gpt-4o$", "--input", "0", "--output", "0", "--project", "default")
    assert proc.returncode == 0, proc.stderr
    ours = json.loads(prices(project, "list", "--model", "gpt-4o", "--project", "default", "--json").stdout)
    everyone = json.loads(prices(project, "list", "--model", "gpt-4o", "--json").stdout)
    assert (ours["project"], ours["input_per_mtok"]) == ("default", 0)
    assert (everyone["project"], everyone["input_per_mtok"]) == (None, 2.5)


def test_import_is_all_or_nothing(project, workdir):
    good = workdir / "prices.csv"
    good.write_text(
        "model_pattern,provider,input_per_mtok,output_per_mtok,valid_from\n^alpha$,,1,2,2025-01-01\n^beta$,groq,3,4,\n"
    )
    proc = prices(project, "import", str(good), "--json")
    assert proc.returncode == 0, proc.stderr
    assert [(r["model_pattern"], r["provider"]) for r in json.loads(proc.stdout)] == [
        ("^alpha$", None),
        ("^beta$", "groq"),
    ]
    bad = workdir / "bad.json"
    bad.write_text(
        json.dumps(
            [
                {"model_pattern": "^gamma$", "input_per_mtok": 1, "output_per_mtok": 1},
                {"model_pattern": "^delta(", "input_per_mtok": 1, "output_per_mtok": 1},
            ]
        )
    )
    proc = prices(project, "import", str(bad))
    assert proc.returncode == 2 and "bad.json row 2" in proc.stderr and "Traceback" not in proc.stderr
    listed = " ".join(r["model_pattern"] for r in json.loads(prices(project, "list", "--json").stdout))
    assert "^alpha$" in listed and "^gamma$" not in listed


def test_unknown_project_is_a_clear_error(project):
    proc = prices(project, "set", "^x$", "--input", "1", "--output", "1", "--project", "nope")
    assert proc.returncode == 2 and "no project named 'nope'" in proc.stderr
