"""Retention: which backups a policy keeps, and why. The newest backup of each type is always
kept; each rule keeps the newest backup of each of its last N days, ISO weeks or months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llmobs.backup.manifest import FileEntry, Manifest
from llmobs.backup.retention import RetentionPolicy, kept_backups

NOW = datetime(2025, 3, 16, 12, 0, tzinfo=UTC)  # a Sunday


def backup(days_ago: float, kind: str = "physical") -> Manifest:
    finished = NOW - timedelta(days=days_ago)
    return Manifest(
        f"{kind}-{days_ago:g}", kind, finished - timedelta(minutes=5), finished, [FileEntry("f", 1, "0" * 64)]
    )


# one physical backup a day at noon, for 70 days
DAILY = [backup(d) for d in range(70)]


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        (RetentionPolicy(0, 0, 0), {"physical-0": ["newest"]}),
        (
            RetentionPolicy(3, 0, 0),
            {"physical-0": ["newest", "daily"], "physical-1": ["daily"], "physical-2": ["daily"]},
        ),
        # ISO weeks start on Monday: today (Sunday) ends this week; the 9th and 2nd end the others
        (
            RetentionPolicy(0, 3, 0),
            {"physical-0": ["newest", "weekly"], "physical-7": ["weekly"], "physical-14": ["weekly"]},
        ),
        # months: today, the last of February (16 days ago), the last of January (44 days ago)
        (
            RetentionPolicy(0, 0, 3),
            {"physical-0": ["newest", "monthly"], "physical-16": ["monthly"], "physical-44": ["monthly"]},
        ),
        (
            RetentionPolicy(0, 0, 0, retention_days=2),
            {
                "physical-0": ["newest", "younger than 2 d"],
                "physical-1": ["younger than 2 d"],
                "physical-2": ["younger than 2 d"],
            },
        ),
    ],
)
def test_each_rule_keeps_the_newest_of_its_periods(policy: RetentionPolicy, kept: dict[str, list[str]]) -> None:
    assert kept_backups(DAILY, policy, NOW) == kept


@pytest.mark.parametrize(
    ("manifests", "kept_ids"),
    [
        ([backup(400)], {"physical-400"}),  # the only backup is never deleted, however old
        ([backup(400), backup(300, "logical")], {"physical-400", "logical-300"}),  # per type
        ([backup(0.1), backup(0.5), backup(0.9)], {"physical-0.1"}),  # several on one day: the newest
    ],
)
def test_the_newest_of_each_type_is_always_kept(manifests: list[Manifest], kept_ids: set[str]) -> None:
    assert set(kept_backups(manifests, RetentionPolicy(1, 0, 0), NOW)) == kept_ids
