"""Usage accounting and prices."""

from __future__ import annotations

import pytest

from agentmesh.llm import DEFAULT_PRICES, ModelPrice, PriceTable, Usage, estimate_cost


def test_usage_adds_up() -> None:
    a = Usage(10, 5, 15, cost_usd=0.5)
    b = Usage(1, 2, 3, cost_usd=0.25, estimated=True)
    assert a + b == Usage(11, 7, 18, cost_usd=0.75, estimated=True)
    assert sum([a, b, Usage()]) == Usage(11, 7, 18, cost_usd=0.75, estimated=True)
    assert sum([], Usage()) == Usage()


def test_unknown_costs() -> None:
    assert (Usage(1, 1, 2) + Usage(1, 1, 2)).cost_usd is None
    # A call without a price contributes nothing to a known total.
    assert (Usage(1, 1, 2, cost_usd=0.1) + Usage(1, 1, 2)).cost_usd == 0.1


def test_estimate_is_about_four_characters_per_token() -> None:
    assert Usage.estimate("abcdefghi", "") == Usage(3, 0, 3, estimated=True)


def test_price_table_prefers_the_longest_prefix() -> None:
    table = PriceTable()
    assert table.lookup("gpt-4o-mini-2024-07-18") == DEFAULT_PRICES["gpt-4o-mini"]
    assert table.lookup("gpt-4o-2024-08-06") == DEFAULT_PRICES["gpt-4o"]
    assert table.lookup("openai/gpt-4.1-mini") == DEFAULT_PRICES["gpt-4.1-mini"]
    assert table.lookup("Claude-3-5-Haiku-20241022") == DEFAULT_PRICES["claude-3-5-haiku"]
    assert table.lookup("llama3.1:8b") is None


def test_price_table_overrides() -> None:
    cheap = ModelPrice(input_per_mtok=0.0, output_per_mtok=0.0)
    table = PriceTable({"gpt-4o": cheap, "llama3": ModelPrice(input_per_mtok=1, output_per_mtok=3)})
    assert table.lookup("gpt-4o-2024-08-06") == cheap
    assert table.lookup("gpt-4o-mini") == DEFAULT_PRICES["gpt-4o-mini"]
    assert estimate_cost("llama3.1:8b", 1_000_000, 500_000, prices=table) == pytest.approx(2.5)
    assert estimate_cost("unknown", 1, 1) is None
