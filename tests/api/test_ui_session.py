"""The web UI's sign-in, session cookie, CSRF protection and scores, through HTTP (in-process):
who may do what, and that a session never reaches another project."""

from __future__ import annotations

from datetime import timedelta

import pytest

from llmobs.api.session import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from llmobs.config import Settings
from llmobs.store import apikeys, ui_logins
from llmobs.store.db import connect

from helpers.api import api_client
from helpers.common import settings_env

ORIGIN = {"Origin": "http://testserver"}


def sign_in(client, key: str):
    return client.post("/ui/login", data={"api_key": key, "next": "/ui/"}, headers=ORIGIN, follow_redirects=False)


def test_sign_in_session_csrf_scores_and_isolation(settings: Settings, seeded):
    a, b = seeded.a, seeded.b
    since = (seeded.now - timedelta(days=7)).isoformat()
    with api_client(settings) as c:
        r = c.get(f"/ui/traces/{a.traces[0]}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=%2Fui%2Ftraces%2F")
        page = c.get("/ui/login")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["referrer-policy"] == "same-origin"

        assert sign_in(c, "llmobs_aaaaaaaaaaaa_" + "b" * 32).status_code == 401
        cross = c.post("/ui/login", data={"api_key": a.keys["reader"]}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403
        r = sign_in(c, a.keys["reader"])
        assert r.status_code == 303 and r.headers["location"] == "/ui/"
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert a.keys["reader"] not in cookie  # a JWT, not the key

        home = c.get("/ui/")
        assert home.status_code == 200 and "alpha" in home.text and "reader" in home.text
        # The cookie alone authenticates API reads, scoped to the key's project.
        listed = c.get("/api/v1/traces", params={"from": since, "limit": 100}).json()["traces"]
        assert {t["trace_id"] for t in listed} == set(a.traces)
        assert c.get(f"/api/v1/traces/{b.traces[0]}").status_code == 404
        assert c.get(f"/ui/traces/{b.traces[0]}").status_code == 200  # the shell; its data is a 404
        # A reader session may not score; any cookie write needs the CSRF token.
        score = {"name": "thumbs", "value": 1, "comment": "good", "source": "ui"}
        assert c.post(f"/api/v1/traces/{a.traces[0]}/scores", json=score).json()["error"]["code"] == "csrf_failed"
        csrf = {CSRF_HEADER: c.cookies[CSRF_COOKIE]}
        assert c.post(f"/api/v1/traces/{a.traces[0]}/scores", json=score, headers=csrf).status_code == 403

        # Sign-out needs the token too, then the session is gone.
        assert c.post("/ui/logout", data={"csrf": "wrong"}, headers=ORIGIN).status_code == 403
        r = c.post("/ui/logout", data={"csrf": c.cookies[CSRF_COOKIE]}, headers=ORIGIN, follow_redirects=False)
        assert r.status_code == 303
        assert SESSION_COOKIE not in c.cookies
        assert c.get("/api/v1/traces").status_code == 401

        # A one-time link of A's writer key: works once.
        with connect(settings, "admin", autocommit=True) as conn:
            writer_id = apikeys.key_id_of(a.keys["writer"])
            assert writer_id is not None
            token = ui_logins.create_login(conn, writer_id)
        assert c.get("/ui/login/link").status_code == 200  # a preview uses nothing up
        r = c.post("/ui/login/link", data={"token": token}, headers=ORIGIN, follow_redirects=False)
        assert r.status_code == 303
        csrf = {CSRF_HEADER: c.cookies[CSRF_COOKIE]}
        r = c.post(f"/api/v1/traces/{a.traces[0]}/scores", json=score, headers=csrf)
        assert r.status_code == 201, r.text
        assert r.json()["source"] == "ui" and r.json()["value"] == 1
        assert c.post(f"/api/v1/traces/{b.traces[0]}/scores", json=score, headers=csrf).status_code == 404
        scores = c.get(f"/api/v1/traces/{a.traces[0]}/scores").json()["scores"]
        assert [(s["name"], s["comment"]) for s in scores] == [("thumbs", "good")]
        c.cookies.clear()
        again = c.post("/ui/login/link", data={"token": token}, headers=ORIGIN, follow_redirects=False)
        assert again.status_code == 401

        # API keys score too (writer), and B never sees A's scores.
        r = c.post(
            f"/api/v1/traces/{a.traces[1]}/scores",
            json={"name": "correctness", "label": "wrong", "source": "eval"},
            headers=a.auth("writer"),
        )
        assert r.status_code == 201, r.text
        no_value = c.post(f"/api/v1/traces/{a.traces[1]}/scores", json={"name": "x"}, headers=a.auth("writer"))
        assert no_value.status_code == 422
        assert c.get(f"/api/v1/traces/{a.traces[0]}/scores", headers=b.auth()).json()["scores"] == []

        # Scores filter the trace list, make series in /api/v1/metrics, and show in GraphQL.
        def listed(**params: object) -> list[str]:
            r = c.get("/api/v1/traces", params={"from": since, **params}, headers=a.auth())
            assert r.status_code == 200, r.text
            return [t["trace_id"] for t in r.json()["traces"]]

        assert listed(score_name="thumbs") == [a.traces[0]]
        assert listed(score_name="thumbs", min_score=1) == [a.traces[0]]
        assert listed(score_name="thumbs", max_score=0) == []
        assert listed(score_name="correctness", score_label="wrong") == [a.traces[1]]
        assert listed(score_name="thumbs", sort="cost_usd") == [a.traces[0]]  # the aggregate strategy too
        bad = c.get("/api/v1/traces", params={"min_score": 1}, headers=a.auth())
        assert bad.status_code == 422 and "score_name" in bad.text
        metrics = c.get("/api/v1/metrics", params={"from": since, "scores": "true"}, headers=a.auth()).json()
        by_name = {s["name"]: s["points"] for s in metrics["score_series"]}
        assert sum(p["count"] for p in by_name["thumbs"]) == 1 and by_name["thumbs"][0]["avg"] == 1
        assert by_name["correctness"][0]["avg"] is None
        assert (
            c.get("/api/v1/metrics", params={"from": since, "scores": "true"}, headers=b.auth()).json()["score_series"]
            == []
        )
        query = """query($id: String!, $from: DateTime!) {
            trace(traceId: $id) { scores { name value comment source } }
            traces(filter: {scoreName: "thumbs", from: $from}) { traces { traceId } } }"""
        variables = {"id": a.traces[0], "from": since}
        gql = c.post("/graphql", json={"query": query, "variables": variables}, headers=a.auth()).json()
        assert gql["data"]["trace"]["scores"] == [{"name": "thumbs", "value": 1.0, "comment": "good", "source": "ui"}]
        assert [t["traceId"] for t in gql["data"]["traces"]["traces"]] == [a.traces[0]]


def test_a_session_survives_secret_rotation_for_the_grace_period_only(pg_server, redis_server, db_name, seeded):
    from datetime import UTC, datetime

    from llmobs.config import generate_password

    env = settings_env(pg_server, redis_server, db_name)
    with api_client(Settings(env, None)) as c:
        assert sign_in(c, seeded.a.keys["reader"]).status_code == 303
        cookie = c.cookies[SESSION_COOKIE]

    def rotated(until: datetime) -> Settings:
        new = {"SECRET_KEY": generate_password(48), "SECRET_KEY_PREVIOUS": env["SECRET_KEY"]}
        return Settings({**env, **new, "SECRET_KEY_PREVIOUS_UNTIL": until.isoformat()}, None)

    with api_client(rotated(datetime.now(UTC) + timedelta(hours=1))) as c:
        c.cookies.set(SESSION_COOKIE, cookie)
        assert c.get("/ui/", follow_redirects=False).status_code == 200
        assert c.get("/api/v1/traces").status_code == 200
    with api_client(rotated(datetime.now(UTC) - timedelta(seconds=1))) as c:
        c.cookies.set(SESSION_COOKIE, cookie)
        assert c.get("/ui/", follow_redirects=False).status_code == 303  # back to sign-in
        assert "retired key" in c.get("/api/v1/traces").json()["error"]["message"]


def test_scores_through_graphql_need_a_writer(settings: Settings, seeded):
    a, b = seeded.a, seeded.b
    mutation = """mutation($id: String!) { addScore(traceId: $id, name: "quality", value: 0.8, source: "eval") {
        name value source keyId } }"""
    with api_client(settings) as c:
        r = c.post("/graphql", json={"query": mutation, "variables": {"id": a.traces[2]}}, headers=a.auth("writer"))
        assert r.json()["data"]["addScore"] == {
            "name": "quality",
            "value": 0.8,
            "source": "eval",
            "keyId": apikeys.key_id_of(a.keys["writer"]),
        }
        reader = c.post("/graphql", json={"query": mutation, "variables": {"id": a.traces[2]}}, headers=a.auth())
        assert reader.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        other = c.post("/graphql", json={"query": mutation, "variables": {"id": b.traces[0]}}, headers=a.auth("writer"))
        assert other.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        bad = mutation.replace('source: "eval"', 'source: "nope"')
        r = c.post("/graphql", json={"query": bad, "variables": {"id": a.traces[2]}}, headers=a.auth("writer"))
        assert r.status_code == 400 and "source" in r.text
        listed = c.get(f"/api/v1/traces/{a.traces[2]}/scores", headers=a.auth()).json()["scores"]
        assert [s["name"] for s in listed] == ["quality"]


@pytest.mark.parametrize(
    ("host", "origin", "same"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080", True),
        ("127.0.0.1:8080", "https://127.0.0.1:8080", True),
        ("127.0.0.1:8080", "http://127.0.0.1:9999", False),
        ("obs.example.com", "https://obs.example.com:8443", True),  # behind the proxy: Host without port
        ("obs.example.com", "https://evil.example.com", False),
        ("obs.example.com", "null", False),
        ("[::1]:8080", "http://[::1]:8080", True),
    ],
)
def test_origin_check(host: str, origin: str, same: bool):
    from starlette.requests import Request

    from llmobs.api.session import same_origin

    scope = {"type": "http", "headers": [(b"host", host.encode()), (b"origin", origin.encode())]}
    assert same_origin(Request(scope)) is same


def test_secure_cookie_behind_tls(settings: Settings, seeded):
    with api_client(settings) as c:
        r = c.post(
            "/ui/login",
            data={"api_key": seeded.a.keys["reader"]},
            headers={**ORIGIN, "X-Forwarded-Proto": "https"},
            follow_redirects=False,
        )
        assert all("Secure" in h for h in r.headers.get_list("set-cookie"))
        assert not any("Secure" in h for h in sign_in(c, seeded.a.keys["reader"]).headers.get_list("set-cookie"))
