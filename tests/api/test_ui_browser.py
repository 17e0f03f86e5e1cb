"""The web UI in a real browser (Debian's chromium driven by Playwright) against `llmobs serve
api` in a subprocess with PostgreSQL and Redis: sign in, filter, open a trace, walk its tree by
keyboard, read a conversation, score it, see a new trace arrive live, sign out; a session of
project A never sees project B, not even by typing B's URLs; no serious accessibility violation
and no Content-Security-Policy violation. Screenshots go to the test's temporary directory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmobs.config import Settings
from llmobs.store import apikeys, ui_logins
from llmobs.store.db import connect
from llmobs.store.maintain import maintain_once

from helpers.api import RunningApi, seed, span_id, start_api, stop_api, trace_id
from helpers.common import require, settings_env

CHROMIUM = "/usr/bin/chromium"


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture
def ui_api(pg_server, redis_server, db_name) -> Iterator[RunningApi]:
    api = start_api(settings_env(pg_server, redis_server, db_name, LLMOBS_LOG_LEVEL="warning"), workers=1)
    try:
        yield api
    finally:
        stop_api(api.proc)


@pytest.fixture
def browser() -> Iterator[Any]:
    require(shutil.which(CHROMIUM) is not None, "Debian's chromium is not installed (scripts/install-deps --test)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


def conversation_trace(start: datetime, service: str = "support-bot") -> tuple[str, list[dict[str, Any]]]:
    """A root span and an LLM call carrying its conversation as GenAI events, with a tool call."""
    tid, root, call = trace_id(), span_id(), span_id()
    at = iso(start + timedelta(milliseconds=20))
    events = [
        {"name": "gen_ai.system.message", "time": at, "attributes": {"content": "You are a weather assistant."}},
        {"name": "gen_ai.user.message", "time": at, "attributes": {"content": "Is it raining in Lisbon?"}},
        {
            "name": "gen_ai.choice",
            "time": at,
            "attributes": {"content": "No rain in Lisbon today, 21 degrees.", "finish_reason": "stop"},
        },
    ]
    spans = [
        {
            "trace_id": tid,
            "span_id": root,
            "name": "POST /ask",
            "kind": "server",
            "start_time": iso(start),
            "end_time": iso(start + timedelta(seconds=2)),
            "service_name": service,
            "attributes": {"session.id": "conv-1", "user.id": "ana"},
        },
        {
            "trace_id": tid,
            "span_id": call,
            "parent_span_id": root,
            "name": "chat gpt-4o",
            "kind": "client",
            "start_time": iso(start + timedelta(milliseconds=10)),
            "end_time": iso(start + timedelta(milliseconds=1500)),
            "service_name": service,
            "attributes": {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 30,
                "session.id": "conv-1",
                "user.id": "ana",
            },
            "events": events,
        },
    ]
    return tid, spans


def wide_trace(start: datetime, n: int) -> tuple[str, list[dict[str, Any]]]:
    """A root with steps of ten calls each under it: ``n`` spans in all."""
    tid, root = trace_id(), span_id()
    spans = [
        {
            "trace_id": tid,
            "span_id": root,
            "name": "POST /agent",
            "start_time": iso(start),
            "end_time": iso(start + timedelta(seconds=60)),
            "service_name": "agent",
        }
    ]
    parent = root
    for i in range(n - 1):
        sid = span_id()
        at = start + timedelta(milliseconds=50 * i)
        spans.append(
            {
                "trace_id": tid,
                "span_id": sid,
                "parent_span_id": root if i % 10 == 0 else parent,
                "name": f"step {i}" if i % 10 == 0 else f"call {i}",
                "start_time": iso(at),
                "end_time": iso(at + timedelta(milliseconds=40)),
                "service_name": "agent",
            }
        )
        if i % 10 == 0:
            parent = sid
    return tid, spans


def test_trace_explorer_in_a_real_browser(ui_api: RunningApi, browser, tmp_path: Path):
    settings: Settings = ui_api.settings
    seeded = seed(settings)
    a, b = seeded.a, seeded.b
    base = ui_api.base
    conv_id, conv_spans = conversation_trace(seeded.now - timedelta(minutes=1))
    r = httpx.post(f"{base}/api/v1/spans", json=conv_spans, headers=a.auth("writer"))
    assert r.status_code == 201, r.text

    shots: list[Path] = []
    csp_errors: list[str] = []
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.on("console", lambda m: "Content Security Policy" in m.text and csp_errors.append(m.text))

    def shot(name: str) -> None:
        path = tmp_path / f"{len(shots):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=False)
        shots.append(path)
        print(f"screenshot: {path}")

    def no_serious_violations() -> None:
        from axe_playwright_python.sync_playwright import Axe

        found = Axe().run(page).response["violations"]
        serious = [(v["id"], v["impact"], v["help"]) for v in found if v["impact"] in ("serious", "critical")]
        assert not serious, serious

    try:
        # Sign in: the page asked for first is where the browser lands afterwards.
        page.goto(f"{base}/ui/traces/{conv_id}")
        assert "/ui/login" in page.url
        no_serious_violations()
        page.fill("#api_key", "llmobs_notakey_x")
        page.click("button[type=submit]")
        assert "invalid" in page.inner_text(".error")
        page.fill("#api_key", a.keys["writer"])
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-ready=trace]")
        assert f"/ui/traces/{conv_id}" in page.url
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["llmobs_session"]["httpOnly"] and cookies["llmobs_session"]["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""  # nothing of the session is readable by scripts

        # The tree, by keyboard: the root is selected; Left collapses it, Right expands it, Down
        # moves to the LLM call, Enter opens its detail with the conversation.
        rows = page.locator("#tree [role=treeitem]")
        assert rows.count() == 2
        page.focus("#tree")
        page.keyboard.press("ArrowLeft")
        assert rows.count() == 1 and rows.first.get_attribute("aria-expanded") == "false"
        page.keyboard.press("ArrowRight")
        assert rows.count() == 2
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        detail = page.locator("#detail")
        assert detail.locator("h2").inner_text() == "chat gpt-4o"
        messages = detail.locator(".conversation .msg")
        assert messages.count() == 3
        assert "Is it raining in Lisbon?" in messages.nth(1).inner_text()
        assert "No rain in Lisbon" in messages.nth(2).inner_text()
        assert "gpt-4o" in detail.inner_text() and "120" in detail.inner_text()
        no_serious_violations()
        shot("trace-conversation")

        # Feedback: thumbs up with a note, listed on the trace and stored.
        page.fill("#score-form input[name=comment]", "answered well")
        page.click("button[data-thumb='1']")
        page.wait_for_selector("#score-list li:has-text('answered well')")
        scores = httpx.get(f"{base}/api/v1/traces/{conv_id}/scores", headers=a.auth()).json()["scores"]
        assert [(s["name"], s["value"], s["source"]) for s in scores] == [("thumbs", 1.0, "ui")]

        # The list, filtered; B's traces never appear.
        page.click("nav a:has-text('Traces')")
        page.wait_for_selector("body[data-ready=list]")
        listed = page.locator("#traces tbody tr")
        assert listed.count() == 13  # 12 seeded in the last 8 hours, and the conversation
        assert "secret-svc" not in page.inner_text("#traces")
        no_serious_violations()
        shot("trace-list")
        page.fill("#filters input[name=service]", "rag")
        page.select_option("#filters select[name=status]", "error")
        page.evaluate("document.body.dataset.ready = ''")
        page.click("#filters button[type=submit]")
        page.wait_for_selector("body[data-ready=list]")
        assert listed.count() == 1 and "service=rag" in page.url
        page.fill("#filters input[name=service]", "")
        page.select_option("#filters select[name=status]", "")
        # Full-text search over the messages, once maintenance has indexed them.
        maintain_once(settings)
        page.fill("#filters input[name=q]", "Lisbon raining")
        page.evaluate("document.body.dataset.ready = ''")
        page.click("#filters button[type=submit]")
        page.wait_for_selector("body[data-ready=list]")
        assert listed.count() == 1 and listed.first.get_attribute("data-trace-id") == conv_id
        page.fill("#filters input[name=q]", "")
        page.evaluate("document.body.dataset.ready = ''")
        page.click("#filters button[type=submit]")
        page.wait_for_selector("body[data-ready=list]")
        page.wait_for_selector("body[data-stream=connected]")

        # Live: a trace sent now appears without a reload.
        new_id, new_spans = conversation_trace(datetime.now(UTC), service="live-svc")
        assert httpx.post(f"{base}/api/v1/spans", json=new_spans, headers=a.auth("writer")).status_code == 201
        page.wait_for_selector(f"#traces tr[data-trace-id='{new_id}']", timeout=15_000)
        assert listed.first.get_attribute("data-trace-id") == new_id
        shot("trace-list-live")

        # A large trace: only the rows in view exist; End walks to its last span.
        big_id, big_spans = wide_trace(datetime.now(UTC) - timedelta(minutes=3), 1000)
        assert httpx.post(f"{base}/api/v1/spans", json=big_spans, headers=a.auth("writer")).status_code == 201
        page.goto(f"{base}/ui/traces/{big_id}")
        page.wait_for_selector("body[data-ready=trace]")
        assert 10 < page.locator("#tree [role=treeitem]").count() < 100
        page.focus("#tree")
        page.keyboard.press("End")
        page.keyboard.press("Enter")
        assert big_spans[-1]["name"] in page.locator("#tree [aria-selected=true]").inner_text()
        assert page.locator("#detail h2").inner_text() == big_spans[-1]["name"]
        shot("large-trace")

        # Typing B's URLs shows nothing of B.
        page.goto(f"{base}/ui/traces/{b.traces[0]}")
        page.wait_for_selector("body[data-ready=missing]")
        assert "not found" in page.inner_text("#trace-summary")
        assert "secret-svc" not in page.content()
        page.goto(f"{base}/ui/users")
        page.wait_for_selector("body[data-ready=groups]")
        assert "b-user" not in page.inner_text("#users") and "ana" in page.inner_text("#users")
        no_serious_violations()
        page.goto(f"{base}/ui/sessions/conv-1")
        page.wait_for_selector("body[data-ready=session]")
        assert page.locator("#traces tbody tr").count() == 2
        page.goto(f"{base}/ui/overview")
        page.wait_for_selector("body[data-ready=overview]")
        assert page.locator(".chart canvas").count() == 6
        no_serious_violations()
        shot("overview")

        # Sign out: the session is gone, pages send the browser back to sign in.
        page.click("text=Sign out")
        page.wait_for_url("**/ui/login")
        page.goto(f"{base}/ui/")
        assert "/ui/login" in page.url

        # A one-time link of a reader key (what `llmobs ui --key` prints): browse, not score.
        with connect(settings, "admin", autocommit=True) as conn:
            reader_id = apikeys.key_id_of(a.keys["reader"])
            assert reader_id is not None
            token = ui_logins.create_login(conn, reader_id)
        page.goto(f"{base}/ui/login/link#token={token}")
        assert "token" not in page.url  # dropped from the address bar and history
        page.click("#use-link")
        page.wait_for_selector("body[data-ready=list]")
        page.goto(f"{base}/ui/traces/{conv_id}")
        page.wait_for_selector("body[data-ready=trace]")
        assert page.locator("button[data-thumb='1']").is_disabled()
        assert "writer key" in page.inner_text("#score-state")
        assert not csp_errors, csp_errors
    finally:
        context.close()
