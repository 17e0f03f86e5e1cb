"""Redis and Grafana restores in the compose runtime, on a real Docker engine through the real CLI.

One project for the module, with PostgreSQL and Redis running (the offline images have no
Grafana server, so Grafana's volume is filled by a one-off container the way Grafana would,
owned by its user 472:0). Each restore job runs as the owner of the volume it replaces, keeps
the previous data in the backup volume (listed and removable by `llmobs backup kept-aside`) and
is recorded in audit_log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from helpers.compose import Project, docker, stack_up

pytestmark = pytest.mark.slow

GRAFANA_OWNER = "472:0"

#: Grafana's data as Grafana leaves it: grafana.db (SQLite) and plugin files, owned by its user.
_FILL_GRAFANA = """
import os, sqlite3
db = sqlite3.connect("/g/grafana.db")
db.execute("CREATE TABLE dashboard (id integer, title text)")
db.execute("INSERT INTO dashboard VALUES (1, 'LLM overview')")
db.commit()
os.makedirs("/g/plugins/panel")
open("/g/plugins/panel/plugin.json", "w").write('{"id": "panel"}')
for dirpath, dirs, files in os.walk("/g"):
    os.chown(dirpath, 472, 0)
    os.chmod(dirpath, 0o775)
    for name in files:
        os.chown(os.path.join(dirpath, name), 472, 0)
        os.chmod(os.path.join(dirpath, name), 0o640)
"""

#: What a user changes after the backup: a dashboard deleted, a plugin removed, a new file.
_CHANGE_GRAFANA = """
import os, sqlite3
db = sqlite3.connect("/g/grafana.db")
db.execute("DELETE FROM dashboard")
db.commit()
os.remove("/g/plugins/panel/plugin.json")
open("/g/after-backup.txt", "w").write("new")
"""

_READ_GRAFANA = """
import json, os, sqlite3
db = sqlite3.connect("file:/g/grafana.db?mode=ro", uri=True)
owners = set()
for dirpath, dirs, files in os.walk("/g"):
    for name in [*dirs, *files]:
        st = os.lstat(os.path.join(dirpath, name))
        owners.add(f"{st.st_uid}:{st.st_gid}")
plugin = "/g/plugins/panel/plugin.json"
print(json.dumps({"dashboards": db.execute("SELECT id, title FROM dashboard").fetchall(),
                  "plugin": open(plugin).read() if os.path.exists(plugin) else None,
                  "after_backup": os.path.exists("/g/after-backup.txt"), "owners": sorted(owners)}))
"""


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    with stack_up("--runtime", "compose", "timescaledb", "redis") as proj:
        yield proj


def _python_in_volume(project: Project, volume: str, script: str, *, user: str) -> str:
    """``script`` run by python3 of the app image with the project's ``volume`` at /g, as ``user``."""
    return docker(
        "run",
        "--rm",
        "-i",
        "--user",
        user,
        "-v",
        f"{project.name}-{volume}:/g",
        "--entrypoint",
        "python3",
        project.env["LLMOBS_IMAGE_APP"],
        "-",
        input=script.encode(),
    ).stdout


def _backup(project: Project, kind: str) -> str:
    created = project.cli("backup", "create", "--type", kind)
    found = re.findall(rf"\b(\d{{8}}T\d{{6}}Z-{kind}\S*)", created.stdout)
    assert found, created.stdout + created.stderr
    return found[-1]


def _kept_aside(project: Project, kind: str) -> list[dict]:
    kept = json.loads(project.cli("backup", "kept-aside", "--json").stdout)["kept_aside"]
    return [k for k in kept if k["kind"] == kind]


def _restore_audited(project: Project, backup_id: str) -> dict:
    [(details,)] = project.sql("SELECT details FROM audit_log WHERE action = 'restore' AND target = %s", (backup_id,))
    return details


def _redis(project: Project):
    import redis

    return redis.Redis(
        host="127.0.0.1",
        port=project.port("REDIS_PORT"),
        username=project.env["REDIS_USER"],
        password=project.env["REDIS_PASSWORD"],
    )


def test_redis_restore_brings_the_keys_back_and_keeps_the_old_data_aside(project: Project):
    client = _redis(project)
    client.mset({"probe:a": "1", "probe:b": "2"})
    backup_id = _backup(project, "redis")
    client.set("probe:a", "changed")
    client.delete("probe:b")
    client.set("probe:new", "after the backup")

    restored = project.cli("restore", backup_id, "--yes")
    assert "Stopping redis" in restored.stderr and "Starting redis" in restored.stderr, restored.stderr

    client = _redis(project)
    assert client.mget("probe:a", "probe:b", "probe:new") == [b"1", b"2", None]
    _, status = project.status()
    redis_state = next(s for s in status["services"] if s["name"] == "redis")
    assert redis_state["state"] == "running" and redis_state["health"] == "healthy", redis_state
    # What Redis loads belongs to the user it runs as.
    server = project.containers("redis")[0]["Id"]
    owners = docker(
        "exec", server, "sh", "-c", "stat -c %u:%g /data/dump.rdb /data/appendonlydir/*; id -u; id -g"
    ).stdout.split()
    assert set(owners[:-2]) == {f"{owners[-2]}:{owners[-1]}"}, owners
    [kept] = _kept_aside(project, "redis")
    assert kept["name"].startswith("redis-") and kept["size_bytes"] > 0
    assert _restore_audited(project, backup_id)["type"] == "redis"


def test_grafana_restore_brings_its_data_back_and_keeps_the_old_data_aside(project: Project):
    _python_in_volume(project, "grafana-data", _FILL_GRAFANA, user="0:0")
    backup_id = _backup(project, "grafana")
    _python_in_volume(project, "grafana-data", _CHANGE_GRAFANA, user=GRAFANA_OWNER)

    project.cli("restore", backup_id, "--yes")

    data = json.loads(_python_in_volume(project, "grafana-data", _READ_GRAFANA, user=GRAFANA_OWNER))
    assert data == {
        "dashboards": [[1, "LLM overview"]],
        "plugin": '{"id": "panel"}',
        "after_backup": False,
        "owners": [GRAFANA_OWNER],
    }
    [kept] = _kept_aside(project, "grafana")
    # The replaced data, as it was just before the restore, in the backup volume.
    name = kept["name"]
    assert (
        docker(
            "run",
            "--rm",
            "-v",
            f"{project.name}-backup-data:/b:ro",
            "--entrypoint",
            "cat",
            project.env["LLMOBS_IMAGE_APP"],
            f"/b/kept-aside/{name}/after-backup.txt",
        ).stdout
        == "new"
    )
    assert _restore_audited(project, backup_id)["type"] == "grafana"
    # Kept-aside data is removed by a job running as another user (PostgreSQL's): shared by group.
    project.cli("backup", "kept-aside", "remove", name, "--yes")
    assert _kept_aside(project, "grafana") == []
