"""Rotating the `ha` profile's credentials (target ``ha``): PostgreSQL's replication user and the
password of Patroni's REST API, without stopping a node.

Each node's Patroni reads its passwords from a file of its configuration directory, rendered from
the node's Docker secrets (``compose/ha/patroni-credentials.py``). The steps:

1. ``ALTER ROLE replicator`` on the leader (through the write port) with the staged password, as a
   SCRAM verifier computed here: the replicas keep streaming (a password is checked only when a
   connection starts);
2. ``.env`` switched to both new values (the old ones kept as retired until the final check);
3. on every node: the credentials file rendered again from the secrets (which every compose
   command rewrites in place) and Patroni told to reload it (SIGHUP); done when the node's REST
   API takes the new password;
4. every replica reconnected once (its walsender on the leader ended): it logs in with the new
   password, and the rotation waits until it streams again and a synchronous standby is back.
   Writes go on meanwhile (Patroni drops a standby that is gone from the synchronous set);
5. verify: the new replication password logs in and the old one is refused; the REST API refuses
   the old password on every node.

Under the profile the ``db`` target's superuser password (``DB_PASSWORD``, user postgres) is also
Patroni's superuser and rewind password: right after ``.env`` has the new one, the same node
reload (``reload_nodes``) runs, and a node is done once its Patroni has logged in to its
PostgreSQL again with it (``superuser_steps``; checked again by ``verify_superuser``).

No password crosses a command line: the REST password travels on the stdin of ``docker compose
exec``, the others through the secret files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from llmobs.errors import LlmobsError
from llmobs.secrets.context import RotationContext, Step
from llmobs.secrets.postgres_roles import admin_connection, login
from llmobs.stack import ha
from llmobs.store.bootstrap import set_role_password

if TYPE_CHECKING:
    from llmobs.stack.base import Stack

REPLICATION = "DB_REPLICATION_PASSWORD"
REST = "PATRONI_REST_PASSWORD"
REPLICATION_ROLE = "replicator"
_CREDENTIALS_SCRIPT = "/etc/llmobs/ha/patroni-credentials.py"
#: seconds a node gets to reload its configuration, and a replica to stream again
RELOAD_TIMEOUT_S = 60.0
_HINT = "run the rotation again; it resumes where it stopped (`llmobs status` shows the cluster)"


def steps() -> list[Step]:
    return [
        Step("ha-replication-role", "Setting the new replication password on the leader", _alter_replication_role),
        Step("ha-commit", "Switching .env to the new replication and REST passwords", _commit),
        Step("ha-reload", "Reloading Patroni's credentials on every node", _reload),
        Step("ha-reconnect", "Reconnecting the replicas with the new password", _reconnect),
    ]


def _alter_replication_role(ctx: RotationContext) -> None:
    new = ctx.store.staged(REPLICATION)
    if new is None:  # already in use (an earlier run switched .env)
        return
    with admin_connection(ctx) as conn:
        set_role_password(conn, REPLICATION_ROLE, new)
    ctx.progress.done(f"new password set on role {REPLICATION_ROLE} (the replicas keep streaming)")


def _commit(ctx: RotationContext) -> None:
    for name in (REPLICATION, REST):
        if ctx.swap(name):
            ctx.progress.done(f"{name} updated in .env")


def _reload(ctx: RotationContext) -> None:
    new_rest = ctx.settings().secret(REST)
    reload_nodes(ctx, lambda stack, node: _rest_status(stack, node, new_rest) == 202, f"the new {REST}")


def reload_nodes(ctx: RotationContext, taken: Callable[[Stack, str], bool], what: str) -> None:
    """On every running node, Patroni's credentials file rendered again from the node's secrets
    (every compose command first rewrites the secret files from ``.env``) and Patroni told to
    reload it (SIGHUP); a node is done once ``taken(stack, node)`` holds (polled for
    RELOAD_TIMEOUT_S). LlmobsError when a node cannot reload or does not take ``what`` in time;
    running it again is harmless."""
    stack = ctx.stack()
    for node in ha.running_nodes(stack):
        proc = stack.exec(node, ["python3", _CREDENTIALS_SCRIPT, "reload"], check=False)
        if proc.returncode != 0:
            raise LlmobsError(
                f"{node} could not reload Patroni's credentials: {proc.stderr.decode(errors='replace').strip()[-300:]}",
                hint=_HINT,
            )
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while not taken(stack, node):
            if time.monotonic() > deadline:
                raise LlmobsError(
                    f"{node}'s Patroni does not take {what} within {RELOAD_TIMEOUT_S:.0f} s",
                    hint=f"`llmobs logs {node}`; " + _HINT,
                )
            time.sleep(0.5)
        ctx.progress.done(f"{node}: Patroni reloaded its credentials")


# -- the superuser (target ``db`` under the profile) -----------------------------------------------

#: the application_name of Patroni's own connection to its PostgreSQL (its fallback_application_name)
_PATRONI_SESSION = "Patroni"


def superuser_steps() -> list[Step]:
    """Run right after ``DB_PASSWORD`` is switched in ``.env`` (postgres_roles): Patroni's
    superuser and rewind credentials (user postgres) follow it on every node."""
    return [Step("db.superuser.patroni", "Reloading Patroni's superuser password on every node", _reload_superuser)]


def _node_sql(stack: Stack, node: str, statement: str) -> str:
    """``statement``'s output on ``node``'s own PostgreSQL, as postgres over the local socket
    (trusted: no password involved)."""
    proc = stack.exec(
        node, ["psql", "-U", "postgres", "-h", "/var/run/postgresql", "-d", "postgres", "-XAtc", statement], check=False
    )
    if proc.returncode != 0:
        raise LlmobsError(
            f"cannot query PostgreSQL on {node}: {proc.stderr.decode(errors='replace').strip()[-300:]}", hint=_HINT
        )
    return proc.stdout.decode().strip()


def _patroni_logged_in_since(stack: Stack, node: str, since: str) -> bool:
    """Whether ``node``'s Patroni has a connection to its PostgreSQL that started after ``since``
    (a server timestamp taken after ``ALTER ROLE postgres``: it logged in with the new password).
    Once Patroni has reloaded its configuration since then (PostgreSQL's ``pg_conf_load_time``:
    Patroni reloads PostgreSQL when it takes a SIGHUP), its older connections are ended so it
    logs in again."""
    answer = _node_sql(
        stack,
        node,
        f"SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = '{_PATRONI_SESSION}' "
        f"AND backend_start > '{since}') THEN 'new' "
        f"WHEN pg_conf_load_time() > '{since}' THEN 'ended ' || (SELECT count(pg_terminate_backend(pid)) "
        f"FROM pg_stat_activity WHERE application_name = '{_PATRONI_SESSION}') ELSE 'waiting' END",
    )
    return answer == "new"


def _reload_superuser(ctx: RotationContext) -> None:
    with admin_connection(ctx) as conn:  # the leader, with the new password already
        row = conn.execute("SELECT now()::text").fetchone()
    assert row is not None
    since = str(row[0])
    reload_nodes(
        ctx, lambda stack, node: _patroni_logged_in_since(stack, node, since), "the new DB_PASSWORD (user postgres)"
    )


def verify_superuser(ctx: RotationContext, swapped_at: str) -> None:
    """Every running node's Patroni is connected to its PostgreSQL with a session that began
    after ``DB_PASSWORD`` was switched (``swapped_at``, ISO): it logs in with the new password."""
    stack = ctx.stack()
    nodes = ha.running_nodes(stack)
    for node in nodes:
        found = _node_sql(
            stack,
            node,
            f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{_PATRONI_SESSION}' "
            f"AND backend_start > '{datetime.fromisoformat(swapped_at).isoformat()}'",
        )
        if found in ("", "0"):
            raise LlmobsError(f"{node}'s Patroni has not logged in with the new DB_PASSWORD", hint=_HINT)
    ctx.check(f"Patroni on {', '.join(nodes)}: connected with the new DB_PASSWORD (superuser and rewind user)")


def _rest_status(stack: Stack, node: str, password: str) -> int:
    """HTTP status of ``POST /reload`` (harmless: Patroni reads its configuration again) with
    ``password``: 202 accepted, 401 refused; 0 when the node does not answer."""
    try:
        status, _text = ha.rest(stack, node, "POST", "/reload", password=password)
    except LlmobsError:
        return 0
    return status


def _reconnect(ctx: RotationContext) -> None:
    stack = ctx.stack()
    replicas = [m.name for m in ha.members(stack) if m.role == "replica" and m.state in ("running", "streaming")]
    with admin_connection(ctx) as conn:
        for node in replicas:
            started = conn.execute("SELECT now()").fetchone()
            assert started is not None
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = %s", (node,)
            )
            deadline = time.monotonic() + RELOAD_TIMEOUT_S
            while not conn.execute(
                "SELECT 1 FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming' "
                "AND backend_start > %s",
                (node, started[0]),
            ).fetchone():
                if time.monotonic() > deadline:
                    raise LlmobsError(
                        f"{node} does not stream again with the new replication password "
                        f"within {RELOAD_TIMEOUT_S:.0f} s",
                        hint=f"`llmobs logs {node}`; " + _HINT,
                    )
                time.sleep(0.5)
            ctx.progress.done(f"{node} streams again, logged in with the new replication password")
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while replicas and not any(m.synchronous for m in ha.members(stack)):
        if time.monotonic() > deadline:
            raise LlmobsError("no synchronous standby after the replicas reconnected", hint=_HINT)
        time.sleep(0.5)


def verify(ctx: RotationContext) -> None:
    settings = ctx.settings()
    stack = ctx.stack()
    conn = login(settings, REPLICATION_ROLE, settings.secret(REPLICATION), dbname="postgres")
    if conn is None:
        raise LlmobsError(f"PostgreSQL refuses the new {REPLICATION} for {REPLICATION_ROLE}", hint=_HINT)
    conn.close()
    old = ctx.store.retired(REPLICATION)
    if old:
        conn = login(settings, REPLICATION_ROLE, old, dbname="postgres")
        if conn is not None:
            conn.close()
            raise LlmobsError(f"PostgreSQL still accepts the old {REPLICATION}", hint=_HINT)
    ctx.check(
        f"PostgreSQL: {REPLICATION_ROLE} logs in with the new {REPLICATION}"
        + ("; the old one is refused" if old else "")
    )
    old_rest = ctx.store.retired(REST)
    nodes = ha.running_nodes(stack)
    for node in nodes:
        if _rest_status(stack, node, settings.secret(REST)) != 202:
            raise LlmobsError(f"{node}'s Patroni refuses the new {REST}", hint=_HINT)
        if old_rest and (status := _rest_status(stack, node, old_rest)) != 401:
            raise LlmobsError(f"{node}'s Patroni does not refuse the old {REST} (HTTP {status})", hint=_HINT)
    ctx.check(
        f"Patroni REST API on {', '.join(nodes)}: the new {REST} works"
        + ("; the old one is refused" if old_rest else "")
    )
