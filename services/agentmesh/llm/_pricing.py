"""Per-million-token prices and cost estimation.

The built-in table covers a few well-known hosted models, with list prices in
USD per million tokens as published by their vendors in 2025. Prices change:
override them per provider (``input_price_per_mtok``/``output_price_per_mtok``)
or for a model name (``AGENTMESH_LLM_PRICES``). Local servers (vLLM, Ollama,
llama.cpp) have no price unless you configure one, so their cost is ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class ModelPrice(BaseModel):
    """USD per million input (prompt) and output (completion) tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_mtok: float = Field(ge=0.0)
    output_per_mtok: float = Field(ge=0.0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1_000_000


def _p(input_per_mtok: float, output_per_mtok: float) -> ModelPrice:
    return ModelPrice(input_per_mtok=input_per_mtok, output_per_mtok=output_per_mtok)


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "gpt-4o": _p(2.50, 10.00),
    "gpt-4o-mini": _p(0.15, 0.60),
    "gpt-4.1": _p(2.00, 8.00),
    "gpt-4.1-mini": _p(0.40, 1.60),
    "gpt-4.1-nano": _p(0.10, 0.40),
    "claude-3-haiku": _p(0.25, 1.25),
    "claude-3-5-haiku": _p(0.80, 4.00),
    "claude-3-5-sonnet": _p(3.00, 15.00),
    "claude-3-7-sonnet": _p(3.00, 15.00),
    "claude-sonnet-4": _p(3.00, 15.00),
    "claude-opus-4": _p(15.00, 75.00),
}


class PriceTable:
    """Looks a model name up by exact match, then by the longest known prefix.

    Prefix matching lets dated snapshots ("gpt-4o-mini-2024-07-18",
    "claude-3-5-haiku-20241022") find their family's price; the longest prefix
    wins, so "gpt-4o-mini-..." is not priced as "gpt-4o". Names are compared
    case-insensitively; a "vendor/" prefix as used by OpenRouter is ignored.
    """

    def __init__(
        self,
        overrides: Mapping[str, ModelPrice] | None = None,
        *,
        defaults: Mapping[str, ModelPrice] = DEFAULT_PRICES,
    ) -> None:
        merged = {k.lower(): v for k, v in defaults.items()}
        merged.update({k.lower(): v for k, v in (overrides or {}).items()})
        self._prices = merged

    def lookup(self, model: str) -> ModelPrice | None:
        name = model.lower()
        for candidate in (name, name.rpartition("/")[2]):
            if candidate in self._prices:
                return self._prices[candidate]
            matches = [k for k in self._prices if candidate.startswith(k)]
            if matches:
                return self._prices[max(matches, key=len)]
        return None


def estimate_cost(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    prices: PriceTable | None = None,
) -> float | None:
    """The USD cost of a call, or ``None`` when the model has no known price."""
    price = (prices or PriceTable()).lookup(model)
    return None if price is None else price.cost(prompt_tokens, completion_tokens)
