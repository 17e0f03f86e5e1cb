"""After `backup prune`, a point-in-time restore before the oldest kept backup is refused, on a
local-runtime stack through the real CLI (issue 18 item 9): the message names that backup and
its end time, the exit code is the usage one (docs/operations.md), and nothing changes — the
stack keeps serving and every acknowledged span stays stored."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from llmobs.config import read_env_file
from llmobs.errors import EXIT_USAGE

from helpers.common import run_cli
from helpers.local import export_spans, status_json, stored_spans

#: keep one backup per day and nothing else: of two backups taken today, the older goes
KEEP_ONE = {"BACKUP_KEEP_DAILY": "1", "BACKUP_KEEP_WEEKLY": "0", "BACKUP_KEEP_MONTHLY": "0"}


def backups(project: Path) -> dict[str, dict]:
    listing = json.loads(run_cli("backup", "list", "--json", project_dir=project).stdout)
    return {b["id"]: b for b in listing["backups"]}


def test_restore_before_the_oldest_kept_backup_is_refused_after_prune(project: Path) -> None:
    up = run_cli("up", "--runtime", "local", project_dir=project)
    assert up.returncode == 0, up.stdout + up.stderr
    env = read_env_file(project / ".env")
    taken = []
    for prefix in (51, 52):
        export_spans(env, prefix, 5)
        backup = run_cli("backup", project_dir=project)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        taken.append(backup.stdout.strip())
    first, second = (backups(project)[i] for i in taken)
    # a time between the two backups: restorable from the first one, not from the second
    between = (
        datetime.fromisoformat(first["finished_at"])
        + (datetime.fromisoformat(second["finished_at"]) - datetime.fromisoformat(first["finished_at"])) / 2
    )

    prune = run_cli("backup", "prune", project_dir=project, env=KEEP_ONE)
    assert prune.returncode == 0, prune.stdout + prune.stderr
    assert f"deleted {first['id']} (local)" in prune.stdout, prune.stdout
    assert list(backups(project)) == [second["id"]]

    for json_flag in ([], ["--json"]):
        refused = run_cli("restore", "--to", between.isoformat(), "--yes", *json_flag, project_dir=project)
        assert refused.returncode == EXIT_USAGE == 2, refused.stdout + refused.stderr
        if json_flag:  # machine output stays machine output: JSON events on stdout, the error last
            error = [json.loads(line) for line in refused.stdout.splitlines()][-1]["error"]
            message, hint = error["message"], error["hint"]
            assert error["exit_code"] == EXIT_USAGE
        else:
            message = hint = " ".join((refused.stdout + refused.stderr).split())
        assert "before the earliest restorable point" in message, message
        assert f"the oldest physical backup kept, {second['id']}, ended at {second['finished_at']}" in message
        assert "pruned" in hint, hint

    # nothing was touched: the stack serves, no data was put aside, every span is there once
    code, status = status_json(project)
    assert code == 0, [(s["name"], s["state"], s["health"], s["detail"]) for s in status["services"]]
    assert not [p for p in (project / "data").iterdir() if "before-restore" in p.name]
    export_spans(env, 53, 5)
    assert stored_spans(env) == (15, 15)
