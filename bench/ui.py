"""Benchmark of the web UI in headless Chromium on a realistic volume of spans.

Loads the data set of ``bench/api.py`` (1,000,000 spans by default, ``--spans`` to scale down)
plus one 1,000-span and one 10,000-span trace, starts ``llmobs serve api``, signs a Chromium
(Debian's ``/usr/bin/chromium`` driven by Playwright) in, and times, from navigation until the
page says it is drawn (``body[data-ready]``):

* the trace list (``/ui/``, last 24 hours, 50 traces);
* the 1,000-span and the 10,000-span trace (``/ui/traces/{id}``: tree, waterfall, detail).

Targets on 2 cores: list < 500 ms, 1,000-span trace < 1 s, 10,000-span trace < 3 s. Baselines
measured in the same run: the sign-in page (a page without data: the browser's floor) and the
JSON the pages fetch, timed with a plain HTTP client (the API's share). Each figure is the median
of ``--runs`` loads (the first load, which warms caches, is not counted).

``python bench/ui.py [--spans N] [--runs N] [--keep | --reuse DIR]``
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from benchlib import free_port, start_server, stop_server

CHROMIUM = "/usr/bin/chromium"


def big_trace(project_id: int, n_spans: int, seed: int) -> list:
    """A trace of ``n_spans``: a root, steps of 20 spans each under it, LLM calls under each step."""
    from api import generate

    rng = random.Random(seed)
    template = next(generate([project_id], 1))
    trace_id = f"{rng.getrandbits(128):032x}"
    start = datetime.now(UTC) - timedelta(minutes=30)
    total_ms = 60_000.0

    def span(parent: str | None, name: str, offset_ms: float, duration_ms: float):
        begin = start + timedelta(milliseconds=offset_ms)
        return template._replace(
            trace_id=trace_id,
            span_id=f"{rng.getrandbits(64):016x}",
            parent_span_id=parent,
            name=name,
            start_time=begin,
            end_time=begin + timedelta(milliseconds=duration_ms),
            duration_ms=duration_ms,
        )

    root = span(None, "POST /agent", 0, total_ms)
    rows = [root]
    steps = max(1, (n_spans - 1) // 20)
    step_ms = total_ms / steps
    for i in range(steps):
        step = span(root.span_id, f"step {i}", i * step_ms, step_ms)
        rows.append(step)
        calls = min(19, n_spans - len(rows))
        for j in range(calls):
            rows.append(span(step.span_id, f"chat call {j}", i * step_ms + j * step_ms / 20, step_ms / 25))
    while len(rows) < n_spans:
        rows.append(span(root.span_id, "tail", total_ms - 1, 1))
    return rows


def store_big_traces(settings, project_id: int) -> dict[int, str]:
    from llmobs.store.db import connect
    from llmobs.store.spans import copy_spans

    ids = {}
    with connect(settings, "admin", autocommit=True) as conn:
        for n in (1000, 10_000):
            rows = big_trace(project_id, n, seed=n)
            with conn.transaction():
                copy_spans(conn, rows)
            ids[n] = rows[0].trace_id
    return ids


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def time_page(page, url: str, runs: int) -> tuple[float, float, float]:
    """Median and max ms from navigation to ``body[data-ready]`` as the test sees it, and the
    median the page measured itself (navigation start to drawn), not counting a warm-up load."""
    samples, own = [], []
    for i in range(runs + 1):
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("body[data-ready]", timeout=60_000)
        if i:
            samples.append(time.perf_counter() - started)
            own.append(float(page.get_attribute("body", "data-draw-ms") or "nan") / 1000)
    return median_ms(samples), max(samples) * 1000, median_ms(own)


def time_json(client: httpx.Client, url: str, runs: int, params: dict[str, str] | None = None) -> float:
    samples = []
    for i in range(runs + 1):
        started = time.perf_counter()
        client.get(url, params=params).raise_for_status()
        if i:
            samples.append(time.perf_counter() - started)
    return median_ms(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reuse", type=Path, help="directory of a previous --keep run")
    parser.add_argument("--keep", action="store_true", help="keep PostgreSQL/Redis data for --reuse")
    args = parser.parse_args()
    if shutil.which(CHROMIUM) is None:
        raise SystemExit("bench/ui.py drives Debian's chromium: apt-get install chromium")
    from api import load, start_read_infra
    from playwright.sync_api import sync_playwright

    from llmobs.config import Settings
    from llmobs.store import apikeys
    from llmobs.store.db import connect

    infra = start_read_infra(args.reuse, "llmobs-bench-ui-")
    root = infra.root
    api = None
    try:
        settings = Settings(infra.env, None)
        projects = load(settings, args.spans)
        big = store_big_traces(settings, projects["default"])
        with connect(settings, "admin", autocommit=True) as conn:
            key = apikeys.create_key(conn, project="default", role="reader", name="bench-ui", actor="bench").token
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        api = start_server(
            ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            infra.env,
            root / "api.log",
            f"{base}/health/ready",
        )
        since = (datetime.now(UTC) - timedelta(hours=24)).isoformat()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            json_list = time_json(client, "/api/v1/traces", args.runs, {"from": since, "limit": "50"})
            json_1k = time_json(client, f"/api/v1/traces/{big[1000]}", args.runs)
            json_10k = time_json(client, f"/api/v1/traces/{big[10_000]}", args.runs)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"] if os.geteuid() == 0 else []
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/ui/login")
            page.fill("#api_key", key)
            page.click("button[type=submit]")
            page.wait_for_selector("body[data-ready=list]")
            floor_samples = []
            for _ in range(args.runs):
                started = time.perf_counter()
                page.goto(f"{base}/ui/login")
                page.wait_for_load_state("load")
                floor_samples.append(time.perf_counter() - started)
            floor = median_ms(floor_samples)
            results = [
                ("trace list (50 of the last 24 h)", *time_page(page, f"{base}/ui/", args.runs), json_list, 500),
                ("1,000-span trace", *time_page(page, f"{base}/ui/traces/{big[1000]}", args.runs), json_1k, 1000),
                (
                    "10,000-span trace",
                    *time_page(page, f"{base}/ui/traces/{big[10_000]}", args.runs),
                    json_10k,
                    3000,
                ),
            ]
            rows_in_dom = page.locator("#tree [role=treeitem]").count()
            browser.close()
        print(
            f"\nweb UI in headless Chromium, {args.spans:,} spans stored, {os.cpu_count()} CPUs, median of {args.runs}:"
        )
        print(f"  baseline: sign-in page (no data) {floor:.0f} ms")
        for name, med, worst, own, json_ms, target in results:
            verdict = "met" if med < target else "MISSED"
            print(
                f"  {name}: {med:.0f} ms (max {worst:.0f}; the page's own clock {own:.0f}); "
                f"its JSON alone {json_ms:.0f} ms; target < {target} ms -> {verdict}"
            )
        print(f"  rows in the page for the 10,000-span trace (virtualized): {rows_in_dom}")
    finally:
        if api is not None:
            stop_server(api)
        if args.keep:
            print(f"kept: {root} (--reuse {root})")
        else:
            infra.stop()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
