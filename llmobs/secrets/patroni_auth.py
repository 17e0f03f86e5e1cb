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

No password crosses a command line: the REST password travels on the stdin of ``docker compose
exec``, the others through the secret files.
"""

from __future__ import annotations

import time
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


def _running_nodes(stack: Stack) -> list[str]:
    states = stack.states()
    return [n for n in ha.NODES if n in states and states[n].state in ("running", "starting")]


def _reload(ctx: RotationContext) -> None:
    stack = ctx.stack()
    new_rest = ctx.settings().secret(REST)
    for node in _running_nodes(stack):
        # The compose command writes the secret files first, so the node reads the new values.
        proc = stack.exec(node, ["python3", _CREDENTIALS_SCRIPT, "reload"], check=False)
        if proc.returncode != 0:
            raise LlmobsError(
                f"{node} could not reload Patroni's credentials: {proc.stderr.decode(errors='replace').strip()[-300:]}",
                hint=_HINT,
            )
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while (status := _rest_status(stack, node, new_rest)) != 202:
            if time.monotonic() > deadline:
                raise LlmobsError(f"{node}'s Patroni does not take the new REST password (HTTP {status})", hint=_HINT)
            time.sleep(0.5)
        ctx.progress.done(f"{node}: Patroni reloaded its credentials")


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
    nodes = _running_nodes(stack)
    for node in nodes:
        if _rest_status(stack, node, settings.secret(REST)) != 202:
            raise LlmobsError(f"{node}'s Patroni refuses the new {REST}", hint=_HINT)
        if old_rest and (status := _rest_status(stack, node, old_rest)) != 401:
            raise LlmobsError(f"{node}'s Patroni does not refuse the old {REST} (HTTP {status})", hint=_HINT)
    ctx.check(
        f"Patroni REST API on {', '.join(nodes)}: the new {REST} works"
        + ("; the old one is refused" if old_rest else "")
    )
