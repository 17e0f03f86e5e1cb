"""Price rules: the most specific rule in force wins (project, then provider, then the newest
valid-from, then the longest pattern); costs count cached and reasoning tokens at their prices."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from llmobs.collector.normalize import Normalized
from llmobs.collector.pricing import PriceRule, Pricing
from llmobs.errors import UsageError

DAY = date(2025, 6, 1)
RULES = [
    PriceRule("gpt-4o", 2.5, 10.0, id=1),
    PriceRule("gpt-4o-mini", 0.15, 0.6, id=2),
    PriceRule("gpt-4o", 2.0, 8.0, provider="azure.ai.openai", id=3),
    PriceRule("gpt-4o", 1.0, 4.0, project_id=7, id=4),
    PriceRule("gpt-4o", 3.0, 12.0, valid_from=date(2025, 7, 1), id=5),
    PriceRule("^claude-3-5-sonnet", 3.0, 15.0, id=6),
]


@pytest.mark.parametrize(
    ("project_id", "provider", "model", "day", "rule_id"),
    [
        (1, "openai", "gpt-4o", DAY, 1),
        (1, "openai", "GPT-4o-2024-08-06", DAY, 1),  # case-insensitive, matches inside the name
        (1, "openai", "gpt-4o-mini", DAY, 2),  # the longer pattern is more specific
        (1, "azure.ai.openai", "gpt-4o", DAY, 3),  # a provider's own rule wins
        (7, "azure.ai.openai", "gpt-4o", DAY, 4),  # a project's own rule wins over all
        (1, "openai", "gpt-4o", date(2025, 7, 2), 5),  # the newest rule in force
        (1, "anthropic", "claude-3-5-sonnet-20241022", DAY, 6),
        (1, "anthropic", "my-claude-3-5-sonnet", DAY, None),  # anchored pattern
        (1, "openai", "o3", DAY, None),  # unknown model: no rule, no cost
    ],
)
def test_the_most_specific_rule_in_force_wins(
    project_id: int, provider: str, model: str, day: date, rule_id: int | None
) -> None:
    found = Pricing(RULES).find(project_id, provider, model, day)
    assert (found.id if found else None) == rule_id


@pytest.mark.parametrize(
    ("usage", "expected_usd"),
    [
        ({"input_tokens": 1_000_000, "output_tokens": 1_000_000}, 2.5 + 10.0),
        ({"input_tokens": 1_000_000, "cached_input_tokens": 400_000}, 0.6 * 2.5 + 0.4 * 1.25),
        ({"input_tokens": 1_000, "cache_write_tokens": 1_000}, 1_000 * 3.125 / 1e6),
        ({"output_tokens": 1_000_000, "reasoning_tokens": 250_000}, 0.75 * 10.0 + 0.25 * 20.0),
        ({"output_tokens": 100, "reasoning_tokens": 500}, 100 * 10.0 / 1e6),  # more reasoning than output: ignored
        ({}, None),  # no tokens: no cost
    ],
)
def test_cost_by_usage_type(usage: dict[str, Any], expected_usd: float | None) -> None:
    rule = PriceRule(
        "gpt-4o", 2.5, 10.0, cached_input_per_mtok=1.25, cache_write_per_mtok=3.125, reasoning_per_mtok=20.0
    )
    cost = rule.cost(Normalized(**usage))
    assert cost == (None if expected_usd is None else pytest.approx(expected_usd))


def test_an_invalid_pattern_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not a valid regular expression"):
        PriceRule("gpt-(4o", 1.0, 1.0)
