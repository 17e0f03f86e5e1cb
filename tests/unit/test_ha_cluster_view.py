"""Patroni's `GET /cluster` as `llmobs status` shows it: leader or replica per node (Patroni's
own role kept beside), timeline and lag; one line per node for the text output."""

from __future__ import annotations

import pytest

from llmobs.stack.ha import _parse_cluster, member_lines

# What Patroni 3.0 answered in tests/test_compose_ha.py after a failover.
AFTER_FAILOVER = {
    "members": [
        {
            "name": "db-2",
            "role": "sync_standby",
            "state": "running",
            "host": "db-2",
            "port": 5432,
            "timeline": 2,
            "lag": 0,
        },
        {"name": "db-1", "role": "leader", "state": "running", "host": "db-1", "port": 5432, "timeline": 2},
    ]
}


def test_roles_timelines_and_lag_by_node() -> None:
    leader, standby = _parse_cluster(AFTER_FAILOVER)
    assert (leader.name, leader.role, leader.patroni_role, leader.timeline, leader.lag_bytes) == (
        "db-1",
        "leader",
        "leader",
        2,
        None,
    )
    assert (standby.name, standby.role, standby.synchronous, standby.lag_bytes) == ("db-2", "replica", True, 0)
    assert member_lines([m.to_dict() for m in (leader, standby)]) == [
        "db-1: leader, running, timeline 2",
        "db-2: replica (synchronous), running, timeline 2, lag 0 B",
    ]


@pytest.mark.parametrize(
    ("member", "role", "lag"),
    [
        ({"name": "db-1", "role": "master", "state": "running", "timeline": 1}, "leader", None),  # Patroni < 3
        ({"name": "db-1", "role": "replica", "state": "stopped", "lag": "unknown"}, "replica", None),
        ({"name": "db-1", "role": "replica", "state": "streaming", "timeline": 3, "lag": 1048576}, "replica", 1048576),
    ],
)
def test_odd_answers_still_give_a_role(member: dict, role: str, lag: int | None) -> None:
    (found,) = _parse_cluster({"members": [member]})
    assert found.role == role and found.lag_bytes == lag and not found.synchronous
    assert member_lines([found.to_dict()])[0].startswith(f"db-1: {role}, {member['state']}")


def test_no_members_is_an_empty_cluster() -> None:
    assert _parse_cluster({}) == []
