"""PII and secrets redaction: what is stored in PostgreSQL for each rule."""

from __future__ import annotations

import json

from helpers.pipeline import make_pipeline, span, store, stored

ALL = "email,phone,credit_card,us_ssn,ipv4,ipv6,bearer_token,api_key,aws_access_key"


def test_secrets_are_masked_by_default_everywhere_but_pii_is_kept(settings, admin_conn):
    pipeline = make_pipeline(settings, admin_conn)
    messages = json.dumps([{"role": "user", "content": "use my key sk-proj-Abcdefghijklmnopqrstuvwx12 please"}])
    s = span(
        {
            "gen_ai.input.messages": messages,
            "http.request.header.authorization": ["Bearer abc.def-ghi_jkl"],
            "note": "mail me at jane.doe@example.com",
        },
        events=[{"name": "log", "time": 0, "attributes": {"aws": "key AKIAIOSFODNN7EXAMPLE in config"}}],
        status_code="error",
        status_message="auth failed for Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
    )
    store(settings, pipeline, [s])
    row = stored(admin_conn, s.span_id)
    attrs = row["attributes"]
    # the content is stored once, as messages, and redacted there
    assert "gen_ai.input.messages" not in attrs
    assert row["input_messages"] == [
        {
            "role": "user",
            "parts": [{"type": "text", "content": "use my key [REDACTED:api_key] please"}],
            "finish_reason": None,
        }
    ]
    assert attrs["http.request.header.authorization"] == ["[REDACTED:bearer_token]"]
    assert attrs["note"] == "mail me at jane.doe@example.com"
    assert row["events"][0]["attributes"]["aws"] == "key [REDACTED:aws_access_key] in config"
    assert row["status_message"] == "auth failed for [REDACTED:bearer_token]"


def test_each_pii_detector_masks_what_it_should_and_only_that(settings, admin_conn):
    pipeline = make_pipeline(settings, admin_conn, PII_DETECTORS=ALL)
    cases = {
        "email": ("write to jane.doe+x@mail.example.co.uk today", "write to [REDACTED:email] today"),
        "phone_us": ("call (415) 555-0132 now", "call [REDACTED:phone] now"),
        "phone_intl": ("call +44 20 7946 0958 now", "call [REDACTED:phone] now"),
        "card": ("card 4111 1111 1111 1111 ok", "card [REDACTED:credit_card] ok"),
        "not_a_card": ("order 1234 5678 9012 3456 ok", "order 1234 5678 9012 3456 ok"),  # fails Luhn
        "ssn": ("ssn 123-45-6789.", "ssn [REDACTED:us_ssn]."),
        "not_ssn": ("ref 000-12-3456", "ref 000-12-3456"),
        "ipv4": ("from 192.168.10.20 via", "from [REDACTED:ipv4] via"),
        "version": ("version 1.2.3 released", "version 1.2.3 released"),
        "ipv6": ("peer 2001:db8::8a2e:370:7334 up", "peer [REDACTED:ipv6] up"),
        "clock": ("at 12:30:45 sharp", "at 12:30:45 sharp"),
        "github": ("token ghp_" + "a" * 36, "token [REDACTED:api_key]"),
    }
    s = span({k: v[0] for k, v in cases.items()})
    store(settings, pipeline, [s])
    attrs = stored(admin_conn, s.span_id)["attributes"]
    assert {k: attrs[k] for k in cases} == {k: v[1] for k, v in cases.items()}


def test_hash_strategy_keeps_equal_values_equal_without_storing_them(settings, admin_conn):
    pipeline = make_pipeline(
        settings, admin_conn, PII_DETECTORS="email", PII_STRATEGY="hash", PII_HASH_SALT="s3cret-salt"
    )
    a = span({"msg": "from alice@example.com"})
    b = span({"msg": "cc alice@example.com", "other": "bob@example.com"})
    store(settings, pipeline, [a, b])
    first = stored(admin_conn, a.span_id)["attributes"]["msg"]
    second = stored(admin_conn, b.span_id)["attributes"]
    assert "alice" not in first and first.startswith("from [email:")
    assert first.removeprefix("from ") == second["msg"].removeprefix("cc ")
    assert second["other"] != first.removeprefix("from ")


def test_remove_strategy_deletes_the_match(settings, admin_conn):
    pipeline = make_pipeline(settings, admin_conn, PII_DETECTORS="email,us_ssn", PII_STRATEGY="remove")
    s = span({"msg": "jane@example.com wrote 123-45-6789 here"})
    store(settings, pipeline, [s])
    assert stored(admin_conn, s.span_id)["attributes"]["msg"] == " wrote  here"


def test_key_rules_drop_and_hash_attributes_events_and_columns(settings, admin_conn):
    pipeline = make_pipeline(
        settings,
        admin_conn,
        PII_DROP_KEYS="gen_ai.prompt.*,secret.thing",
        PII_HASH_KEYS="user.id",
        PII_HASH_SALT="salt",
    )
    s = span(
        {
            "gen_ai.prompt.0.content": "private",
            "gen_ai.prompt.0.role": "user",
            "secret.thing": 1,
            "gen_ai.completion.0.content": "kept",
            "user.id": "alice@example.com",
        },
        events=[{"name": "e", "time": 0, "attributes": {"gen_ai.prompt.1.content": "private too", "ok": 1}}],
    )
    other = span({"user.id": "alice@example.com"})
    store(settings, pipeline, [s, other])
    row = stored(admin_conn, s.span_id)
    assert set(row["attributes"]) == {"user.id"}  # the completion is stored as a message
    assert row["input_messages"] is None
    assert row["output_messages"][0]["parts"] == [{"type": "text", "content": "kept"}]
    assert row["events"][0]["attributes"] == {"ok": 1}
    assert row["user_id"].startswith("[HASH:") and "alice" not in row["user_id"]
    assert row["attributes"]["user.id"] == row["user_id"] == stored(admin_conn, other.span_id)["user_id"]


def test_detectors_reach_normalized_columns_resources_and_nested_values(settings, admin_conn):
    pipeline = make_pipeline(settings, admin_conn, PII_DETECTORS="email")
    s = span(
        {
            "user.id": "carol@example.com",
            "session.id": "s-1",
            "tool.args": {"to": ["dave@example.com", 3], "cc": {"addr": "erin@example.com"}},
        },
        resource={"service.name": "svc", "owner": "ops@example.com"},
    )
    store(settings, pipeline, [s])
    row = stored(admin_conn, s.span_id)
    assert row["user_id"] == "[REDACTED:email]" and row["session_id"] == "s-1"
    assert row["attributes"]["tool.args"] == {"to": ["[REDACTED:email]", 3], "cc": {"addr": "[REDACTED:email]"}}
    assert row["resource"]["owner"] == "[REDACTED:email]"


def test_redaction_can_be_turned_off(settings, admin_conn):
    pipeline = make_pipeline(settings, admin_conn, PII_DETECTORS="none")
    s = span({"k": "sk-proj-Abcdefghijklmnopqrstuvwx12"})
    store(settings, pipeline, [s])
    assert stored(admin_conn, s.span_id)["attributes"]["k"] == "sk-proj-Abcdefghijklmnopqrstuvwx12"
