"""The ingest path's own time conversions give what datetime gives: OTLP nanoseconds to a UTC
datetime, and a datetime to the timestamptz text of COPY (byte for byte ``isoformat``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from llmobs.collector.pipeline import ns_to_datetime
from llmobs.collector.redact import RedactionRules, Redactor
from llmobs.store.spans import copy_time

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOW_NS = 1_764_950_400_123_456_789  # 2025-12-05 16:00:00.123456789 UTC


@pytest.mark.parametrize(
    "ns",
    [
        NOW_NS,
        NOW_NS - NOW_NS % 1_000_000_000,  # a whole second
        NOW_NS - NOW_NS % 1_000 + 999,  # sub-microsecond digits are cut, not rounded
        1,
        -1_500,  # before the epoch: floor, like the epoch plus a timedelta
        253_402_300_799_999_999_999,  # the last microsecond of year 9999
    ],
)
def test_nanoseconds_become_the_same_datetime_as_epoch_plus_timedelta(ns: int) -> None:
    got = ns_to_datetime(ns)
    assert got == EPOCH + timedelta(microseconds=ns // 1000)
    assert got.tzinfo is UTC


@pytest.mark.parametrize("ns", [253_402_300_800_000_000_000, 2**64 * 10**9])
def test_nanoseconds_past_year_9999_are_an_overflow(ns: int) -> None:
    with pytest.raises(OverflowError):
        ns_to_datetime(ns)


@pytest.mark.parametrize(
    "value",
    [
        ns_to_datetime(NOW_NS),
        ns_to_datetime(NOW_NS - NOW_NS % 1_000_000_000),  # no fraction: isoformat leaves it out
        ns_to_datetime(NOW_NS - NOW_NS % 1_000_000 + 1_000),  # one microsecond
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2025, 12, 5, 18, 0, 0, 500, tzinfo=timezone(timedelta(hours=5, minutes=30))),  # not UTC
        datetime(2025, 12, 5, 18, 0, 0, 500, tzinfo=timezone(timedelta(0))),  # UTC, another object
    ],
)
def test_copy_time_is_isoformat(value: datetime) -> None:
    assert copy_time(value) == value.isoformat()


def test_copy_time_stays_isoformat_over_many_seconds_and_days() -> None:
    start = ns_to_datetime(NOW_NS)
    values = [start + timedelta(seconds=s * 37, microseconds=s) for s in range(5000)]  # over two days
    assert [copy_time(v) for v in values + values] == [v.isoformat() for v in values + values]


@pytest.mark.parametrize(
    ("parts", "firsts", "texts"),
    [
        (["a", "sk-", "b"], [0, 2], ["a\nsk-", "b"]),
        (["x", "y", "z", "Bearer", "abc"], [0, 1, 3], ["x", "y\nz", "Bearer\nabc"]),
        (["nothing", "here"], [0, 1], ["nothing", "here"]),
        (
            ["AKIA", "ABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"],
            [0, 2],
            ["AKIA\nABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"],
        ),
    ],
)
def test_trigger_over_pieces_flags_what_it_flags_over_joined_texts(
    parts: list[str], firsts: list[int], texts: list[str]
) -> None:
    redactor = Redactor(RedactionRules())
    assert redactor.triggered_parts(parts, firsts) == redactor.triggered(texts)
