"""Redaction: each detector masks what it names and leaves look-alikes alone; its RE2 trigger
flags every text the exact pattern matches; key rules drop or hash whole values."""

from __future__ import annotations

import pytest

from llmobs.collector.redact import DETECTORS, RedactionRules, Redactor

ALL = tuple(DETECTORS)


def redactor(strategy: str = "mask", **rules: object) -> Redactor:
    return Redactor(RedactionRules(detectors=ALL, strategy=strategy, salt=b"salt", **rules))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe@example.co.uk now", "mail [REDACTED:email] now"),
        ("a@b.io", "[REDACTED:email]"),  # the shortest text any detector finds
        ("card 4111 1111 1111 1111 ok", "card [REDACTED:credit_card] ok"),
        ("card 4111-1111-1111-1111", "card [REDACTED:credit_card]"),
        ("ssn 123-45-6789.", "ssn [REDACTED:us_ssn]."),
        ("call (555) 123-4567 today", "call [REDACTED:phone] today"),
        ("call +44 20 7946 0958", "call [REDACTED:phone]"),
        ("from 192.168.10.1 via", "from [REDACTED:ipv4] via"),
        ("from 2001:db8::8a2e:370:7334 via", "from [REDACTED:ipv6] via"),
        ("Authorization: Bearer abcdefgh12345678", "Authorization: [REDACTED:bearer_token]"),
        ("key sk-proj-abcdefghijklmnopqrstuvwx", "key [REDACTED:api_key]"),
        ("id AKIAIOSFODNN7EXAMPLE", "id [REDACTED:aws_access_key]"),
        ('["{\\"content\\": \\"write to bob@example.com\\"}"]', '["{\\"content\\": \\"write to [REDACTED:email]\\"}"]'),
    ],
)
def test_each_detector_masks_its_kind(text: str, expected: str) -> None:
    r = redactor()
    assert r.scrub(text) == expected
    assert r.triggered(["nothing here", text]) == [1], "the trigger must flag what the pattern matches"


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112",  # fails the Luhn check: not a card
        "ssn-like 000-12-3456",  # area 000 is never issued
        "version 1.2.3.4.5",  # part of a longer dotted run
        "ratio 12:30:45",  # a time, not an IPv6 address
        "sk-short",  # too short for an API key
        "user@localhost",  # no top-level domain
        "plain words only",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert redactor().scrub(text) == text


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("mask", "to [REDACTED:email]."),
        ("remove", "to ."),
    ],
)
def test_strategy_decides_the_replacement(strategy: str, expected: str) -> None:
    assert redactor(strategy).scrub("to a@b.io.") == expected


def test_hashing_is_stable_per_value_and_keyed_by_the_salt() -> None:
    one, again = redactor("hash").scrub("a@b.io"), redactor("hash").scrub("a@b.io")
    other_salt = Redactor(RedactionRules(detectors=ALL, strategy="hash", salt=b"pepper")).scrub("a@b.io")
    assert one == again and one.startswith("[email:") and one != other_salt


@pytest.mark.parametrize(
    ("rules", "attrs", "expected_keys", "hashed"),
    [
        (
            {"drop_keys": ("gen_ai.prompt.*",)},
            {"gen_ai.prompt.0.content": "x", "gen_ai.system": "openai"},
            {"gen_ai.system"},
            set(),
        ),
        ({"drop_keys": ("user.id",)}, {"user.id": "u", "user.idx": "kept"}, {"user.idx"}, set()),
        ({"hash_keys": ("user.*",)}, {"user.id": "u-1", "other": "o"}, {"user.id", "other"}, {"user.id"}),
    ],
)
def test_key_rules_drop_or_hash_whole_values(
    rules: dict[str, tuple[str, ...]], attrs: dict[str, str], expected_keys: set[str], hashed: set[str]
) -> None:
    r = Redactor(RedactionRules(detectors=(), salt=b"s", **rules))  # type: ignore[arg-type]
    out = r.attributes(dict(attrs))
    assert set(out) == expected_keys
    assert {k for k, v in out.items() if v.startswith("[HASH:")} == hashed


def test_an_unknown_detector_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown detector"):
        Redactor(RedactionRules(detectors=("email", "horoscope")))
