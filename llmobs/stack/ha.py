"""The `ha` profile's operations (docs/ha.md): each PostgreSQL node's role, timeline and lag, etcd's
health, and switchover / failover, all through Patroni's REST API.

Patroni's REST port is not published: every call runs inside a node's container (``Stack.exec``)
with the image's python3, which reads the REST password from the node's Docker secret itself for
the calls that need it (switchover, failover). No password crosses a command line or the
environment of a ``docker compose exec``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from llmobs.errors import LlmobsError, UsageError

if TYPE_CHECKING:
    from llmobs.progress import Progress
    from llmobs.stack.base import Stack

PROFILE = "ha"
#: every Patroni node the compose file defines, in order; HA_NODES of them run (db-3 with 3)
NODES = ("db-1", "db-2", "db-3")
ETCD = "etcd"
_HINT = "see `llmobs status` and `llmobs logs db-1` (or db-2, etcd)"

# Runs in a node's container (``python3 -c``): one request to Patroni's REST API on the node
# itself; prints {"status": code, "body": text}. Unsafe methods authenticate as `patroni` with the
# password given on stdin or, without one, the node's Docker secret.
_REST_CALL = """
import base64, json, sys, urllib.error, urllib.request
method, path, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request("http://127.0.0.1:8008" + path, method=method, data=body.encode() if body else None)
if method != "GET":
    password = sys.stdin.read().strip()
    if not password:
        with open("/run/secrets/patroni_rest_password", encoding="utf-8") as fh:
            password = fh.read().strip()
    token = base64.b64encode(("patroni:" + password).encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    req.add_header("Content-Type", "application/json")
try:
    with urllib.request.urlopen(req, timeout=60) as resp:
        status, text = resp.status, resp.read().decode(errors="replace")
except urllib.error.HTTPError as exc:
    status, text = exc.code, exc.read().decode(errors="replace")
print(json.dumps({"status": status, "body": text}))
"""


@dataclass(frozen=True)
class Member:
    """One node as Patroni's ``GET /cluster`` describes it."""

    name: str
    #: "leader" or "replica" (the shape `status --json` promises)
    role: str
    #: Patroni's own role: leader, sync_standby, replica, standby_leader
    patroni_role: str
    #: running, streaming, stopped, starting, ...
    state: str
    timeline: int | None
    #: bytes of WAL the replica is behind the leader (None on the leader or when unknown)
    lag_bytes: int | None

    @property
    def synchronous(self) -> bool:
        return self.patroni_role == "sync_standby"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "synchronous": self.synchronous}


def enabled(stack: Stack) -> bool:
    """Whether the stack runs the `ha` profile's Patroni nodes."""
    return NODES[0] in stack.available_services()


def nodes(stack: Stack) -> list[str]:
    """The Patroni nodes of this stack's configuration (db-1..db-N, N = HA_NODES)."""
    available = stack.available_services()
    return [n for n in NODES if n in available]


def running_nodes(stack: Stack) -> list[str]:
    """The Patroni nodes whose containers run (or start)."""
    states = stack.states()
    return [n for n in NODES if states.get(n) is not None and states[n].state in ("running", "starting")]


def rest(
    stack: Stack,
    node: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    password: str | None = None,
) -> tuple[int, str]:
    """(HTTP status, body) of one REST call on ``node``; LlmobsError when the node cannot be asked.
    Unsafe methods authenticate with ``password`` (sent on stdin), else the node's secret."""
    proc = stack.exec(
        node,
        ["python3", "-c", _REST_CALL, method, path, json.dumps(body) if body is not None else ""],
        input=(password or "").encode(),
        check=False,
    )
    try:
        answer = json.loads(proc.stdout.decode(errors="replace").strip().splitlines()[-1])
        return int(answer["status"]), str(answer["body"])
    except (IndexError, ValueError, KeyError, TypeError):
        output = (proc.stdout + proc.stderr).decode(errors="replace").strip()[-300:]
        raise LlmobsError(f"Patroni's REST API on {node} did not answer: {output}", hint=_HINT) from None


def members(stack: Stack) -> list[Member]:
    """Every node of the cluster, from the first running node that answers ``GET /cluster``;
    LlmobsError when none does."""
    errors = []
    for node in running_nodes(stack):
        try:
            status, text = rest(stack, node, "GET", "/cluster")
        except LlmobsError as exc:
            errors.append(exc.message)
            continue
        if status == 200:
            return _parse_cluster(json.loads(text))
        errors.append(f"{node}: HTTP {status}")
    raise LlmobsError("no Patroni node answers: " + ("; ".join(errors) or "none is running"), hint=_HINT)


def _parse_cluster(data: dict[str, Any]) -> list[Member]:
    found = []
    for m in data.get("members") or []:
        patroni_role = str(m.get("role", "unknown"))
        lag = m.get("lag")
        found.append(
            Member(
                name=str(m.get("name")),
                role="leader" if patroni_role in ("leader", "master", "primary") else "replica",
                patroni_role=patroni_role,
                state=str(m.get("state", "unknown")),
                timeline=m.get("timeline") if isinstance(m.get("timeline"), int) else None,
                lag_bytes=lag if isinstance(lag, int) else None,
            )
        )
    return sorted(found, key=lambda m: m.name)


def etcd_health(stack: Stack) -> str:
    """ "healthy", or what etcdctl said instead."""
    proc = stack.exec(ETCD, ["etcdctl", "--endpoints=http://127.0.0.1:2379", "endpoint", "health"], check=False)
    output = (proc.stdout + proc.stderr).decode(errors="replace").strip()
    return "healthy" if proc.returncode == 0 and "is healthy" in output else (output[-200:] or "no answer")


def facts(stack: Stack) -> dict[str, Any]:
    """`status` facts of the profile: the members, etcd's health, and warnings for a cluster with
    no leader or no synchronous standby. Never raises: what cannot be asked becomes a warning."""
    found: dict[str, Any] = {"warnings": []}
    try:
        found["members"] = [m.to_dict() for m in members(stack)]
    except LlmobsError as exc:
        found["members"] = []
        found["warnings"].append(exc.message)
    try:
        found["etcd"] = etcd_health(stack)
    except LlmobsError as exc:
        found["etcd"] = exc.message
    if found["etcd"] != "healthy":
        found["warnings"].append(f"etcd is not healthy ({found['etcd']}): Patroni cannot elect a leader")
    roles = [m["patroni_role"] for m in found["members"]]
    if found["members"] and not any(m["role"] == "leader" for m in found["members"]):
        found["warnings"].append("the PostgreSQL cluster has no leader: writes fail until Patroni elects one")
    elif found["members"] and "sync_standby" not in roles:
        found["warnings"].append(
            "no synchronous standby: losing the leader now could lose acknowledged writes (start the stopped node)"
        )
    return found


#: the key prefix of the cluster in etcd: Patroni's namespace, then its scope (patroni.yml)
DCS_PREFIX = "/llmobs/llmobs/"


def forget_cluster(stack: Stack) -> None:
    """Remove the cluster's keys from etcd (as `patronictl remove` does): the next node to
    start bootstraps a new cluster instead of joining the old one. Only with every node
    stopped; LlmobsError when etcd refuses or one still runs."""
    running = running_nodes(stack)
    if running:
        raise LlmobsError(f"the cluster cannot be removed from etcd while {', '.join(running)} run(s)")
    proc = stack.exec(
        ETCD, ["etcdctl", "--endpoints=http://127.0.0.1:2379", "del", "--prefix", DCS_PREFIX], check=False
    )
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).decode(errors="replace").strip()[-300:]
        raise LlmobsError(f"etcd did not remove the cluster's keys: {output}", hint=_HINT)


def _leader(stack: Stack) -> Member | None:
    return next((m for m in members(stack) if m.role == "leader"), None)


def switchover(stack: Stack, progress: Progress, *, to: str | None = None, timeout: float = 60) -> str:
    """Hand the leader role to ``to`` (default: the synchronous standby) through Patroni's
    ``POST /switchover``, and wait until that node leads. Returns the new leader's name."""
    return _change_leader(stack, progress, "switchover", to=to, timeout=timeout)


def failover(stack: Stack, progress: Progress, *, to: str, timeout: float = 60) -> str:
    """Make ``to`` the leader through Patroni's ``POST /failover`` (also when there is no healthy
    leader), and wait until it leads."""
    return _change_leader(stack, progress, "failover", to=to, timeout=timeout)


def _change_leader(stack: Stack, progress: Progress, action: str, *, to: str | None, timeout: float) -> str:
    if not enabled(stack):
        raise UsageError(f"{action} needs the `ha` profile", hint="`llmobs up --profile ha` (docs/ha.md)")
    if to is not None and to not in (known := nodes(stack)):
        raise UsageError(f"unknown node {to!r}; nodes: {', '.join(known)}")
    cluster = members(stack)
    leader = next((m for m in cluster if m.role == "leader"), None)
    if action == "switchover":
        if leader is None:
            raise LlmobsError("there is no leader to switch over from", hint="use `llmobs failover --to NODE`")
        candidates = [m for m in cluster if m.synchronous] or [m for m in cluster if m.role == "replica"]
        target = to or (candidates[0].name if candidates else None)
        if target is None:
            raise LlmobsError("no replica to hand the leader role to", hint=_HINT)
        if target == leader.name:
            raise UsageError(f"{target} is already the leader")
        body: dict[str, Any] = {"leader": leader.name, "candidate": target}
    else:
        assert to is not None
        target = to
        if leader is not None and leader.name == target:
            raise UsageError(f"{target} is already the leader")
        body = {"candidate": target}
    # Ask a node that runs: the leader for a switchover, else the candidate.
    asked = leader.name if leader is not None and action == "switchover" else target
    progress.step(f"{action.capitalize()} to {target}")
    status, text = rest(stack, asked, "POST", f"/{action}", body)
    if status != 200:
        raise LlmobsError(f"Patroni refused the {action} (HTTP {status}): {text.strip()[:300]}", hint=_HINT)
    deadline = time.monotonic() + timeout
    while True:
        try:
            now = _leader(stack)
        except LlmobsError:
            now = None
        if now is not None and now.name == target:
            break
        if time.monotonic() > deadline:
            raise LlmobsError(f"{target} did not become the leader within {timeout:.0f} s", hint=_HINT)
        time.sleep(0.5)
    _wait_writable(stack, deadline)
    timeline = next((m.timeline for m in members(stack) if m.name == target), now.timeline)
    progress.done(f"{target} leads (timeline {timeline}); writes go to it through db-proxy")
    return target


def _wait_writable(stack: Stack, deadline: float) -> None:
    """Until a connection through the write port (DB_PORT, db-proxy) reaches a primary: HAProxy
    sees the new leader at its next check, a second or so after Patroni promoted it."""
    from llmobs.store.db import connect

    last = ""
    while True:
        try:
            with connect(stack.settings, "admin", connect_timeout=2) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and row[0] is False:
                return
            last = "the write port reaches a replica"
        except Exception as exc:  # connection refused or cut while HAProxy switches over
            last = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if time.monotonic() > deadline:
            raise LlmobsError(f"the write port does not reach the new leader: {last}", hint=_HINT)
        time.sleep(0.5)


def set_synchronous_mode(stack: Stack, on: bool, *, timeout: float = 60) -> None:
    """Turn Patroni's ``synchronous_mode`` on or off (``PATCH /config``, cluster-wide) and wait
    until the cluster has (on) or has no (off) synchronous standby. For measuring its cost
    (`bench/ingest.py --ha`); off, a failover can lose acknowledged writes."""
    leader = _leader(stack)
    if leader is None:
        raise LlmobsError("there is no leader to change the configuration through", hint=_HINT)
    status, text = rest(stack, leader.name, "PATCH", "/config", {"synchronous_mode": on})
    if status != 200:
        raise LlmobsError(f"Patroni refused the configuration change (HTTP {status}): {text.strip()[:300]}")
    deadline = time.monotonic() + timeout
    while any(m.synchronous for m in members(stack)) != on:
        if time.monotonic() > deadline:
            raise LlmobsError(f"synchronous_mode {'on' if on else 'off'} did not take effect within {timeout:.0f} s")
        time.sleep(0.5)


def member_detail(m: dict[str, Any]) -> str:
    """A node's role, state, timeline and (replicas) lag, as `status` shows it."""
    role = m["role"] + (" (synchronous)" if m.get("synchronous") else "")
    lag = "" if m["role"] == "leader" or m.get("lag_bytes") is None else f", lag {m['lag_bytes']} B"
    return f"{role}, {m['state']}, timeline {m.get('timeline') or '?'}{lag}"


def member_lines(found: Sequence[dict[str, Any]]) -> list[str]:
    """One line per node for `status`: its name, then :func:`member_detail`."""
    return [f"{m['name']}: {member_detail(m)}" for m in found]
