"""`llmobs keys create|list|revoke` and `llmobs audit`, run as an operator would (subprocess), and
the keys they make used against the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmobs.config import Settings, render_env_file
from llmobs.store import apikeys

from helpers.api import api_client


@pytest.fixture
def project_dir(settings: Settings, pg_server, redis_server, db_name, tmp_path: Path) -> Path:
    from helpers.common import settings_env

    env = settings_env(pg_server, redis_server, db_name)
    (tmp_path / ".env").write_text(render_env_file(env))
    (tmp_path / ".env").chmod(0o600)
    return tmp_path


def llmobs(project_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "REDIS_", "LLMOBS_", "SECRET_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "llmobs", "--project-dir", str(project_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_create_list_revoke_and_audit(settings: Settings, project_dir: Path):
    created = llmobs(project_dir, "keys", "create", "--project", "newproj", "--role", "writer", "--name", "ci")
    assert "created project newproj" in created.stdout
    token = created.stdout.strip().splitlines()[-1]
    key_id = apikeys.key_id_of(token)
    assert key_id is not None
    again = json.loads(
        llmobs(project_dir, "keys", "create", "--project", "newproj", "--expires", "30", "--json").stdout
    )
    assert again["project_created"] is False and again["role"] == "reader" and again["expires_at"]
    assert apikeys.key_id_of(again["token"]) == again["id"]

    listed = json.loads(llmobs(project_dir, "keys", "list", "--project", "newproj", "--json").stdout)
    assert {k["id"] for k in listed} == {key_id, again["id"]}
    assert all("token" not in k and "key_hash" not in k for k in listed)
    table = llmobs(project_dir, "keys", "list").stdout
    assert key_id in table and "default" in table  # the default project's keys from .env

    with api_client(settings) as c:
        span = {"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "x", "start_time": "2099-01-01T00:00:00Z"}
        assert c.post("/api/v1/spans", headers={"Authorization": f"Bearer {token}"}, json=span).status_code == 422
        assert c.get("/api/v1/traces", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    refused = llmobs(project_dir, "keys", "revoke", key_id, check=False)  # no terminal, no --yes
    assert refused.returncode == 4 and "--yes" in refused.stderr
    revoked = json.loads(llmobs(project_dir, "keys", "revoke", key_id, "--yes", "--json").stdout)
    assert revoked["revoked_at"] and revoked["active"] is False
    with api_client(settings) as c:
        assert c.get("/api/v1/traces", headers={"Authorization": f"Bearer {token}"}).status_code == 401

    unknown = llmobs(project_dir, "keys", "revoke", "nosuchkey000", "--yes", check=False)
    assert unknown.returncode == 2 and "no API key" in unknown.stderr
    bad_role = llmobs(project_dir, "keys", "create", "--role", "root", check=False)
    assert bad_role.returncode == 2 and "unknown role" in bad_role.stderr
    bad_name = llmobs(project_dir, "keys", "create", "--project", "bad name!", check=False)
    assert bad_name.returncode == 2 and "invalid project name" in bad_name.stderr
    assert "Traceback" not in bad_name.stderr + unknown.stderr + bad_role.stderr

    entries = json.loads(llmobs(project_dir, "audit", "--project", "newproj", "--json").stdout)
    assert [e["action"] for e in entries] == ["key.revoke", "key.create", "key.create", "project.create"]
    assert all(e["actor"].startswith("cli:") and e["source"] for e in entries)
    assert entries[0]["target"] == key_id
    assert all(token not in json.dumps(e) for e in entries)
    only = json.loads(llmobs(project_dir, "audit", "--action", "key.revoke", "--since", "1h", "--json").stdout)
    assert [e["target"] for e in only] == [key_id]
    assert "key.revoke" in llmobs(project_dir, "audit").stdout
    assert llmobs(project_dir, "audit", "--since", "yesterday-ish", check=False).returncode == 2
