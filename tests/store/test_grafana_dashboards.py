"""The provisioned Grafana datasource and dashboards, without Grafana: each panel's SQL is expanded
the way Grafana's PostgreSQL datasource expands it (macros, $__interval, template variables) and
run as the read-only role against a populated database. Every panel must return rows with the
columns it displays, for a short range (minute rollup) and a long one (hour rollup)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmobs.config import Settings
from llmobs.resources import resource_dir
from llmobs.store import ingest_stats
from llmobs.store.db import READONLY_ROLE, connect

from helpers.api import api_client, seed, store_genai_metrics

PROVISIONING = resource_dir("grafana-provisioning")
DASHBOARDS = sorted((PROVISIONING / "dashboards" / "llmobs").glob("*.json"))

#: Columns a table or bar panel shows, by title (time series and stats are checked generically).
TABLE_COLUMNS = {
    "Top costly traces": ["time", "trace_id", "root span", "service", "cost", "spans", "duration"],
    "Slowest traces": ["time", "trace_id", "root span", "service", "duration", "status"],
    "Cost by model": ["model", "cost", "requests"],
    "Cost by provider": ["provider", "cost", "requests"],
    "Cost by service": ["service", "cost", "requests"],
    "Storage by table": ["table", "size"],
    "WAL archiving": ["archived", "failed", "last archived", "last failure", "failed segment"],
    "Connections by role": ["role", "state", "connections"],
}


# ---------------------------------------------------------------------------------------------
# Grafana's expansion of SQL panels (grafana-postgresql-datasource, timescaledb off)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(interval: str) -> int:
    match = re.fullmatch(r"'?(\d+)([smhd])'?", interval.strip())
    assert match, interval
    return int(match.group(1)) * _UNITS[match.group(2)]


def _interval_for(start: datetime, end: datetime, max_points: int = 1000) -> str:
    """What Grafana computes for $__interval: the range over the panel's points, rounded."""
    raw = (end - start).total_seconds() / max_points
    for step in (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 10800, 21600, 43200, 86400):
        if raw <= step:
            return (
                f"{step // 60}m"
                if step % 60 == 0 and step < 3600
                else (f"{step // 3600}h" if step % 3600 == 0 and step < 86400 else (f"{step}s" if step < 60 else "1d"))
            )
    return "1d"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Variable:
    name: str
    multi: bool
    include_all: bool
    all_value: str | None
    values: list[str]
    selected: list[str] | None = None  # None: "All" (or the first value when All is not offered)

    def render(self) -> str:
        if self.selected is None and self.include_all:
            if self.all_value is not None:
                return self.all_value  # a custom all value goes in as written
            return ",".join(_quote(v) for v in self.values)
        chosen = self.selected if self.selected is not None else self.values[:1]
        if self.multi or self.include_all:
            return ",".join(_quote(v) for v in chosen)
        return chosen[0]


def expand(sql: str, start: datetime, end: datetime, interval: str, variables: list[Variable]) -> str:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    t_from, t_to = f"'{start.astimezone(UTC).strftime(fmt)}'", f"'{end.astimezone(UTC).strftime(fmt)}'"
    sql = sql.replace("$__interval_ms", str(_seconds(interval) * 1000)).replace("$__interval", interval)
    for var in sorted(variables, key=lambda v: -len(v.name)):
        sql = re.sub(r"\$\{" + var.name + r"(:[a-z]+)?\}|\$" + var.name + r"\b", lambda _m, v=var: v.render(), sql)

    def group(match: re.Match[str], alias: bool) -> str:
        column, step = [a.strip() for a in match.group(1).split(",")[:2]]
        secs = _seconds(step)
        return f"floor(extract(epoch from {column})/{secs})*{secs}" + (' AS "time"' if alias else "")

    sql = re.sub(r"\$__timeGroupAlias\(([^)]*)\)", lambda m: group(m, True), sql)
    sql = re.sub(r"\$__timeGroup\(([^)]*)\)", lambda m: group(m, False), sql)
    sql = re.sub(r"\$__timeFilter\(([^)]*)\)", lambda m: f"{m.group(1).strip()} BETWEEN {t_from} AND {t_to}", sql)
    sql = sql.replace("$__timeFrom()", t_from).replace("$__timeTo()", t_to)
    assert "$" not in sql.replace("$$", ""), f"unexpanded macro or variable in:\n{sql}"
    return sql


# ---------------------------------------------------------------------------------------------


def _dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in DASHBOARDS]


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found += panel.get("panels", []) if panel["type"] == "row" else [panel]
    return found


def test_provisioning_files_name_the_readonly_role_and_each_other():
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "llmobs.yaml").read_text())["datasources"][0]
    assert datasource["type"] == "postgres" and datasource["uid"] == "llmobs-postgres"
    assert datasource["user"] == "$LLMOBS_DB_READONLY_USER"
    assert "db_readonly_password" in datasource["secureJsonData"]["password"]
    compose = Path(resource_dir("compose")) / "docker-compose.yml"
    if compose.exists():  # the compose file passes what the datasource reads
        grafana = yaml.safe_load(compose.read_text())["services"]["grafana"]
        assert grafana["environment"]["LLMOBS_DB_READONLY_USER"] == READONLY_ROLE
        read = set(re.findall(r"\$(LLMOBS_\w+)", (PROVISIONING / "datasources" / "llmobs.yaml").read_text()))
        assert read and read <= set(grafana["environment"])
        assert "db_readonly_password" in grafana["secrets"]
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "llmobs.yaml").read_text())["providers"][0]
    assert provider["options"]["path"].endswith("/dashboards/llmobs")
    titles = {d["title"] for d in _dashboards()}
    assert titles == {"LLM Overview", "Operations"}
    for dashboard in _dashboards():
        for panel in _panels(dashboard):
            assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
            assert all(t["datasource"]["uid"] == datasource["uid"] for t in panel["targets"])
        assert len({p["id"] for p in _panels(dashboard)}) == len(_panels(dashboard))


@pytest.fixture
def populated(settings: Settings):
    seeded = seed(settings)
    store_genai_metrics(settings, seeded.a.id, seeded.now, ["chatbot", "rag"], ["gpt-4o", "gpt-4o-mini"])
    with api_client(settings) as c:  # accepted and rejected spans through the API: ingest counters
        span = {
            "trace_id": "ab" * 16,
            "span_id": "cd" * 8,
            "name": "via api",
            "start_time": datetime.now(UTC).isoformat(),
        }
        assert c.post("/api/v1/spans", headers=seeded.a.auth("writer"), json=span).status_code == 201
        bad = {**span, "trace_id": "00" * 16}
        assert c.post("/api/v1/spans", headers=seeded.a.auth("writer"), json=bad).status_code == 422
    with connect(settings, "app", autocommit=True) as conn:
        ingest_stats.count(conn, "collector-grpc", None, refused=7)
        conn.execute("""INSERT INTO llmobs_backups (id, kind, started_at, finished_at, status, size_bytes)
                        VALUES ('b1', 'logical', now() - interval '2 hours', now() - interval '1 hour', 'ok', 1000)""")
    return seeded


def _resolve_variables(conn, dashboard, start, end, interval) -> list[Variable]:
    variables: list[Variable] = []
    for v in dashboard.get("templating", {}).get("list", []):
        if v["type"] == "textbox":  # a setting, not SQL (the trace explorer's URL)
            variables.append(Variable(v["name"], False, False, None, [v["query"]]))
            continue
        assert v["type"] == "query", v["name"]
        rows = conn.execute(expand(v["query"], start, end, interval, variables)).fetchall()
        columns = [d.name for d in conn.execute(expand(v["query"], start, end, interval, variables)).description]
        value_col = columns.index("__value") if "__value" in columns else 0
        values = [str(r[value_col]) for r in rows]
        assert values, f"variable {v['name']} has no values"
        variables.append(
            Variable(v["name"], v.get("multi", False), v.get("includeAll", False), v.get("allValue"), values)
        )
    return variables


def _check_panel(conn, panel: dict[str, Any], sql: str) -> None:
    cur = conn.execute(sql)
    columns = [d.name for d in cur.description]
    rows = cur.fetchall()
    title = panel["title"]
    assert rows, f"panel {title!r} returned no rows:\n{sql}"
    target = panel["targets"][0]
    if panel["type"] == "timeseries":
        assert target["format"] == "time_series"
        assert columns[0] == "time", title
        values = [c for c in columns[1:] if c != "metric"]
        assert values, title
        times = [r[0] for r in rows]
        assert times == sorted(times), f"{title}: time series must be ordered by time"
        assert all(r[0] is not None for r in rows)
    elif panel["type"] == "stat":
        assert len(rows) == 1 and len(columns) == 1, title
        assert rows[0][0] is not None, f"stat {title!r} is empty"
    else:
        assert columns == TABLE_COLUMNS[title], (title, columns)


@pytest.mark.parametrize("hours", [6, 24 * 7])
def test_every_panel_returns_rows_with_its_columns(settings: Settings, populated, hours):
    end = datetime.now(UTC) + timedelta(minutes=1)
    start = end - timedelta(hours=hours)
    interval = _interval_for(start, end)
    checked = 0
    with connect(settings, "readonly", autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == READONLY_ROLE
        for dashboard in _dashboards():
            variables = _resolve_variables(conn, dashboard, start, end, interval)
            selections = [None]
            if any(v.include_all for v in variables):
                # "All", then one concrete choice of each multi-value variable.
                selections.append({v.name: v.values[:1] for v in variables if v.include_all})
            for selection in selections:
                for v in variables:
                    v.selected = (selection or {}).get(v.name)
                for panel in _panels(dashboard):
                    for target in panel["targets"]:
                        _check_panel(conn, panel, expand(target["rawSql"], start, end, interval, variables))
                        checked += 1
    assert checked >= 2 * len(_panels(_dashboards()[0]))


def test_overview_figures_match_the_api(settings: Settings, populated):
    """The dashboard and GET /api/v1/metrics read the same rollups: the same requests and cost."""
    end = datetime.now(UTC) + timedelta(minutes=1)
    start = end - timedelta(hours=6)
    overview = next(d for d in _dashboards() if d["title"] == "LLM Overview")
    panels = {p["title"]: p for p in _panels(overview)}
    with connect(settings, "readonly", autocommit=True) as conn:
        variables = _resolve_variables(conn, overview, start, end, "1m")
        project = next(v for v in variables if v.name == "project")
        project.selected = [str(populated.a.id)]
        requests = conn.execute(
            expand(panels["LLM requests"]["targets"][0]["rawSql"], start, end, "1m", variables)
        ).fetchone()[0]
        cost = conn.execute(expand(panels["Cost"]["targets"][0]["rawSql"], start, end, "1m", variables)).fetchone()[0]
    iso = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    with api_client(settings) as c:
        body = c.get(
            "/api/v1/metrics", headers=populated.a.auth(), params={"from": iso(start), "to": iso(end), "interval": "1m"}
        ).json()
    points = [p for s in body["series"] for p in s["points"]]
    assert requests == sum(p["requests"] for p in points) > 0
    assert float(cost) == pytest.approx(sum(p["cost_usd"] for p in points))


def test_rollup_function_picks_the_rollup_by_range(settings: Settings, populated):
    with connect(settings, "readonly", autocommit=True) as conn:

        def plan(hours: int) -> str:
            rows = conn.execute(
                "EXPLAIN SELECT * FROM llmobs_rollup(now() - make_interval(hours => %s), now()) WHERE project_id = 1",
                (hours,),
            ).fetchall()
            return "\n".join(r[0] for r in rows)

        assert "spans_rollup_1m" in plan(6) and "spans_rollup_1h" in plan(6)  # inlined: both branches, one runs
        short = conn.execute("SELECT count(*) FROM llmobs_rollup(now() - interval '6 hours', now())").fetchone()[0]
        minute = conn.execute(
            "SELECT count(*) FROM spans_rollup_1m WHERE bucket >= date_trunc('minute', now() - interval '6 hours')"
        ).fetchone()[0]
        assert short == minute > 0
        long = conn.execute("SELECT count(*) FROM llmobs_rollup(now() - interval '7 days', now())").fetchone()[0]
        hour = conn.execute(
            "SELECT count(*) FROM spans_rollup_1h WHERE bucket >= date_trunc('hour', now() - interval '7 days')"
        ).fetchone()[0]
        assert long == hour > 0


def test_trace_ids_link_to_the_trace_explorer():
    overview = json.loads(next(p for p in DASHBOARDS if p.name == "llm-overview.json").read_text())
    ui_url = next(v for v in overview["templating"]["list"] if v["name"] == "ui_url")
    assert ui_url["query"].endswith("/ui")
    tables = [p for p in overview["panels"] if p["type"] == "table" and "trace_id" in json.dumps(p["targets"])]
    assert len(tables) >= 2
    for panel in tables:
        links = [
            link
            for o in panel["fieldConfig"]["overrides"]
            if o["matcher"] == {"id": "byName", "options": "trace_id"}
            for prop in o["properties"]
            if prop["id"] == "links"
            for link in prop["value"]
        ]
        assert [link["url"] for link in links] == ["${ui_url}/traces/${__value.raw}"], panel["title"]
