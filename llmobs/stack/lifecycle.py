"""Up, down and status: written once, above the runtimes.

`up` starts the data services, waits for their probes, bootstraps the database (migrations,
roles, default keys) over the published port, then starts the rest and waits for every probe.
`status` merges what the runtime knows (processes, containers) with probes and operator facts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmobs.errors import LlmobsError
from llmobs.stack import facts as facts_mod
from llmobs.stack import ha
from llmobs.stack.health import ProbeResult, probe, ui_url
from llmobs.stack.ports import check_distinct_ports
from llmobs.stack.services import DATA_SERVICES, SERVICES, SERVICES_BY_NAME
from llmobs.store.bootstrap import bootstrap

if TYPE_CHECKING:
    from llmobs.config import Settings
    from llmobs.progress import Progress
    from llmobs.stack.base import RuntimeState, Stack
    from llmobs.stack.facts import FactSource

Overall = Literal["healthy", "degraded", "down"]
EXIT_CODES: dict[str, int] = {"healthy": 0, "degraded": 1, "down": 2}


@dataclass
class ServiceStatus:
    name: str
    description: str
    state: str
    health: str  # healthy | unhealthy | starting | - (not probed)
    latency_ms: float | None
    version: str | None
    replicas: int
    desired: int
    pids: list[int]
    containers: list[str]
    ports: dict[str, int]
    detail: str = ""
    #: profile `ha`, PostgreSQL nodes only: "leader" or "replica" (Patroni's view)
    role: str | None = None

    @property
    def counts(self) -> bool:
        """Whether this service takes part in the overall verdict."""
        return self.state != "not available"


@dataclass
class StackStatus:
    runtime: str
    project_dir: str | None
    services: list[ServiceStatus]
    facts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def overall(self) -> Overall:
        counted = [s for s in self.services if s.counts]
        if not any(s.state == "running" for s in counted):
            return "down"
        if all(s.state == "running" and s.health == "healthy" for s in counted) and not self.warnings:
            return "healthy"
        return "degraded"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.overall]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "runtime": self.runtime,
            "project_dir": self.project_dir,
            "overall": self.overall,
            "services": [asdict(s) for s in self.services],
            "facts": self.facts,
            "warnings": self.warnings,
        }


def _service_status(name: str, state: RuntimeState, result: ProbeResult | None, settings: Settings) -> ServiceStatus:
    svc = SERVICES_BY_NAME[name]
    if result is None:
        health = "-"
    elif result.healthy:
        health = "healthy"
    else:
        health = "starting" if state.state == "starting" else "unhealthy"
    detail = state.detail or (result.detail if result else "")
    return ServiceStatus(
        name=name,
        description=svc.description,
        state=state.state,
        health=health,
        latency_ms=result.latency_ms if result else None,
        version=(result.version if result else None) or state.image,
        replicas=state.replicas,
        desired=state.desired,
        pids=state.pids,
        containers=state.containers,
        ports={k: settings.get_int(k) for k in svc.port_keys},
        detail=detail,
    )


def stack_status(
    stack: Stack, settings: Settings, *, with_facts: bool = True, fact_sources: dict[str, FactSource] | None = None
) -> StackStatus:
    """Each service's state and probe result; with ``with_facts``, the operator facts too (the
    database's, and those of ``fact_sources`` such as the backups', which higher layers own)."""
    states = stack.states()
    to_probe = [s for s in SERVICES if states.get(s.name) and states[s.name].state in ("running", "starting")]
    with ThreadPoolExecutor(max_workers=max(1, len(to_probe))) as pool:
        results = dict(zip([s.name for s in to_probe], pool.map(lambda s: probe(s, settings), to_probe), strict=True))
    services = [
        _service_status(s.name, states[s.name], results.get(s.name), settings) for s in SERVICES if s.name in states
    ]
    status = StackStatus(stack.runtime, str(settings.project_dir) if settings.project_dir else None, services)
    if with_facts:
        db = results.get("timescaledb") or results.get("db-proxy")  # profile `ha`: through db-proxy
        db_up = bool(db and db.healthy)
        am_up = bool(results.get("alertmanager") and results["alertmanager"].healthy)
        found = facts_mod.collect(settings, database_up=db_up, sources=fact_sources, alertmanager_up=am_up)
        status.facts, status.warnings = found.values, found.warnings
    if with_facts and any(states.get(n) and states[n].state in ("running", "starting") for n in ha.NODES):
        _ha_facts(stack, status)
    if "api" in states:
        status.facts["ui_url"] = ui_url(settings)
    return status


def _ha_facts(stack: Stack, status: StackStatus) -> None:
    """Profile `ha`: each node's role, timeline and lag and etcd's health (``facts["ha"]``), and
    the role on the nodes' own rows."""
    found = ha.facts(stack)
    status.warnings.extend(found.pop("warnings"))
    status.facts["ha"] = found
    roles = {m["name"]: m for m in found["members"]}
    for svc in status.services:
        member = roles.get(svc.name)
        if member is not None:
            svc.role = member["role"]
            svc.detail = svc.detail or ha.member_detail(member)


def wait_healthy(
    stack: Stack, settings: Settings, services: Sequence[str], progress: Progress, *, timeout: float = 120
) -> None:
    """Wait until every service in ``services`` runs with all its replicas ready and passes its
    probe; a clear error naming
    the ones that did not, with their last probe result, when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    pending = list(services)
    last: dict[str, str] = {}
    while pending:
        states = stack.states()
        for name in list(pending):
            state = states.get(name)
            if state is None or state.state in ("stopped", "exited"):
                last[name] = state.detail if state and state.detail else (state.state if state else "missing")
                continue
            result = probe(SERVICES_BY_NAME[name], settings)
            if result.healthy and state.replicas < state.desired:
                # healthy through one replica, but `status` right after must agree: all of them
                last[name] = f"{state.replicas}/{state.desired} replicas ready"
            elif result.healthy:
                pending.remove(name)
                how = result.detail if result.latency_ms is None else f"{result.latency_ms:.0f} ms"
                version = f", {result.version}" if result.version else ""
                progress.done(f"{name} healthy ({how}{version})")
            else:
                last[name] = result.detail
        if not pending:
            return
        if time.monotonic() > deadline:
            detail = "; ".join(f"{n}: {last.get(n, 'no answer')}" for n in pending)
            raise LlmobsError(
                f"not healthy after {timeout:.0f} s: {detail}", hint="see `llmobs logs SERVICE` and `llmobs status`"
            )
        time.sleep(0.25)


def up(
    stack: Stack, settings: Settings, progress: Progress, *, services: Sequence[str] | None = None, timeout: float = 120
) -> None:
    """Start the stack (or the named services and what they need): idempotent."""

    check_distinct_ports(settings)
    available = stack.available_services()
    wanted = list(services) if services else list(available)
    for name in wanted:
        if name not in available:
            raise LlmobsError(f"{name} is not available in the {stack.runtime} runtime")
    # Everything we run needs the database and Redis.
    data = [s for s in DATA_SERVICES if s in available]
    stack.start(data, progress)
    progress.step("Waiting for PostgreSQL and Redis")
    wait_healthy(stack, settings, data, progress, timeout=timeout)
    progress.step("Applying migrations")
    result = bootstrap(settings, on_migration=lambda m: progress.step(f"Applying migration {m.version:04d}_{m.name}"))
    progress.done(
        f"schema version {result.schema_version}"
        + (f" ({len(result.applied)} migration(s) applied)" if result.applied else " (up to date)")
    )
    rest = [s for s in wanted if s not in data]
    if rest:
        stack.start(rest, progress)
        progress.step(f"Waiting for {', '.join(rest)}")
        wait_healthy(stack, settings, rest, progress, timeout=timeout)


def down(stack: Stack, progress: Progress, *, volumes: bool = False) -> list[str]:
    """Stop everything; with ``volumes`` also delete the data. Returns what was deleted."""
    stack.stop(None, progress)
    return stack.remove_data() if volumes else []
